"""The console's pages (GET): login, approval inbox, saga list, saga page, live events.

Each page has a fragment (``?fragment=1``): the part that changes, which the
page's script fetches again when the live event stream says something moved.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from confluent_kafka import KafkaException
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sagaline.orchestrator.console.history import build_history, diagram_lines
from sagaline.orchestrator.console.live import sse_stream
from sagaline.orchestrator.console.readmodel import AGES, ReadModelError, SagaFilter
from sagaline.orchestrator.console.web import console_of, redirect, render, require_user
from sagaline.orchestrator.core.errors import SagalineError
from sagaline.schemas.state import TERMINAL_STATUSES

__all__ = ["events", "home", "inbox", "login_page", "saga_list", "saga_page"]

STATUSES = (
    "running",
    "waiting",
    "paused",
    "compensating",
    "completed",
    "compensated",
    "failed",
    "cancelled",
)


def _fragment(request: Request) -> bool:
    return request.query_params.get("fragment") == "1"


def pretty(value: Any) -> str:
    """JSON for a ``<pre>`` (secrets are already redacted)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str)


async def home(request: Request) -> Response:
    require_user(request)
    return redirect("/inbox")


async def login_page(request: Request) -> Response:
    return render(request, "login.html", {"error": None, "next": request.query_params.get("next")})


async def inbox(request: Request) -> Response:
    user = require_user(request)
    console = console_of(request)
    error = None
    items: list[Any] = []
    if console.read_model is None:
        error = "no database configured: the inbox reads the read model (set DATABASE_URL)"
    else:
        try:
            items = await run_in_threadpool(console.read_model.approvals)
        except ReadModelError as exc:
            error = str(exc)
    context: dict[str, Any] = {"items": items, "error": error, "pretty": pretty, "page": "inbox"}
    context["decidable"] = {i.saga_id: user.may_approve(i.saga_type) for i in items}
    return render(request, "_inbox.html" if _fragment(request) else "inbox.html", context)


def _filter_of(request: Request) -> SagaFilter:
    q = request.query_params
    return SagaFilter(
        saga_type=q.get("type", "").strip(),
        status=q.get("status", "") if q.get("status", "") in STATUSES else "",
        age=q.get("age", "") if q.get("age", "") in AGES else "",
        text=q.get("q", "").strip()[:100],
    )


async def saga_list(request: Request) -> Response:
    require_user(request)
    console = console_of(request)
    f = _filter_of(request)
    context: dict[str, Any] = {"filter": f, "statuses": STATUSES, "ages": list(AGES)}
    context.update(page="sagas", rows=[], counts={}, types=[], error=None)
    if console.read_model is None:
        context["error"] = "no database configured: the list reads the read model"
    else:
        rm = console.read_model
        try:
            context["rows"] = await run_in_threadpool(rm.sagas, f)
            context["counts"] = await run_in_threadpool(rm.counts, f)
            context["types"] = await run_in_threadpool(rm.saga_types)
        except ReadModelError as exc:
            context["error"] = str(exc)
    context["query"] = request.url.query
    return render(request, "_sagas.html" if _fragment(request) else "sagas.html", context)


async def saga_page(request: Request) -> Response:
    user = require_user(request)
    console = console_of(request)
    saga_id = request.path_params["saga_id"]
    error = None
    history = None
    try:
        entries = await run_in_threadpool(console.history.entries, saga_id)
        history = await run_in_threadpool(build_history, entries, console.registry)
    except (SagalineError, KafkaException) as exc:
        error = f"reading the journal failed: {exc}"
    if history is None and error is None:
        error = f"the journal has no entries for saga {saga_id!r}"
    context = {
        "saga_id": saga_id,
        "h": history,
        "error": error,
        "pretty": pretty,
        "page": "saga",
        "may_operate": user.may_operate,
        "may_approve": history is not None and user.may_approve(history.state.saga_type),
        "terminal": TERMINAL_STATUSES,
        "diagram_lines": diagram_lines,
    }
    template = "_saga.html" if _fragment(request) else "saga.html"
    status = 404 if history is None and not _fragment(request) else 200
    return render(request, template, context, status_code=status)


async def events(request: Request) -> Response:
    """The live event stream (text/event-stream) of the logged-in user's pages."""
    require_user(request)
    console = console_of(request)
    stop = asyncio.Event()

    async def watch_disconnect() -> None:
        while not stop.is_set():
            if await request.is_disconnected():
                stop.set()
                return
            await asyncio.sleep(1.0)

    async def body() -> AsyncIterator[str]:
        watcher = asyncio.create_task(watch_disconnect())
        try:
            async for chunk in sse_stream(console.hub, stop):
                yield chunk
        finally:
            stop.set()
            watcher.cancel()

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
