"""The wait node: a durable wait for a person's approval or another system's signal."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel

from sagaline.orchestrator.core.errors import SagaDefinitionError
from sagaline.orchestrator.core.nodes.base import (
    ACTIONS,
    Node,
    NodeKind,
    check_arity,
    mermaid_label,
    ref_name,
    register,
)
from sagaline.orchestrator.core.payloads import (
    PayloadDecodeError,
    from_payload,
    input_sha256,
    to_payload,
)
from sagaline.schemas.events import SignalAccepted, SignalRejected, WaitOpened
from sagaline.schemas.trusted import make

if TYPE_CHECKING:
    from sagaline.orchestrator.core.decision import DecisionContext
    from sagaline.orchestrator.core.saga import Saga
    from sagaline.schemas.base import Payload
    from sagaline.schemas.commands import SignalSaga
    from sagaline.schemas.state import WaitState

__all__ = [
    "SignalInfo",
    "WaitKind",
    "WaitSpec",
    "approval",
    "duration_text",
    "reject_signal",
    "wait_for_signal",
]

D = TypeVar("D")
#: A condition hook: ``when(self, data) -> bool``.
WhenFn = Callable[[Any, Any], bool]
#: What an approver is shown: ``shows(self, data) -> Model``.
ShowsFn = TypeVar("ShowsFn", bound=Callable[[Any, Any], BaseModel])


class SignalInfo(BaseModel):
    """An accepted signal, passed to ``on_signal`` hooks of waits without a payload model."""

    name: str
    by: str
    approved: bool | None = None
    note: str | None = None


class WaitSpec(Node):
    """A durable wait for a signal (``approval`` or ``wait_for_signal``)."""

    kind = "wait"

    def __init__(
        self,
        *,
        signal_kind: Literal["approval", "signal"],
        timeout: timedelta | None,
        on_approve: str | Node,
        on_reject: str | Node,
        on_timeout: str | Node,
        payload: type[BaseModel] | None,
        name: str | None,
        bound: bool = False,
    ) -> None:
        super().__init__(name)
        self.signal_kind = signal_kind
        self.bound = bound
        self.shows_fn: Callable[..., Any] | None = None
        self.timeout = timeout
        self.on_approve = ref_name(on_approve)
        self.on_reject = ref_name(on_reject)
        self.on_timeout = ref_name(on_timeout)
        self.payload_type = payload
        self.when_fn: Callable[..., Any] | None = None
        self.on_signal_fn: Callable[..., Any] | None = None

    def __call__(self, fn: WhenFn) -> WaitSpec:
        """Decorate ``fn(self, data) -> bool``: wait only when it returns True."""
        self.when_fn = fn
        if not self.name:
            self.name = fn.__name__
        self.__doc__ = fn.__doc__
        return self

    def on_signal(self, fn: Callable[[Any, D, Any], D]) -> Callable[[Any, D, Any], D]:
        """Register ``fn(self, data, signal) -> data`` folding an accepted signal in.

        ``signal`` is the signal's payload model when the wait declares
        ``payload=``, else the :class:`SignalInfo` (by, approved, note).
        """
        self.on_signal_fn = fn
        return fn

    def shows(self, fn: ShowsFn) -> ShowsFn:
        """Register ``fn(self, data) -> Model``: what the approver is shown.

        The approval is then bound to it: an approve must carry the SHA-256
        of that view (``seen_sha256``) and is refused once the view changed.
        """
        self.shows_fn = fn
        self.bound = True
        return fn

    def references(self) -> list[str]:
        return [a for a in (self.on_approve, self.on_reject, self.on_timeout) if a not in ACTIONS]


def approval(
    *,
    timeout: timedelta | None,
    on_approve: str | Node = "continue",
    on_reject: str | Node = "compensate",
    on_timeout: str | Node = "compensate",
    name: str | None = None,
    bound: bool = False,
) -> WaitSpec:
    """A wait for a person's approve/reject, with a timeout.

    Use as an attribute (``manager_ok = approval(timeout=timedelta(days=7))``)
    or decorate ``fn(self, data) -> bool`` to wait only when it returns True.
    Each outcome is ``"continue"``, ``"compensate"``, ``"fail"`` or a node.
    ``bound=True`` (or a ``@<approval>.shows`` view) binds an approve to the
    SHA-256 of the data the approver was shown.
    """
    return WaitSpec(
        signal_kind="approval",
        timeout=timeout,
        on_approve=on_approve,
        on_reject=on_reject,
        on_timeout=on_timeout,
        payload=None,
        name=name,
        bound=bound,
    )


def wait_for_signal(
    *,
    timeout: timedelta | None,
    on_timeout: str | Node = "compensate",
    payload: type[BaseModel] | None = None,
    name: str | None = None,
) -> WaitSpec:
    """A wait for a named signal (optionally carrying a ``payload`` model)."""
    return WaitSpec(
        signal_kind="signal",
        timeout=timeout,
        on_approve="continue",
        on_reject="compensate",
        on_timeout=on_timeout,
        payload=payload,
        name=name,
    )


def reject_signal(ctx: DecisionContext, sig: SignalSaga, reason: str) -> None:
    ctx.emit(
        make(
            SignalRejected,
            at=ctx.now,
            name=sig.name,
            by=sig.by,
            reason=reason,
            approved=sig.approved,
            message_id=sig.envelope.message_id,
        )
    )


def shown_view(ctx: DecisionContext, node: WaitSpec) -> Payload:
    """What the approver of ``node`` is shown now: its ``shows`` view, or the saga data."""
    if node.shows_fn is None:
        return ctx.s.data
    return to_payload(node.shows_fn(ctx.saga, ctx.data()))


def stale_approval(ctx: DecisionContext, node: WaitSpec, sig: SignalSaga) -> str | None:
    """Why an approve cannot be granted on what its approver saw (``None``: it can)."""
    if node.signal_kind != "approval" or sig.approved is not True:
        return None
    if sig.seen_sha256 is None:
        if not node.bound:
            return None
        return (
            f"approval {node.name} is bound to what the approver saw: approve with the "
            "SHA-256 of the data shown (sagaline approval shows it)"
        )
    current = input_sha256(shown_view(ctx, node))
    if sig.seen_sha256 == current:
        return None
    return (
        f"the data of approval {node.name} changed since the approver saw it "
        f"(seen {sig.seen_sha256[:12]}, now {current[:12]}): look again and approve"
    )


def duration_text(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class WaitKind(NodeKind[WaitSpec]):
    kind = "wait"

    def validate(self, cls: type[Saga[Any]], node: WaitSpec, localns: dict[str, Any]) -> None:
        where = f"{cls.__qualname__}.{node.name}"
        if node.timeout is None:
            raise SagaDefinitionError(
                f"{where}: a wait needs a timeout policy (timeout=..., on_timeout=...)"
            )
        if node.when_fn is not None:
            check_arity(node.when_fn, "self, data", f"{where} condition")
        if node.on_signal_fn is not None:
            check_arity(node.on_signal_fn, "self, data, signal", f"{where} on_signal hook")
        if node.bound and node.signal_kind != "approval":
            raise SagaDefinitionError(f"{where}: only an approval can be bound to what was shown")
        if node.shows_fn is not None:
            check_arity(node.shows_fn, "self, data", f"{where} shows hook")

    def drive(self, ctx: DecisionContext, node: WaitSpec) -> bool:
        if any(w.name == node.name for w in ctx.s.waits):
            return False
        if node.when_fn is not None and not node.when_fn(ctx.saga, ctx.data()):
            ctx.enter(ctx.defn.next_node(node.name), previous=node.name, via="not needed")
            return True
        assert node.timeout is not None
        shown = shown_view(ctx, node) if node.bound else None
        ctx.emit(
            make(
                WaitOpened,
                at=ctx.now,
                name=node.name,
                kind=node.signal_kind,
                timeout_at=ctx.now + node.timeout,
                shown=shown if node.shows_fn is not None else None,
                shown_sha256=input_sha256(shown) if shown is not None else None,
                bound=node.bound,
            )
        )
        return False

    def on_signal(
        self, ctx: DecisionContext, node: WaitSpec, wait: WaitState, sig: SignalSaga
    ) -> None:
        """Accept ``sig`` for the open wait: fold it in, then take the outcome's action.

        An approve bound to a view that is no longer the current one is
        refused (``SignalRejected``): the wait stays open for a new look.
        """
        stale = stale_approval(ctx, node, sig)
        if stale is not None:
            reject_signal(ctx, sig, stale)
            return
        data = ctx.data()
        if node.on_signal_fn is not None:
            info: BaseModel = SignalInfo(
                name=sig.name, by=sig.by, approved=sig.approved, note=sig.note
            )
            if node.payload_type is not None:
                if sig.payload is None:
                    reject_signal(ctx, sig, f"signal needs a {node.payload_type.__name__}")
                    return
                try:
                    info = from_payload(sig.payload, node.payload_type)
                except PayloadDecodeError as exc:
                    reject_signal(ctx, sig, str(exc))
                    return
            data = node.on_signal_fn(ctx.saga, data, info)
        ctx.emit(
            make(
                SignalAccepted,
                at=ctx.now,
                name=wait.name,
                by=sig.by,
                approved=sig.approved,
                note=sig.note,
                payload=sig.payload,
                data=to_payload(data),
                seen_sha256=sig.seen_sha256 if sig.approved else None,
            )
        )
        if sig.approved is False:
            note = f": {sig.note}" if sig.note else ""
            ctx.apply_action(node.on_reject, node, f"{wait.name} rejected by {sig.by}{note}")
        else:
            ctx.apply_action(node.on_approve, node, f"{wait.name} approved by {sig.by}")

    def on_wait_timeout(self, ctx: DecisionContext, node: WaitSpec, name: str) -> None:
        ctx.apply_action(node.on_timeout, node, f"{name} timed out")

    def mermaid_nodes(self, node: WaitSpec) -> list[str]:
        n = node.name
        timeout = f" ({duration_text(node.timeout)})" if node.timeout else ""
        return [f'{n}{{{{"{node.signal_kind}: {mermaid_label(n)}{timeout}"}}}}']

    def mermaid_edges(
        self, node: WaitSpec, following: str, target: Callable[[str], str]
    ) -> list[str]:
        outcomes = [("approve", node.on_approve), ("reject", node.on_reject)]
        if node.signal_kind == "signal":
            outcomes = [("signal", node.on_approve)]
        outcomes.append(("timeout", node.on_timeout))
        return [
            f"{node.name} -- {label} --> {following if action == 'continue' else target(action)}"
            for label, action in outcomes
        ]

    def may_compensate(self, node: WaitSpec) -> bool:
        return False


register(WaitKind())
