"""A worker whose --concurrency asks for more PostgreSQL connections than the server
takes says so once at start (steps on the outbox path hold a connection each)."""

from __future__ import annotations

import logging

import psycopg
import pytest

from sagaline.consumers.db import connections_allowed
from sagaline.consumers.worker import _open_pool
from sagaline.consumers.worker_options import WorkerOptions

pytestmark = pytest.mark.integration


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sagaline.worker"]


def test_a_pool_larger_than_the_server_allows_is_one_warning(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sagaline.worker")
    pool = _open_pool(database_url, WorkerOptions(concurrency=400, migrate=False))
    assert pool is not None
    pool.close()
    (line,) = _warnings(caplog)
    assert "--concurrency 400" in line and "up to 401 PostgreSQL connections" in line
    with psycopg.connect(database_url) as conn:
        allowed = connections_allowed(conn)  # max_connections less the superusers' share
    assert 0 < allowed < 401 and f"takes {allowed} in all" in line


def test_a_pool_that_fits_says_nothing(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sagaline.worker")
    pool = _open_pool(database_url, WorkerOptions(concurrency=8, migrate=False))
    assert pool is not None
    pool.close()
    assert _warnings(caplog) == []
