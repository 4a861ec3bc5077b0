"""The console's pieces without infrastructure: users and roles, redaction, the saga page's
state, actions and diagram, and the web layer (login, sessions, CSRF, roles) over real HTTP.

The web tests run the real ASGI app under uvicorn on a free port (its journal
follower is not started: nothing here needs Kafka, since every refusal
happens before a command would be sent).
"""

from __future__ import annotations

import asyncio
import http.client
import http.cookiejar
import io
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from journal_builders import Refund, run_refund

from sagaline.orchestrator.cli.main import main
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.console import ConsoleOptions, create_app
from sagaline.orchestrator.console.history import (
    actions_for,
    build_history,
    diagram_lines,
    highlighted_diagram,
)
from sagaline.orchestrator.console.redact import REDACTED, redact, redact_url
from sagaline.orchestrator.console.users import add_user, load_users, session_secret
from sagaline.orchestrator.console.web import ago
from sagaline.orchestrator.core.errors import ConfigError
from sagaline.orchestrator.core.registry import SagaRegistry

pytestmark = pytest.mark.unit


# -- users and roles ----------------------------------------------------------------------


def test_users_file_roles_and_passwords(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    assert add_user(path, "ada", "correct horse", "approver", ["refund"]) is True
    assert add_user(path, "olga", "operator pass", "operator", ["ignored"]) is True
    assert add_user(path, "root", "admin password", "admin", []) is True
    assert add_user(path, "ada", "battery staple", "approver", ["refund", "payout"]) is False
    assert path.stat().st_mode & 0o777 == 0o600
    assert "battery staple" not in path.read_text()

    store = load_users(path)
    ada, olga, root = store.users["ada"], store.users["olga"], store.users["root"]
    assert store.authenticate("ada", "battery staple") == ada
    assert store.authenticate("ada", "correct horse") is None  # replaced
    assert store.authenticate("nobody", "battery staple") is None
    assert ada.may_approve("payout") and not ada.may_approve("research")
    assert not ada.may_operate
    assert olga.may_operate and not olga.may_approve("refund") and olga.saga_types == ()
    assert root.may_operate and root.may_approve("anything")
    assert "password_hash" not in repr(ada)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[users.x]\nrole = 'viewer'\n", "no argon2 password_hash"),
        ("[users.x]\nrole = 'boss'\npassword_hash = '$argon2id$x'\n", "has role 'boss'"),
        ("users = 3\n", "no [users.<name>] table"),
        ("[users\n", "is not valid TOML"),
    ],
)
def test_a_bad_users_file_is_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "users.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_users(path)
    with pytest.raises(ConfigError, match="no users file"):
        load_users(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="at least 8"):
        add_user(tmp_path / "new.toml", "x", "short", "viewer", [])


def test_session_secret_from_the_file_or_generated_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    add_user(path, "ada", "correct horse", "viewer", [])
    generated = session_secret(load_users(path), tmp_path / "state")
    assert len(generated) > 40
    assert (tmp_path / "state" / "console-secret").stat().st_mode & 0o777 == 0o600
    assert session_secret(load_users(path), tmp_path / "state") == generated
    path.write_text('[console]\nsecret_key = "from-the-file"\n' + path.read_text())
    assert session_secret(load_users(path), tmp_path / "state") == "from-the-file"


def test_add_user_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "users.toml"
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    args = ["ui", "add-user", "--users", str(path), "grace", "--role", "approver"]
    assert main([*args, "--saga-types", "refund,payout", "--password-stdin"]) == 0
    grace = load_users(path).users["grace"]
    assert grace.saga_types == ("refund", "payout")
    assert main(["ui", "--users", str(tmp_path / "none.toml")]) == 2


@pytest.mark.parametrize("port", ["99999", "0", "http"])
def test_a_bad_ui_port_is_one_usage_line(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Review finding: ``--port 99999`` was an internal error (OverflowError from bind)."""
    with pytest.raises(SystemExit) as exited:
        main(["ui", "--port", port])
    assert exited.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --port:" in last and port in last and "Traceback" not in last


# -- what pages show ---------------------------------------------------------------------------


def test_secrets_are_redacted_at_any_depth() -> None:
    data = {
        "order": 1,
        "api_key": "sk-live-1",
        "nested": [{"Password": "hunter2", "name": "x"}, {"refresh_token": "t"}],
        "tokens_in": 12,
        "clientSecret": None,
    }
    shown = redact(data)
    assert shown["api_key"] == REDACTED and shown["nested"][0]["Password"] == REDACTED
    assert shown["nested"][1]["refresh_token"] == REDACTED
    assert shown["nested"][0]["name"] == "x" and shown["tokens_in"] == 12
    url = redact_url("postgresql://app:s3cret@db.example:5432/main?sslmode=require")
    assert "s3cret" not in url and url.startswith("postgresql://app:")
    assert url.endswith("@db.example:5432/main?sslmode=require")
    assert redact_url("postgresql://db/main") == "postgresql://db/main"
    shown = redact_url("postgresql://db/main?user=app&password=s3cret&sslmode=require")
    assert "s3cret" not in shown and "sslmode=require" in shown and "user=app" in shown


def test_saga_page_state_actions_and_diagram() -> None:
    registry = SagaRegistry([Refund])
    waiting = build_history(run_refund("s-wait", "waiting").entries, registry)
    assert waiting is not None
    assert waiting.state.status == "waiting"
    assert set(waiting.actions) == {"cancel", "pause"}
    assert waiting.diagram is not None and "style manager_ok fill:" in waiting.diagram
    marked = [line for line, mark in diagram_lines(waiting.diagram, "manager_ok") if mark]
    assert marked[0].strip().startswith("manager_ok{{") and marked[-1].strip().startswith("style")
    assert all("manager_ok" in line for line in marked)

    failed = build_history(run_refund("s-fail", "failed_notify").entries, registry)
    assert failed is not None
    assert failed.state.status == "compensated" and failed.actions == {}
    assert [c.step for c in failed.timeline.compensations] == ["reverse_payment", "update_record"]
    assert "style __compensate" in (failed.diagram or "")

    done = build_history(run_refund("s-done", "approved").entries, registry)
    assert done is not None and done.diagram_node == "__end"
    # the state retires finished steps; the page lists every step from the journal
    steps = [(v.name, v.status) for v in done.steps]
    assert steps == [
        ("check_eligibility", "succeeded"),
        ("update_record", "succeeded"),
        ("reverse_payment", "succeeded"),
        ("notify", "succeeded"),
    ]
    assert [a.by for a in done.timeline.approvals] == ["manager@example.com"]
    assert highlighted_diagram(None, done.state) is None
    assert highlighted_diagram(SagaRegistry(), done.state) is None
    paused = done.state.model_copy(update={"status": "paused", "finished_at": None})
    assert set(actions_for(paused)) == {"cancel", "resume"}
    assert build_history([], registry) is None


def test_ages_read_like_a_person_would_say_them() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert ago(now - timedelta(seconds=5), now) == "5s"
    assert ago(now - timedelta(minutes=3, seconds=2), now) == "3m 2s"
    assert ago(now - timedelta(hours=2, minutes=5), now) == "2h 5m"
    assert ago(now + timedelta(days=6, hours=23), now) == "in 6d 23h"
    assert ago(None) == "-"


# -- the web layer over HTTP ------------------------------------------------------------------


class Browser:
    """A cookie-keeping HTTP client (urllib) for one user."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str) -> tuple[int, str, str]:
        try:
            with self.opener.open(self.base + path, timeout=10) as resp:
                return resp.status, resp.url, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.url, exc.read().decode()

    def post(self, path: str, form: dict[str, str]) -> tuple[int, str, str]:
        body = urllib.parse.urlencode(form).encode()
        try:
            with self.opener.open(self.base + path, data=body, timeout=10) as resp:
                return resp.status, resp.url, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.url, exc.read().decode()

    def csrf(self, html: str) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', html)
        assert found, html
        return found.group(1)

    def login(self, name: str, password: str) -> tuple[int, str, str]:
        _, _, page = self.get("/login")
        form = {"name": name, "password": password, "csrf": self.csrf(page)}
        return self.post("/login", form)


@pytest.fixture(scope="module")
def console_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("console")
    users = base / "users.toml"
    add_user(users, "ada", "ada password", "approver", ["refund"])
    add_user(users, "victor", "victor password", "viewer", [])
    add_user(users, "olga", "olga password", "operator", [])
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:9",
        database_url="postgresql://app:pg-secret-pw@127.0.0.1:9/none",
        topics=TopicNames("t-console-unit"),
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    options = ConsoleOptions(settings, load_users(users), state_dir=base / "state", port=port)
    config = uvicorn.Config(
        create_app(options), host="127.0.0.1", port=port, lifespan="off", log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_login_sessions_and_roles(console_url: str) -> None:
    anonymous = Browser(console_url)
    status, url, _ = anonymous.get("/sagas")
    assert status == 200 and url.endswith("/login")  # sent to log in
    status, _, _ = anonymous.post("/sagas/s-1/decide", {"decision": "approve"})
    assert status == 403

    status, _, page = anonymous.login("ada", "wrong password")
    assert status == 401 and "unknown user or wrong password" in page

    ada = Browser(console_url)
    status, url, page = ada.login("ada", "ada password")
    assert status == 200 and url.endswith("/inbox")
    assert "ada" in page and "approver" in page
    # no database answers: the page says so in one line, without the URL's password
    assert "reading the read model failed" in page
    assert "pg-secret-pw" not in page

    victor = Browser(console_url)
    victor.login("victor", "victor password")
    _, _, page = victor.get("/inbox")
    form = {"action": "cancel", "reason": "forged", "csrf": victor.csrf(page)}
    status, _, text = victor.post("/sagas/s-1/operate", form)
    assert status == 403 and "may not use operator actions" in text


def test_every_form_needs_the_sessions_csrf_token(console_url: str) -> None:
    ada = Browser(console_url)
    ada.login("ada", "ada password")
    _, _, page = ada.get("/inbox")
    token = ada.csrf(page)
    form = {"wait": "manager_approval", "decision": "approve"}
    for sent in ({}, {"csrf": "not-the-token"}, {"csrf": Browser(console_url).csrf(page) + "x"}):
        status, _, text = ada.post("/sagas/s-1/decide", {**form, **sent})
        assert status == 403 and "CSRF" in text
    status, _, _ = ada.post("/logout", {})
    assert status == 403  # even logging out
    status, url, _ = ada.post("/logout", {"csrf": token})
    assert status == 200 and url.endswith("/login")
    status, url, _ = ada.get("/inbox")
    assert url.endswith("/login")
    # a login form posted without the token is refused too
    status, _, _ = Browser(console_url).post("/login", {"name": "ada", "password": "ada password"})
    assert status == 403


def _raw(base: str, method: str, path: str, cookie: str, form: str = "") -> tuple[int, str, str]:
    """One request with exactly ``cookie``, redirects not followed: status, body and the
    session cookie the response sets (empty when it sets none)."""
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    headers = {"Cookie": cookie}
    if form:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request(method, path, body=form or None, headers=headers)
        resp = conn.getresponse()
        body = resp.read().decode()
        sets = [c for c in resp.headers.get_all("Set-Cookie") or [] if c.startswith(SESSION)]
    finally:
        conn.close()
    return resp.status, body, sets[0].split(";")[0] if sets else ""


SESSION = "sagaline_console="


def test_a_read_racing_a_post_does_not_write_the_old_session_back(console_url: str) -> None:
    """A page's live refresh that started before a form post and finished after it must
    not put the session as it read it back in the browser (the post's flash was lost)."""
    olga = Browser(console_url)
    olga.login("olga", "olga password")
    _, _, page = olga.get("/inbox")
    (cookie,) = [c for c in olga.jar if c.name == SESSION[:-1]]
    stale = f"{SESSION}{cookie.value}"

    # the post stores a flash and answers with the new session
    form = urllib.parse.urlencode({"action": "cancel", "reason": "", "csrf": olga.csrf(page)})
    status, _, fresh = _raw(console_url, "POST", "/sagas/s-1/operate", stale, form)
    assert status == 303 and fresh and fresh != stale
    # the refresh that read the old session answers without a session cookie
    status, body, written = _raw(console_url, "GET", "/inbox?fragment=1", stale)
    assert status == 200 and "reading the read model failed" in body
    assert written == ""
    # the redirect's page shows the flash (a change: it writes the session without it)
    status, body, shown = _raw(console_url, "GET", "/inbox", fresh)
    assert status == 200 and "cancel: give a reason" in body
    assert shown and shown != fresh
    status, body, again = _raw(console_url, "GET", "/inbox", shown)
    assert "give a reason" not in body and again == ""


def test_an_old_session_cookie_is_renewed_on_a_read() -> None:
    """Reads leave the cookie alone, except once it is half its life old: an active
    user is not logged out mid-day."""
    from starlette.responses import PlainTextResponse
    from starlette.types import Message, Receive, Scope, Send

    from sagaline.orchestrator.console.sessions import RENEWED, ChangedSessionsOnly

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/login":
            scope["session"]["user"] = "ada"
        await PlainTextResponse("ok")(scope, receive, send)

    now = [1_000_000.0]
    guarded = ChangedSessionsOnly(
        app, secret_key="k" * 32, session_cookie="s", max_age=100, clock=lambda: now[0]
    )

    def call(path: str, cookie: str = "", query: bytes = b"", dest: bytes = b"") -> str:
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        headers = [(b"cookie", cookie.encode())] if cookie else []
        if dest:
            headers.append((b"sec-fetch-dest", dest))
        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "query_string": query,
            "headers": headers,
        }
        asyncio.run(guarded(scope, receive, send))
        found = [v.decode() for k, v in sent[0]["headers"] if k == b"set-cookie"]
        return found[0].split(";")[0] if found else ""

    login = call("/login")
    assert login.startswith("s=")
    assert call("/page", login) == ""  # a read: no cookie
    now[0] += 49
    assert call("/page", login) == ""
    now[0] += 1  # half of max_age since it was written
    # a page's own background requests never renew (they may answer after a post)
    assert call("/inbox", login, query=b"fragment=1") == ""
    assert call("/events", login) == ""
    assert call("/page", login, dest=b"empty") == ""
    renewed = call("/page", login, dest=b"document")
    assert renewed.startswith("s=") and renewed != login
    assert call("/page", renewed) == ""
    assert RENEWED == "renewed_at"
