"""``--since`` (``sagaline audit | replay | deadletters list``): a time or an age, one clear
line for anything else."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from sagaline.orchestrator.cli.command import parse_since, positive_int

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_times_and_ages() -> None:
    assert parse_since("2h", now=NOW) == NOW - timedelta(hours=2)
    assert parse_since(" 30m ", now=NOW) == NOW - timedelta(minutes=30)
    assert parse_since("7d", now=NOW) == NOW - timedelta(days=7)
    assert parse_since("2026-03-15T09:00:00Z") == datetime(2026, 3, 15, 9, tzinfo=UTC)
    assert parse_since("2026-03-15T09:00:00") == datetime(2026, 3, 15, 9, tzinfo=UTC)  # UTC
    offset = parse_since("2026-03-15T10:00:00+01:00")
    assert offset == datetime(2026, 3, 15, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("last tuesday", "--since wants an ISO 8601 time"),
        ("99999999d", "reaches before year 1"),  # a date before year 1
        ("9999999999d", "reaches before year 1"),  # more days than a timedelta holds
    ],
)
def test_anything_else_is_one_usage_line(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse_since(text, now=NOW)


def test_positive_int() -> None:
    assert positive_int("3") == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a positive integer"):
            positive_int(bad)
