"""Finding the function that runs a task.

The worker asks a :class:`HandlerResolver` for the handler of (saga type,
version, kind, step).  :class:`RegistryResolver` adapts the orchestrator's
``SagaRegistry`` (``registry.get(type, version).handler_for(kind, step)``);
:class:`StepTable` is a small explicit table for participants that run
steps without a saga definition in the process (and for tests and
benchmarks).

A handler is anything with the attributes of :class:`StepHandlerLike`; an
optional ``uses_db`` attribute (default True) selects the delivery path:
True = Postgres inbox + outbox, False = reply and task offset in one Kafka
transaction (no Postgres).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from sagaline.consumers.errors import HandlerNotFound
from sagaline.orchestrator.core.errors import OrchestratorError

__all__ = [
    "Handler",
    "HandlerResolver",
    "Kind",
    "RegistryResolver",
    "StepHandlerLike",
    "StepTable",
    "handler_uses_db",
]

Kind = Literal["step", "compensate"]


class StepHandlerLike(Protocol):
    """What the worker needs from a step handler."""

    @property
    def fn(self) -> Callable[..., Any]: ...

    @property
    def args_type(self) -> type[BaseModel] | None: ...

    @property
    def result_type(self) -> type[BaseModel] | None: ...

    @property
    def timeout(self) -> timedelta | None: ...

    @property
    def heartbeat_timeout(self) -> timedelta | None: ...

    @property
    def non_retryable(self) -> tuple[type[BaseException], ...]: ...


class HandlerResolver(Protocol):
    """Looks up the handler of a task; raises :class:`HandlerNotFound`."""

    def resolve(
        self, saga_type: str, saga_version: int, kind: Kind, step: str
    ) -> StepHandlerLike: ...


def handler_uses_db(handler: StepHandlerLike) -> bool:
    """The handler's ``uses_db`` flag (True when it has none)."""
    return bool(getattr(handler, "uses_db", True))


@dataclass(frozen=True)
class Handler:
    """A step or compensation function with its policies."""

    fn: Callable[..., Any]
    args_type: type[BaseModel] | None = None
    result_type: type[BaseModel] | None = None
    timeout: timedelta | None = None
    heartbeat_timeout: timedelta | None = None
    non_retryable: tuple[type[BaseException], ...] = ()
    uses_db: bool = True


@dataclass
class StepTable:
    """An explicit (saga type, kind, step) → :class:`Handler` table (any saga version)."""

    handlers: dict[tuple[str, Kind, str], Handler] = field(default_factory=dict)

    def add(self, saga_type: str, step: str, handler: Handler, *, kind: Kind = "step") -> None:
        """Register ``handler`` for ``step`` of ``saga_type``."""
        self.handlers[(saga_type, kind, step)] = handler

    def resolve(self, saga_type: str, saga_version: int, kind: Kind, step: str) -> Handler:
        try:
            return self.handlers[(saga_type, kind, step)]
        except KeyError:
            raise HandlerNotFound(
                f"no {kind} handler for step {step!r} of saga type {saga_type!r}"
            ) from None


class _Definition(Protocol):
    def handler_for(self, kind: Kind, step: str) -> Any: ...


class _Registry(Protocol):
    def get(self, type_name: str, version: int) -> Any: ...


@dataclass(frozen=True)
class RegistryResolver:
    """Resolves handlers from the orchestrator's ``SagaRegistry``."""

    registry: _Registry

    def resolve(self, saga_type: str, saga_version: int, kind: Kind, step: str) -> StepHandlerLike:
        try:
            definition: _Definition = self.registry.get(saga_type, saga_version)
            handler: StepHandlerLike | None = definition.handler_for(kind, step)
        except (LookupError, OrchestratorError) as exc:
            raise HandlerNotFound(
                f"no {kind} handler for step {step!r} of {saga_type!r} v{saga_version}: {exc}"
            ) from exc
        if handler is None:
            raise HandlerNotFound(
                f"saga type {saga_type!r} v{saga_version} has no {kind} function for {step!r}"
            )
        return handler
