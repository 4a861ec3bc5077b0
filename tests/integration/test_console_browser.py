"""The web console in a real browser (headless Chromium, Playwright) on real Kafka and PostgreSQL.

A real orchestrator, worker, relay, projection and ``sagaline ui`` run as
separate processes.  An approver logs in, sees a refund appear in the inbox
without reload, approves it from the saga page and watches it complete there
without reload; a viewer sees no approve button and is refused when posting
anyway; a form posted without the CSRF token is refused (403).

Set ``SAGALINE_CONSOLE_SCREENSHOTS=docs`` to write the screenshots to
``docs/console-inbox.png`` and ``docs/console-saga.png`` (else to the test's
temporary folder).  The time from the approval click to the next step on the
saga page is printed (``pytest -s``), never asserted.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from psycopg import sql

from sagaline.consumers.migrations import migrate
from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.console.users import add_user
from sagaline.orchestrator.demo.plan import PlannedSaga, plan, seed
from sagaline.orchestrator.demo.procs import Cluster, ProcessSpec, sagaline_command
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.sagas.refund import RefundAgent
from sagaline.sagas.tables import APP_SCHEMA_ENV, Tables, ensure_tables

pytestmark = pytest.mark.integration

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS = Path(__file__).resolve().parents[2] / "docs"
PASSWORDS = {"ada": "ada-approves-1", "victor": "victor-views-1"}


@dataclass
class Stack:
    url: str
    settings: Settings
    refunds: list[PlannedSaga]
    cluster: Cluster

    def start(self, planned: PlannedSaga) -> str:
        """Start one refund (the reference saga, with its 7-day manager approval)."""
        with SagaClient(self.settings, client_id="console-test") as client:
            client.start(
                RefundAgent, planned.data, saga_id=planned.saga_id, requested_by="support-bot"
            )
        return planned.saga_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, cluster: Cluster, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster.check_alive()
        try:
            with urllib.request.urlopen(url + "login", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the console did not answer at {url} within {timeout:.0f} s")


def _specs(prefix: str, schema: str, users: Path, port: int) -> list[ProcessSpec]:
    common = ["--prefix", prefix, "--schema", schema]
    app = ["--app", "sagaline.sagas:REGISTRY"]
    orch = [*app, "--instance-id", f"{prefix}-o1", "--group", f"{prefix}-orch", "--prefix", prefix]
    return [
        ProcessSpec("orchestrator", sagaline_command("orchestrator", "run", *orch)),
        ProcessSpec(
            "worker",
            sagaline_command("worker", "run", *app, "--group", f"{prefix}-workers", *common),
        ),
        ProcessSpec("relay", sagaline_command("relay", "run", "--poll-interval", "0.5", *common)),
        ProcessSpec(
            "projection",
            sagaline_command(
                "projection", "run", "--name", f"{prefix}-p", "--prefix", prefix,
                "--db-schema", schema,
            ),
        ),
        ProcessSpec(
            "console",
            sagaline_command(
                "ui", "--port", str(port), "--users", str(users), *app, "--prefix", prefix,
                "--db-schema", schema, "--state-dir", str(users.parent / "state"),
            ),
        ),
    ]  # fmt: skip


@pytest.fixture
def stack(
    kafka_bootstrap: str,
    database_url: str,
    topic_prefix: str,
    pg_schema: str,
    kafka_admin: AdminClient,
    tmp_path: Path,
) -> Iterator[Stack]:
    names = TopicNames(topic_prefix)
    settings = Settings(kafka_bootstrap, database_url, names)
    ensure_topics(kafka_bootstrap, names, TopicLayout(partitions=2), create=True)
    migrate(database_url, pg_schema)
    app_schema = f"{pg_schema}_app"
    demo = plan(uuid.uuid4().hex[:6], refunds=2, research=0, enrichments=0)
    with psycopg.connect(database_url) as conn:
        ensure_tables(conn, app_schema)
        seed(conn, Tables(app_schema), demo)
    users = tmp_path / "users.toml"
    add_user(users, "ada", PASSWORDS["ada"], "approver", ["refund"])
    add_user(users, "victor", PASSWORDS["victor"], "viewer", [])
    port = _free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABASE_URL": database_url,
        "SAGALINE_TOPIC_PREFIX": topic_prefix,
        APP_SCHEMA_ENV: app_schema,
    }
    cluster = Cluster(env=env, log_dir=tmp_path / "logs")
    try:
        for spec in _specs(topic_prefix, pg_schema, users, port):
            cluster.start(spec)
        url = f"http://127.0.0.1:{port}/"
        _wait_http(url, cluster)
        yield Stack(url, settings, demo.of_kind("refund"), cluster)
        cluster.check_alive()
    finally:
        cluster.stop_all(grace=10)
        _cleanup(kafka_admin, topic_prefix, database_url, app_schema)


def _cleanup(admin: AdminClient, prefix: str, database_url: str, schema: str) -> None:
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix + ".")]
    if topics:
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            try:
                future.result(30)
            except Exception:  # cleanup is best effort
                continue
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# -- the browser ------------------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[sync_api.Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            "chromium is not installed: run `sagaline dev install` (or apt-get install chromium)"
        )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _login(browser: sync_api.Browser, url: str, name: str) -> sync_api.Page:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(20_000)
    page.goto(url + "inbox")
    assert page.url.endswith("/login")  # not logged in: sent to the login page
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORDS[name])
    page.click("button[type=submit]")
    page.wait_for_url(url + "inbox")
    page.wait_for_function("document.body.dataset.live === 'on'")  # the event stream is open
    return page


def _screenshot_path(tmp_path: Path, name: str) -> Path:
    if os.environ.get("SAGALINE_CONSOLE_SCREENSHOTS") == "docs":
        return DOCS / name
    return tmp_path / name


def test_approve_in_the_browser_and_watch_it_complete(
    stack: Stack, browser: sync_api.Browser, tmp_path: Path
) -> None:
    page = _login(browser, stack.url, "ada")
    page.evaluate("window.__notReloaded = true")
    first, second = stack.refunds
    stack.start(first)
    stack.start(second)
    # the inbox shows both approvals without a reload, oldest first
    item = page.locator(f"section.approval[data-saga='{first.saga_id}']")
    item.wait_for()
    page.locator(f"section.approval[data-saga='{second.saga_id}']").wait_for()
    assert page.evaluate("window.__notReloaded") is True
    text = item.inner_text()
    assert "manager_approval" in text and "support-bot" in text and first.data.order_id in text
    assert "refund v2" in text
    page.screenshot(path=str(_screenshot_path(tmp_path, "console-inbox.png")), full_page=True)

    # the saga's own page, open in a second tab, follows the approval made in the inbox
    saga_page = page.context.new_page()
    saga_page.goto(stack.url + f"sagas/{first.saga_id}")
    saga_page.locator("#saga-status", has_text="waiting").wait_for()
    saga_page.wait_for_function("document.body.dataset.live === 'on'")
    saga_page.evaluate("window.__notReloaded = true")
    assert "style manager_approval" in saga_page.locator("#diagram").inner_text()
    item.locator("input[name=note]").fill("within policy")
    clicked = time.monotonic()
    item.locator("button.approve").click()
    saga_page.locator("#steps tr[data-step=reverse_payment]").wait_for()
    next_step_s = time.monotonic() - clicked
    saga_page.locator("#saga-status", has_text="completed").wait_for()
    completed_s = time.monotonic() - clicked
    assert saga_page.evaluate("window.__notReloaded") is True  # updated live, not reloaded
    # the inbox says what the orchestrator did (after its verdict, up to 30 s)
    try:
        page.locator(".flash", has_text="approved by ada: done").wait_for(timeout=60_000)
    except sync_api.TimeoutError:
        shown = page.locator(".flash").all_inner_texts()
        message = f"no 'approved by ada: done' on {page.url}; flashes: {shown}"
        raise AssertionError(message) from None
    approvals = saga_page.locator("table.list", has_text="within policy").inner_text()
    assert "ada" in approvals and "approved" in approvals  # the journal records the user
    assert "style __end" in saga_page.locator("#diagram").inner_text()
    saga_page.screenshot(path=str(_screenshot_path(tmp_path, "console-saga.png")), full_page=True)
    print(
        f"\nconsole: approval click (inbox tab) -> next step (reverse_payment) on the saga page "
        f"(other tab, live): {next_step_s * 1000:.0f} ms; -> completed: {completed_s * 1000:.0f} ms"
    )

    # a decision on an approval already decided says so (a stale form, posted again)
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    assert token
    again = page.request.post(
        stack.url + f"sagas/{first.saga_id}/decide",
        form={"csrf": token, "wait": "manager_approval", "decision": "reject", "next": "/inbox"},
    )
    assert again.ok
    assert "manager_approval of " in again.text() and "not applied" in again.text()

    # the list shows the completed saga and the one still waiting, with counts
    page.goto(stack.url + "sagas?type=refund")
    page.locator(f"tr[data-saga='{first.saga_id}'] .status", has_text="completed").wait_for()
    assert "waiting 1" in page.locator(".counts").inner_text()


def test_viewer_cannot_approve_and_forged_posts_are_refused(
    stack: Stack, browser: sync_api.Browser
) -> None:
    first, _ = stack.refunds
    saga_id = stack.start(first)
    viewer = _login(browser, stack.url, "victor")
    item = viewer.locator(f"section.approval[data-saga='{saga_id}']")
    item.wait_for()
    assert item.locator("button.approve").count() == 0
    assert "may not decide approvals of refund" in item.inner_text()
    viewer.goto(stack.url + f"sagas?q={saga_id}&status=waiting&age=15m")
    viewer.locator(f"tr[data-saga='{saga_id}']").wait_for()
    assert viewer.locator(".counts").inner_text().split() == ["waiting", "1"]
    viewer.goto(stack.url + f"sagas/{saga_id}")
    assert viewer.locator("button.approve").count() == 0
    assert viewer.locator("section.operate").count() == 0  # no operator actions either

    form = {"wait": "manager_approval", "decision": "approve", "note": "forged"}
    token = viewer.locator("input[name=csrf]").first.get_attribute("value")
    assert token
    refused = viewer.request.post(
        stack.url + f"sagas/{saga_id}/decide", form={**form, "csrf": token}
    )
    assert refused.status == 403  # a viewer, even with a valid token

    approver = _login(browser, stack.url, "ada")
    forged = approver.request.post(stack.url + f"sagas/{saga_id}/decide", form=form)
    assert forged.status == 403  # no CSRF token
    assert "CSRF" in forged.text()
    approver.goto(stack.url + f"sagas/{saga_id}")
    assert approver.locator("#saga-status").inner_text() == "waiting"
