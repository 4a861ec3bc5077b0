"""The benchmark command runs and reports every figure (no timing is asserted)."""

from __future__ import annotations

import pytest

from sagaline.orchestrator.bench.codec import run, sample_messages
from sagaline.schemas.codec import decode, encode
from sagaline.schemas.state import SagaState

pytestmark = pytest.mark.unit


def test_benchmark_messages_are_realistic_and_round_trip() -> None:
    messages = sample_messages()
    state = messages["state_20_steps"]
    assert isinstance(state, SagaState) and len(state.steps) == 20
    reply_result = messages["reply_1kb"].result  # type: ignore[attr-defined]
    assert len(reply_result.data) == 1024
    for record in messages.values():
        assert decode(encode(record)) == record


def test_benchmark_reports_every_figure() -> None:
    report = run(0.03)
    assert set(report["results"]) == {"reply_1kb", "state_20_steps", "journal_entry"}
    for figures in report["results"].values():
        assert figures["avro_bytes"] > 0
        for key in ("encode", "decode", "json_encode", "json_decode"):
            assert figures[key]["msgs_per_s"] > 0
            assert figures[key]["us_per_msg"] > 0
