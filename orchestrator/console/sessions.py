"""The console's session cookie, written only by a request that changed the session.

Starlette's ``SessionMiddleware`` sets the cookie on every response of a session
that is not empty, with the session as *that* request read it.  A console page
sends requests of its own while a form post is under way (the live refresh of
its fragment, the event stream), so a read that started before the post and
finished after it wrote the old session back over the new one, and the flash
message the post had stored ("approved by ada: done") was lost.  Here the cookie
is written only when the request changed the session (a login, a flash stored or
shown, a logout), and when the cookie is older than half its life on a page the
user asked for (so an active user stays logged in; never on a page's own background
requests); every other response leaves the browser's cookie alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Literal

from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ChangedSessionsOnly"]

#: the scope key holding the session as the request found it (JSON)
_BEFORE = "sagaline.session_before"
#: the session key holding when its cookie was last written (Unix seconds)
RENEWED = "renewed_at"


def _dump(session: Any) -> str:
    return json.dumps(session, sort_keys=True, default=str)


def _background(scope: Scope) -> bool:
    """A request a page makes by itself (its live refresh, its event stream): it never
    renews the cookie, since it may answer after a form post it started before."""
    headers = dict(scope.get("headers") or [])
    if headers.get(b"sec-fetch-dest") == b"empty":  # fetch(), EventSource (a browser says)
        return True
    query = scope.get("query_string") or b""
    return scope.get("path") == "/events" or b"fragment=1" in query.split(b"&")


def _unchanged(scope: Scope) -> bool:
    return _BEFORE in scope and bool(scope[_BEFORE] == _dump(scope.get("session")))


class ChangedSessionsOnly:
    """``SessionMiddleware`` that sets the cookie only for a session a request changed."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        secret_key: str,
        session_cookie: str,
        max_age: int,
        same_site: Literal["lax", "strict", "none"] = "strict",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.cookie = session_cookie.encode("latin-1") + b"="
        self.max_age = max_age
        self.clock = clock
        self.sessions = SessionMiddleware(
            self._inner,
            secret_key=secret_key,
            session_cookie=session_cookie,
            max_age=max_age,
            same_site=same_site,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def send_unless_unchanged(message: Message) -> None:
            if message["type"] == "http.response.start" and _unchanged(scope):
                message["headers"] = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if not (name.lower() == b"set-cookie" and value.startswith(self.cookie))
                ]
            await send(message)

        await self.sessions(scope, receive, send_unless_unchanged)

    async def _inner(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Inside the session middleware: note the session as read, renew an old cookie."""
        session = scope["session"]
        scope[_BEFORE] = _dump(session)
        if session and not _background(scope):
            renewed = session.get(RENEWED)
            if not isinstance(renewed, int) or self.clock() - renewed >= self.max_age // 2:
                session[RENEWED] = int(self.clock())  # a change: the cookie is written

        async def stamp_changes(message: Message) -> None:
            # a session the request changed is written now: note when (the session
            # middleware encodes it after this)
            start = message["type"] == "http.response.start"
            if start and scope["session"] and not _unchanged(scope):
                scope["session"][RENEWED] = int(self.clock())
            await send(message)

        await self.app(scope, receive, stamp_changes)
