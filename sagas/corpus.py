"""The research agent's tools: a small in-memory corpus, search, and a calculator.

Everything is local and deterministic (there is no network here): search
ranks the corpus by shared words, documents are short texts, and the
calculator evaluates arithmetic from a parsed expression tree (no ``eval``).
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CORPUS", "Document", "UnknownDocument", "calculate", "read", "search"]


class UnknownDocument(LookupError):
    """No document has this id."""


@dataclass(frozen=True)
class Document:
    """One text of the corpus."""

    doc_id: str
    title: str
    body: str


CORPUS: tuple[Document, ...] = (
    Document(
        "kafka-transactions",
        "Kafka transactions",
        "A Kafka transaction lets a producer write to several partitions atomically and commit"
        " the consumed offsets in the same transaction. Consumers that read with isolation level"
        " read_committed never see records of aborted transactions. A transactional id fences"
        " zombie producers: when a new instance initialises the same id, the old one can no"
        " longer commit. This is the basis of exactly-once read-process-write pipelines.",
    ),
    Document(
        "kafka-compaction",
        "Log compaction",
        "A compacted topic keeps at least the last record of every key. It suits state"
        " snapshots: a restarting process reads the compacted topic from the beginning and"
        " obtains the latest state of every key without replaying the whole history. A record"
        " with a null value, a tombstone, deletes the key after the retention of deletes.",
    ),
    Document(
        "saga-pattern",
        "The saga pattern",
        "A saga splits a long business transaction into local transactions, each with a"
        " compensating action that semantically undoes it. When a step fails permanently the"
        " compensations of the completed steps run in reverse order. A pivot step is the point"
        " of no return: steps after it must be retriable until they succeed.",
    ),
    Document(
        "idempotency-keys",
        "Idempotency keys",
        "An idempotency key names one logical operation. A payment API that receives the same"
        " key twice returns the first result instead of charging again. Clients keep the key"
        " stable across retries of the same operation, and generate a new key for a new"
        " operation. Keys are retained for at least as long as a retry may arrive.",
    ),
    Document(
        "outbox",
        "Transactional outbox",
        "The transactional outbox writes the business change and the message to publish in one"
        " database transaction. A relay reads the outbox table and publishes the messages,"
        " marking them sent. A crash between publish and mark yields a duplicate message, so"
        " receivers must tolerate duplicates, usually by remembering message ids in an inbox.",
    ),
    Document(
        "llm-budgets",
        "Budgets for LLM agents",
        "An agent that chooses tools in a loop can run for many turns. Each turn sends the whole"
        " transcript to the model, so token usage grows roughly quadratically with the number of"
        " turns. A token budget per workflow caps the cost; when it is exceeded the workflow"
        " should pause for a person rather than fail, so that nothing done so far is lost.",
    ),
    Document(
        "postgres-mvcc",
        "PostgreSQL transactions",
        "PostgreSQL runs every statement in a transaction with multi-version concurrency"
        " control. A unique index rejects a second row with the same key, which makes an inbox"
        " table a reliable duplicate filter. Advisory locks let cooperating processes serialise"
        " work such as schema migrations without locking any table.",
    ),
    Document(
        "human-approval",
        "Human approval in workflows",
        "Workflows that move money often wait for a manager's approval. The wait may last days,"
        " so it must not hold a thread or a connection: the workflow's state records the open"
        " wait and its deadline, and a timer fires when the deadline passes. A rejection or a"
        " timeout triggers the compensations of the steps already done.",
    ),
)

_BY_ID = {d.doc_id: d for d in CORPUS}
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "do",
        "does",
        "for",
        "from",
        "how",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "the",
        "to",
        "what",
        "when",
        "which",
        "why",
        "with",
    ]
)


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


def search(query: str, *, limit: int = 3) -> list[Document]:
    """The documents sharing the most words with ``query`` (best first, ties by id)."""
    wanted = _words(query)
    scored = [(len(wanted & _words(d.title + " " + d.body)), d.doc_id, d) for d in CORPUS]
    hits = [(score, doc_id, d) for score, doc_id, d in scored if score > 0]
    hits.sort(key=lambda h: (-h[0], h[1]))
    return [d for _, _, d in hits[:limit]]


def read(doc_id: str) -> Document:
    """The document ``doc_id``."""
    try:
        return _BY_ID[doc_id]
    except KeyError:
        raise UnknownDocument(f"no document {doc_id!r}") from None


_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
}


def calculate(expression: str) -> float:
    """Evaluate an arithmetic expression (numbers, + - * / % ** and parentheses)."""
    if len(expression) > 200:
        raise ValueError("expression too long")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from exc
    return _eval(tree.body)


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large")
        try:
            return _BINARY[type(node.op)](left, right)
        except ZeroDivisionError as exc:
            raise ValueError("division by zero") from exc
    raise ValueError(f"unsupported expression element: {ast.dump(node)[:60]}")
