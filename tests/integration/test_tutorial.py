"""docs/tutorial.md runs as written: its bash and python blocks, in order, in one shell.

The blocks run against the session's real Kafka and a fresh PostgreSQL
database, with a topic prefix of their own.  A python block whose first
line is ``# file: <name>`` is saved under that name (the tutorial says
"save this as ..."); other python blocks run with ``python -``.  The one
block marked ``tutorial-test: skip`` (install and ``sagaline dev up``) is
replaced by the test session's own servers.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from sagaline.orchestrator.runtime.signing_inputs import signed_identity
from sagaline.orchestrator.runtime.signing_runtime import signing_config

pytestmark = pytest.mark.integration

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
_BLOCK = re.compile(
    r"(?P<skip><!-- tutorial-test: skip[^>]*-->\n)?```(?P<lang>\w+)\n(?P<body>.*?)```", re.S
)
_FILE = re.compile(r"^# file: (?P<name>[\w.]+)\n")


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    skip: bool


def tutorial_blocks(text: str) -> list[Block]:
    return [
        Block(m.group("lang"), m.group("body"), m.group("skip") is not None)
        for m in _BLOCK.finditer(text)
    ]


def build_script(blocks: list[Block], workdir: Path) -> str:
    """One bash script running the blocks in order; ``# file:`` blocks are written to files."""
    lines = ["set -euo pipefail"]
    for i, block in enumerate(blocks):
        if block.skip:
            continue
        if block.lang == "bash":
            lines.append(block.body)
        elif block.lang == "python":
            named = _FILE.match(block.body)
            if named:
                (workdir / named.group("name")).write_text(block.body)
            else:
                path = workdir / f"_tutorial_block_{i}.py"
                path.write_text(block.body)
                lines.append(f'python "{path}"')
        else:
            raise AssertionError(f"unexpected block language {block.lang!r} in the tutorial")
    return "\n".join(lines) + "\n"


def test_only_the_setup_block_is_skipped() -> None:
    blocks = tutorial_blocks(TUTORIAL.read_text())
    skipped = [b for b in blocks if b.skip]
    assert len(skipped) == 1
    assert "sagaline dev up" in skipped[0].body
    assert {b.lang for b in blocks} == {"bash", "python"}
    assert sum(1 for b in blocks if not b.skip) >= 10


def test_tutorial_runs_as_written(
    kafka_bootstrap: str,
    fresh_database_url: str,
    topic_prefix: str,
    kafka_admin: AdminClient,
    tmp_path: Path,
) -> None:
    blocks = tutorial_blocks(TUTORIAL.read_text())
    script = build_script(blocks, tmp_path)
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABASE_URL": fresh_database_url,
        "SAGALINE_TOPIC_PREFIX": f"{topic_prefix}-tutorial",
        "SAGALINE_DEV_ENV": str(tmp_path / "no-dev.env"),
    }
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the tutorial did not finish in 420 s:\n{output}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        _delete_topics(kafka_admin, f"{topic_prefix}-tutorial.")
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in tmp_path.glob("*.log")
    )
    assert proc.returncode == 0, f"tutorial failed (exit {proc.returncode}):\n{output}\n{logs}"

    assert "a rejection takes the credit back: ok" in output
    assert "no answer in two days takes the credit back too: ok" in output
    assert "tables ready" in output
    assert "console is up at http://127.0.0.1:8765/" in output
    assert "welcome-ada  [welcome v1]  waiting" in output
    assert "waiting for: manager (approval; deadline " in output
    assert any(line.split() == ["grant_credit", "compensated"] for line in output.splitlines())
    assert re.search(r"welcome-bob\s+welcome v1\s+compensated", output), output
    assert "welcome-bob did not complete (exit code 1)" in output
    assert "credits: [('ada', 500)]" in output
    assert "audit passed: every invariant holds" in output
    # with signing on, the verified signer (the CLI signs as admin) heads the claimed name
    grace = _recorded("admin", "grace@example.com")
    assert f"approved by {grace}" in output
    assert f"rejected by {grace}" in output

    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        gifts = conn.execute("SELECT customer, idempotency_key FROM welcome_gifts").fetchall()
        inbox = conn.execute("SELECT count(*) FROM sagaline.inbox").fetchone()
    assert gifts == [("ada", "welcome-ada/send_gift/1")]
    assert inbox is not None and inbox[0] >= 4  # two credits, one gift, one compensation


def _recorded(signer: str, claimed: str) -> str:
    return signed_identity(signer, claimed) if signing_config().enabled else claimed


def _delete_topics(admin: AdminClient, prefix: str) -> None:
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if not topics:
        return
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        try:
            future.result(30)
        except Exception:  # cleanup is best effort
            continue
