"""Personal fields on real Kafka and PostgreSQL: encrypted everywhere, then erased.

A refund saga whose request carries the customer's e-mail (``customer_email`` is
marked ``Personal``; the notification step's result repeats it) runs start to
finish through a real orchestrator, worker and relay (separate processes).
Then: the e-mail is in no record of any topic (read uncommitted, so aborted
writes count too) and in no row of any table; the client reads it back with the
saga's data key; ``sagaline erase`` destroys the key; ``sagaline audit`` still
verifies the hash chain; ``sagaline replay --strict`` still re-decides every
input and names the erased fields; the data reads ``⟨erased⟩``.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import sql

from sagaline import ERASED
from sagaline.consumers.migrations import migrate
from sagaline.orchestrator.cli.main import main
from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.runtime import data_keys
from sagaline.orchestrator.runtime.kafka_config import admin_config, reader_config
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.sagas.refund import RefundAgent, RefundRequest
from sagaline.sagas.tables import APP_SCHEMA_ENV, Tables, ensure_tables
from sagaline.schemas.payload import from_payload
from sagaline.schemas.personal import CIPHER_PREFIX, saga_keys
from sagaline.schemas.state import SagaState

pytestmark = pytest.mark.integration

SAGALINE = [
    sys.executable,
    "-c",
    "import sys; from sagaline.orchestrator.cli import main; sys.exit(main())",
]


@pytest.fixture
def app_schema(database_url: str, pg_schema: str) -> Iterator[str]:
    name = f"{pg_schema}_app"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def prefix(kafka_admin: AdminClient, topic_prefix: str) -> Iterator[str]:
    yield topic_prefix
    topics = [t for t in kafka_admin.list_topics(timeout=10).topics if t.startswith(topic_prefix)]
    if topics:
        for future in kafka_admin.delete_topics(topics, operation_timeout=30).values():
            try:
                future.result(30)
            except Exception:  # cleanup is best effort
                continue


def _raw_records(bootstrap: str, topic: str) -> list[bytes]:
    """Every record's key, value and headers, aborted transactions included."""
    extra = {"isolation.level": "read_uncommitted"}
    reader = Consumer(reader_config(bootstrap, f"grep-{uuid.uuid4().hex[:8]}", extra=extra))
    out: list[bytes] = []
    try:
        parts = sorted(reader.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {}
        for p in parts:
            low, high = reader.get_watermark_offsets(TopicPartition(topic, p), 10, cached=False)
            if high > low:
                ends[p] = high
        reader.assign([TopicPartition(topic, p, 0) for p in ends])
        deadline = time.monotonic() + 30
        while ends and time.monotonic() < deadline:
            msg = reader.poll(0.5)
            if msg is None:
                continue
            if (err := msg.error()) is not None:
                # a transactional partition ends with a commit marker that no poll returns:
                # its end-of-partition event says it was read to the end
                if err.code() == KafkaError._PARTITION_EOF and (msg.offset() or 0) >= ends.get(
                    msg.partition() or 0, 0
                ):
                    ends.pop(msg.partition() or 0, None)
                continue
            out.append(b"".join([msg.key() or b"", msg.value() or b""]))
            out.extend(v for _, v in (msg.headers() or []) if isinstance(v, bytes))
            if (msg.offset() or 0) + 1 >= ends.get(msg.partition() or 0, 0):
                ends.pop(msg.partition() or 0, None)
        assert not ends, f"{topic}: partitions {sorted(ends)} not read to the end"
    finally:
        reader.close()
    return out


def _table_texts(database_url: str, schemas: list[str]) -> dict[str, str]:
    texts: dict[str, str] = {}
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema = ANY(%s)",
            (schemas,),
        ).fetchall()
        for schema, table in rows:
            query = sql.SQL("SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM {} t").format(
                sql.Identifier(schema, table)
            )
            texts[f"{schema}.{table}"] = conn.execute(query).fetchone()[0]  # type: ignore[index]
    return texts


def _wait_for(client: SagaClient, saga_id: str, ready: object, timeout: float = 60.0) -> SagaState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.status(saga_id)
        if state is not None and ready(state):  # type: ignore[operator]
            return state
        time.sleep(0.2)
    raise AssertionError(f"saga {saga_id} did not get there: {client.status(saga_id)}")


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_personal_fields_are_encrypted_everywhere_and_erasable(
    kafka_bootstrap: str,
    database_url: str,
    pg_schema: str,
    app_schema: str,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    email = f"jane.doe+{uuid.uuid4().hex[:10]}@personal.example"
    kek_file = tmp_path / "kek.json"
    monkeypatch.setenv(data_keys.KEK_FILE_ENV, str(kek_file))
    monkeypatch.setenv(APP_SCHEMA_ENV, app_schema)
    settings = Settings.from_env(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)
    names = settings.topics
    ensure_topics(kafka_bootstrap, names, TopicLayout(partitions=2))
    migrate(database_url, pg_schema)
    tables = Tables(app_schema)
    with psycopg.connect(database_url) as conn:
        ensure_tables(conn, app_schema)
        with conn.transaction():
            conn.execute(
                f"INSERT INTO {tables.customers} (customer_id, name, email) VALUES (1, 'C', 'c@x')"
            )
            conn.execute(
                f"INSERT INTO {tables.orders} (order_id, customer_id, amount_cents, ordered_on,"
                " payment_id) VALUES ('o-1', 1, 20000, '2026-03-15', 'pay-1')"
            )

    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABASE_URL": database_url,
        APP_SCHEMA_ENV: app_schema,
        data_keys.KEK_FILE_ENV: str(kek_file),
    }
    common = ["--prefix", prefix]
    argv = [
        ["orchestrator", "run", "--app", "sagaline.sagas:REGISTRY", "--instance-id",
         f"{prefix}-o", "--group", f"{prefix}-orchestrator", "--session-timeout-ms", "6000"],
        ["worker", "run", "--app", "sagaline.sagas:REGISTRY", "--group", f"{prefix}-workers",
         "--schema", pg_schema],
        ["relay", "run", "--poll-interval", "0.3", "--schema", pg_schema],
    ]  # fmt: skip
    logs = [open(tmp_path / f"proc-{i}.log", "wb") for i in range(len(argv))]  # noqa: SIM115
    procs = [
        subprocess.Popen([*SAGALINE, *a, *common], env=env, stdout=log, stderr=subprocess.STDOUT)
        for a, log in zip(argv, logs, strict=True)
    ]
    saga_id = f"refund-personal-{uuid.uuid4().hex[:8]}"
    try:
        with SagaClient(settings) as client:
            request = RefundRequest(
                customer_id=1, order_id="o-1", amount_cents=15_000, customer_email=email
            )
            client.start(RefundAgent, request, saga_id=saga_id)
            waiting = _wait_for(client, saga_id, lambda s: bool(s.waits), timeout=90)
            seen = waiting.waits[0].shown_sha256  # the refund approval is bound to its view
            client.approve(
                saga_id, RefundAgent.manager_approval, by="manager@example.com", seen_sha256=seen
            )
            final = _wait_for(client, saga_id, lambda s: s.is_terminal, timeout=90)
            assert final.status == "completed", final
            with saga_keys(data_keys.saga_scope(saga_id)):
                assert from_payload(final.data, RefundRequest).customer_email == email
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
        for log in logs:
            log.close()

    # the plaintext is nowhere: not on any topic, not in any table (text or hex of bytea)
    assert kek_file.stat().st_mode & 0o077 == 0
    topics = _topics(kafka_bootstrap, prefix)
    assert {names.journal, names.state, names.commands, names.tasks, names.replies} <= set(topics)
    sealed: set[str] = set()
    for topic in topics:
        records = _raw_records(kafka_bootstrap, topic)
        assert not any(email.encode() in r for r in records), f"plaintext in {topic}"
        if any(CIPHER_PREFIX.encode() in r for r in records):
            sealed.add(topic)
    # the e-mail is there, encrypted: in the start command, the journal, the snapshots, ...
    assert {names.commands, names.journal, names.state, names.replies} <= sealed, sealed
    texts = _table_texts(database_url, [pg_schema, app_schema])
    assert any(t.endswith(".outbox") for t in texts)
    for table, text in texts.items():
        assert email not in text and email.encode().hex() not in text, f"plaintext in {table}"
    outbox = next(text for table, text in texts.items() if table.endswith(".outbox"))
    assert CIPHER_PREFIX in outbox or CIPHER_PREFIX.encode().hex() in outbox
    for log_path in tmp_path.glob("proc-*.log"):
        assert email not in log_path.read_text(errors="replace"), log_path.name

    kafka = ["--bootstrap", kafka_bootstrap, "--prefix", prefix]
    code, out, _ = _cli(["erase", saga_id, *kafka], capsys)
    assert code == 0 and "erased the data key" in out
    code, _, err = _cli(["erase", saga_id, *kafka], capsys)
    assert code != 0 and err.count("\n") == 1 and "no data key" in err

    code, out, _ = _cli(["audit", *kafka, "--saga-id", saga_id, "--no-inbox", "--json"], capsys)
    assert code == 0, out
    assert json.loads(out)["ok"] is True

    code, out, _ = _cli(["replay", *kafka, "--saga-id", saga_id, "--strict", "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["checked_inputs"] > 0, out
    assert report["erased"] == {saga_id: ["Notification.sent_to", "RefundRequest.customer_email"]}
    code, out, _ = _cli(["replay", *kafka, "--saga-id", saga_id], capsys)
    assert f"saga {saga_id} is erased; unreadable fields: Notification.sent_to" in out

    with SagaClient(settings) as client:
        state = client.status(saga_id)
    assert state is not None
    store = data_keys.DataKeyStore(kafka_bootstrap, data_keys.keys_topic(names))
    try:
        with saga_keys(store.scope(saga_id)):
            assert from_payload(state.data, RefundRequest).customer_email == ERASED
    finally:
        store.close()


def _topics(bootstrap: str, prefix: str) -> list[str]:
    admin = AdminClient(admin_config(bootstrap))
    return [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix + ".")]


def test_kek_rotation_rewraps_every_data_key_and_retires_the_old_kek(
    kafka_bootstrap: str,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kek_file = tmp_path / "kek.json"
    monkeypatch.delenv(data_keys.KEK_ENV, raising=False)
    monkeypatch.setenv(data_keys.KEK_FILE_ENV, str(kek_file))
    settings = Settings.from_env(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)
    ensure_topics(kafka_bootstrap, settings.topics, TopicLayout(partitions=2))
    topic = data_keys.keys_topic(settings.topics)
    store = data_keys.DataKeyStore(kafka_bootstrap, topic)
    try:
        before = {sid: store.create(sid) for sid in ("a-1", "a-2", "a-3")}
        first = data_keys.load_keyring().current
    finally:
        store.close()

    kafka = ["--bootstrap", kafka_bootstrap, "--prefix", prefix]
    code, out, _ = _cli(["kek", "rotate", *kafka], capsys)
    ring = data_keys.load_keyring()
    assert code == 0 and "re-wrapped 3 data key(s)" in out and ring.current != first
    assert set(ring.keys) == {first, ring.current}
    code, out, _ = _cli(["kek", "list", "--json"], capsys)
    listed = json.loads(out)
    assert listed["current"] == ring.current and set(listed["keks"]) == set(ring.keys)
    assert all(base64_of(k) not in out for k in ring.keys.values())  # ids only, never keys

    code, out, _ = _cli(["kek", "rotate", "--retire", *kafka], capsys)
    retired = data_keys.load_keyring()
    assert code == 0 and "re-wrapped 3 data key(s)" in out and first in out
    assert list(retired.keys) == [retired.current]
    fresh = data_keys.DataKeyStore(kafka_bootstrap, topic, keyring=retired)
    try:
        assert {sid: fresh.key(sid) for sid in before} == before  # same data keys
        assert fresh.erase("a-2") and fresh.key("a-2") is None
    finally:
        fresh.close()


def base64_of(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
