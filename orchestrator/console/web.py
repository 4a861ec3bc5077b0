"""What every console page shares: the console's parts, the user, CSRF, flash messages, rendering.

Sessions are cookies signed with ``itsdangerous`` (Starlette's
``SessionMiddleware``); a session holds the user's name, a CSRF token and
pending flash messages, nothing secret.  Every form carries the session's
CSRF token and every POST is refused with 403 without it
(:func:`check_csrf`).
"""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.console.history import HistoryCache
from sagaline.orchestrator.console.live import Hub
from sagaline.orchestrator.console.readmodel import ReadModel
from sagaline.orchestrator.console.users import User, UserStore
from sagaline.orchestrator.core.registry import SagaRegistry

__all__ = [
    "Console",
    "check_csrf",
    "current_user",
    "flash",
    "render",
    "require_user",
    "safe_next",
]

TEMPLATES_DIR = Path(__file__).parent / "templates"


@dataclass
class Console:
    """The console's parts, shared by every request (``request.app.state.console``)."""

    settings: Settings
    users: UserStore
    read_model: ReadModel | None
    registry: SagaRegistry | None
    hub: Hub
    templates: Jinja2Templates
    history: HistoryCache
    client: SagaClient | None = None
    write_lock: threading.Lock = field(default_factory=threading.Lock)

    def writer(self) -> SagaClient:
        """The command client (created on first use: reading needs no producer)."""
        if self.client is None:
            self.client = SagaClient(self.settings, client_id="sagaline-console")
        return self.client


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def current_user(request: Request) -> User | None:
    name = request.session.get("user")
    if not isinstance(name, str):
        return None
    return console_of(request).users.users.get(name)


def require_user(request: Request) -> User:
    """The logged-in user (a GET without one is sent to /login, a POST refused)."""
    user = current_user(request)
    if user is None:
        if request.method == "GET":
            raise HTTPException(303, headers={"Location": "/login"})
        raise HTTPException(403, "log in first")
    return user


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, form: FormData) -> None:
    """Refuse (403) a form whose ``csrf`` field is not this session's token."""
    sent = form.get("csrf")
    expected = request.session.get("csrf")
    if (
        not isinstance(sent, str)
        or not isinstance(expected, str)
        or not hmac.compare_digest(sent, expected)
    ):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")


def flash(request: Request, level: str, message: str) -> None:
    """A message shown once, on the next page rendered for this session."""
    messages = list(request.session.get("flash", []))
    messages.append([level, message])
    request.session["flash"] = messages[-5:]


def safe_next(value: Any, default: str) -> str:
    """Where to go after a POST: a local path only (never another site)."""
    if isinstance(value, str) and value.startswith("/") and not value.startswith("//"):
        return value
    return default


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """``3m 12s`` style age of ``when`` (``-`` for None; ``in ...`` for the future)."""
    if when is None:
        return "-"
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if hours or days:
        parts.append(f"{hours}h")
    if not days:
        parts.append(f"{minutes}m" if hours or minutes else f"{secs}s")
        if minutes and not hours:
            parts.append(f"{secs}s")
    text = " ".join(parts)
    return f"in {text}" if future else text


def stamp(when: datetime | None) -> str:
    return "-" if when is None else when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    """Render ``template`` with the user, CSRF token and pending flash messages."""
    console = console_of(request)
    messages = request.session.pop("flash", []) if not template.startswith("_") else []
    full = {
        "user": current_user(request),
        "csrf": csrf_token(request),
        "messages": messages,
        "ago": ago,
        "stamp": stamp,
        **context,
    }
    return console.templates.TemplateResponse(request, template, full, status_code=status_code)
