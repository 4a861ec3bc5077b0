"""bench recovery: what a saga's recovery cost, from its first progress after the restart."""

from __future__ import annotations

from sagaline.orchestrator.bench.recovery import SCENARIOS, _delay

WORKER = SCENARIOS["worker"]  # step 3 sleeps 2 s


def test_a_step_run_again_after_the_restart_is_work_not_recovery() -> None:
    replies = {"s": [1.0, 2.0]}  # its next reply is step 3's, which sleeps 2 s
    assert _delay(2.75, WORKER, replies, "s") == 0.75


def test_progress_sooner_than_the_work_ran_nothing_again_and_counts_in_full() -> None:
    replies = {"s": [1.0, 2.0]}  # step 3 done by the killed worker, its reply seen late
    assert _delay(0.4, WORKER, replies, "s") == 0.4
    assert _delay(-0.01, WORKER, replies, "s") == 0.0  # seen between the kill and restart


def test_a_saga_whose_next_reply_has_no_sleep_counts_in_full() -> None:
    assert _delay(0.3, WORKER, {"s": [1.0]}, "s") == 0.3
