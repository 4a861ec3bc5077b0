"""The LLM call ledger: one row per completion a committed step made.

The row is written through ``ctx.db``, in the transaction that records the
step's result, so it exists exactly when the step's result was recorded.
The demo counts rows per idempotency key: more than one means an LLM call
was repeated after its result had been recorded.  (A call whose step
crashed before committing leaves no row; sagaline then re-runs the step with
the same idempotency key, which :class:`~sagaline.sagas.llm.OpenAIChatModel` sends as
the ``Idempotency-Key`` header for providers that honour it.)
"""

from __future__ import annotations

from sagaline.orchestrator.core.context import StepContext
from sagaline.sagas.llm import ChatResponse
from sagaline.sagas.tables import Tables

__all__ = ["record_llm_call"]


def record_llm_call(ctx: StepContext, response: ChatResponse) -> None:
    """Report the call's usage to the saga's budget and write its ledger row."""
    ctx.report_usage(llm_calls=1, tokens_in=response.tokens_in, tokens_out=response.tokens_out)
    db = ctx.db
    if db is None:  # the in-memory test kit runs steps without a database
        return
    t = Tables.current()
    db.execute(
        f"INSERT INTO {t.llm_calls} (idempotency_key, saga_id, step, attempt, model,"
        " tokens_in, tokens_out) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            ctx.idempotency_key,
            ctx.saga_id,
            ctx.step,
            ctx.attempt,
            response.model,
            response.tokens_in,
            response.tokens_out,
        ),
    )
