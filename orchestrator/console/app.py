"""The console's ASGI application (Starlette) and the server that runs it (uvicorn).

:func:`create_app` wires the pages (:mod:`~sagaline.orchestrator.console.pages`),
the forms (:mod:`~sagaline.orchestrator.console.actions`), signed session
cookies (:mod:`~sagaline.orchestrator.console.sessions`), the static files and
the journal follower that drives live updates.
:func:`serve` runs it until interrupted.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.console import actions, pages
from sagaline.orchestrator.console.history import HistoryCache
from sagaline.orchestrator.console.live import Hub, JournalFollower
from sagaline.orchestrator.console.readmodel import ReadModel
from sagaline.orchestrator.console.redact import redact_url
from sagaline.orchestrator.console.sessions import ChangedSessionsOnly
from sagaline.orchestrator.console.users import UserStore, session_secret
from sagaline.orchestrator.console.web import TEMPLATES_DIR, Console
from sagaline.orchestrator.core.registry import SagaRegistry

__all__ = ["ConsoleOptions", "create_app", "serve"]

STATIC_DIR = Path(__file__).parent / "static"
#: a session lasts a working day
SESSION_MAX_AGE_S = 8 * 3600


@dataclass(frozen=True)
class ConsoleOptions:
    """What ``sagaline ui`` was given."""

    settings: Settings
    users: UserStore
    registry: SagaRegistry | None = None
    db_schema: str = "sagaline"
    state_dir: Path = Path(".sagaline")
    host: str = "127.0.0.1"
    port: int = 8765


def _routes() -> list[Route | Mount]:
    return [
        Route("/", pages.home),
        Route("/login", pages.login_page, methods=["GET"]),
        Route("/login", actions.login, methods=["POST"]),
        Route("/logout", actions.logout, methods=["POST"]),
        Route("/inbox", pages.inbox),
        Route("/sagas", pages.saga_list),
        Route("/sagas/{saga_id:path}/decide", actions.decide, methods=["POST"]),
        Route("/sagas/{saga_id:path}/operate", actions.operate, methods=["POST"]),
        Route("/sagas/{saga_id:path}", pages.saga_page),
        Route("/events", pages.events),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]


def create_app(options: ConsoleOptions) -> Starlette:
    """The console application for ``options`` (the journal follower starts with it)."""
    settings = options.settings
    read_model = (
        ReadModel(settings.database_url, options.db_schema) if settings.database_url else None
    )
    templates = Jinja2Templates(directory=TEMPLATES_DIR)
    templates.env.globals["redact_url"] = redact_url
    hub = Hub()
    bootstrap, journal = settings.kafka_bootstrap_servers, settings.topics.journal
    history = HistoryCache(bootstrap, journal)
    console = Console(
        settings, options.users, read_model, options.registry, hub, templates, history
    )
    follower = JournalFollower(bootstrap, journal, hub, read_model, on_entry=history.append)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        follower.start()
        try:
            yield
        finally:
            follower.stop()
            if console.client is not None:
                console.client.close()

    secret = session_secret(options.users, options.state_dir)
    middleware = [
        Middleware(
            ChangedSessionsOnly,
            secret_key=secret,
            session_cookie="sagaline_console",
            max_age=SESSION_MAX_AGE_S,
            same_site="strict",
        )
    ]
    app = Starlette(routes=_routes(), middleware=middleware, lifespan=lifespan)
    app.state.console = console
    return app


def serve(options: ConsoleOptions) -> None:
    """Run the console until interrupted (SIGINT or SIGTERM)."""
    app = create_app(options)
    config = uvicorn.Config(
        app, host=options.host, port=options.port, log_level="warning", access_log=False
    )
    uvicorn.Server(config).run()
