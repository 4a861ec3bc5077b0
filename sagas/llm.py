"""A small LLM adapter for agent steps.

Two implementations of :class:`ChatModel`:

* :class:`OpenAIChatModel` speaks the OpenAI-compatible ``/chat/completions``
  HTTP API (OpenAI, vLLM, llama.cpp server, Ollama, LiteLLM, …) with the
  standard library's HTTP client, and sends the step's idempotency key as an
  ``Idempotency-Key`` header.
* :class:`ScriptedModel` is deterministic: a policy function decides each
  answer from the conversation.  It is what the demo and the tests use when
  no endpoint is configured (there is no network here), and its token counts
  are computed from the text so budgets behave as with a real model.

:func:`model_from_env` picks one: ``SAGALINE_LLM_BASE_URL`` (and optionally
``SAGALINE_LLM_API_KEY``, ``SAGALINE_LLM_MODEL``) selects the HTTP model.
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from sagaline.orchestrator.core.errors import RetryableError, TerminalError

__all__ = [
    "ChatMessage",
    "ChatModel",
    "ChatResponse",
    "OpenAIChatModel",
    "PartialSink",
    "ScriptedModel",
    "ToolCall",
    "ToolSpec",
    "count_tokens",
    "model_from_env",
    "read_stream",
]


class ToolCall(BaseModel):
    """The model asks for a tool to be called with these arguments."""

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ChatMessage(BaseModel):
    """One message of a conversation, in the OpenAI chat shape."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None


class ToolSpec(BaseModel):
    """A tool the model may call: its name, purpose and JSON-schema parameters."""

    name: str
    description: str
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class ChatResponse(BaseModel):
    """The model's answer: text, tool calls, and what it cost."""

    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    model: str = ""


#: Receives each chunk of the answer's text as the model produces it (``ctx.progress``).
PartialSink = Callable[[str], None]


class ChatModel(Protocol):
    """Anything that completes a chat; ``idempotency_key`` is the step's key.

    With ``on_partial`` the answer's text is streamed: each chunk is handed
    over as it arrives (``on_partial=lambda c: ctx.progress(partial=c)``),
    and the complete answer is returned as without it.
    """

    def complete(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] = (),
        *,
        idempotency_key: str | None = None,
        on_partial: PartialSink | None = None,
    ) -> ChatResponse: ...


def count_tokens(text: str) -> int:
    """A deterministic token estimate (about 4 characters a token)."""
    return max(1, (len(text) + 3) // 4) if text else 0


def _conversation_text(messages: Sequence[ChatMessage]) -> str:
    return "\n".join(
        (m.content or "") + "".join(json.dumps(c.arguments, sort_keys=True) for c in m.tool_calls)
        for m in messages
    )


Policy = Callable[[Sequence[ChatMessage], Sequence[ToolSpec]], ChatResponse]


class ScriptedModel:
    """A deterministic model: ``policy(messages, tools)`` gives each answer.

    The same conversation always yields the same answer, so a replayed or
    re-run agent turn is reproducible.  ``calls`` counts completions made by
    this instance (the demo uses it to show no LLM call was repeated).
    """

    def __init__(self, policy: Policy, *, name: str = "scripted") -> None:
        self._policy = policy
        self.name = name
        self.calls = 0
        self._lock = threading.Lock()

    def complete(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] = (),
        *,
        idempotency_key: str | None = None,
        on_partial: PartialSink | None = None,
    ) -> ChatResponse:
        with self._lock:  # workers run steps on several threads
            self.calls += 1
        answer = self._policy(messages, tools)
        if on_partial is not None and answer.content:
            for chunk in re.findall(r"\s*\S+", answer.content):  # word by word, as a stream
                on_partial(chunk)
        out_text = (answer.content or "") + "".join(
            json.dumps(c.arguments, sort_keys=True) for c in answer.tool_calls
        )
        return answer.model_copy(
            update={
                "tokens_in": answer.tokens_in or count_tokens(_conversation_text(messages)),
                "tokens_out": answer.tokens_out or count_tokens(out_text),
                "model": answer.model or self.name,
            }
        )


def read_stream(lines: Iterable[bytes], on_partial: PartialSink) -> dict[str, Any]:
    """Assemble a streamed chat completion (``data: {...}`` lines until ``data: [DONE]``)
    into the shape of a non-streamed one, handing each text delta to ``on_partial``."""
    text: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    out: dict[str, Any] = {"model": "", "usage": {}}
    for line in lines:
        if not line.startswith(b"data:"):
            continue  # blank separators, comments, other fields
        payload = line[5:].decode("utf-8").strip()
        if payload == "[DONE]":
            break
        chunk = json.loads(payload)
        out["model"] = chunk.get("model") or out["model"]
        out["usage"] = chunk.get("usage") or out["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                text.append(delta["content"])
                on_partial(delta["content"])
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(int(call.get("index", 0)), {"name": "", "arguments": ""})
                slot["id"] = call.get("id") or slot.get("id", "")
                fn = call.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
    tool_calls = [
        {"id": c["id"] or c["name"], "function": {"name": c["name"], "arguments": c["arguments"]}}
        for _, c in sorted(calls.items())
    ]
    message = {"content": "".join(text) or None, "tool_calls": tool_calls}
    return {**out, "choices": [{"message": message}]}


class OpenAIChatModel:
    """An OpenAI-compatible ``/chat/completions`` client (standard library only)."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"LLM base URL must be http(s): {base_url!r}")
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._api_key = api_key
        self._timeout_s = timeout_s

    def for_model(self, model: str) -> OpenAIChatModel:
        """The same endpoint and key, asking ``model`` (an agent's fallback model)."""
        other = copy.copy(self)
        other._model = model
        return other

    def request_body(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
    ) -> dict[str, Any]:
        """The JSON body sent to the endpoint."""
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [self._encode_message(m) for m in messages],
        }
        if tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in tools
            ]
        return body

    @staticmethod
    def _encode_message(message: ChatMessage) -> dict[str, Any]:
        out: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in message.tool_calls
            ]
        if message.tool_call_id is not None:
            out["tool_call_id"] = message.tool_call_id
        return out

    @staticmethod
    def parse_response(raw: dict[str, Any]) -> ChatResponse:
        """Turn the endpoint's JSON answer into a :class:`ChatResponse`."""
        try:
            message = raw["choices"][0]["message"]
            calls = []
            for call in message.get("tool_calls") or []:
                fn = call["function"]
                args = fn.get("arguments") or "{}"
                calls.append(
                    ToolCall(
                        id=call.get("id") or fn["name"],
                        name=fn["name"],
                        arguments=json.loads(args) if isinstance(args, str) else dict(args),
                    )
                )
            usage = raw.get("usage") or {}
            return ChatResponse(
                content=message.get("content"),
                tool_calls=calls,
                tokens_in=int(usage.get("prompt_tokens", 0)),
                tokens_out=int(usage.get("completion_tokens", 0)),
                model=str(raw.get("model", "")),
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise TerminalError(f"malformed chat completion response: {exc!r}") from exc

    def complete(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] = (),
        *,
        idempotency_key: str | None = None,
        on_partial: PartialSink | None = None,
    ) -> ChatResponse:
        body = self.request_body(messages, tools)
        if on_partial is not None:  # server-sent events, the usage in the last one
            body.update({"stream": True, "stream_options": {"include_usage": True}})
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        request = urllib.request.Request(self._url, data=data, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310
                if on_partial is None:
                    raw = json.loads(response.read())
                else:
                    raw = read_stream(response, on_partial)
        except urllib.error.HTTPError as exc:
            if exc.code == 429 or exc.code >= 500:
                raise RetryableError(f"LLM endpoint answered HTTP {exc.code}") from exc
            raise TerminalError(f"LLM endpoint refused the request: HTTP {exc.code}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise RetryableError(f"LLM endpoint unreachable: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise TerminalError("LLM endpoint answered with invalid JSON") from exc
        return self.parse_response(raw)


def model_from_env(default: ChatModel) -> ChatModel:
    """The HTTP model when ``SAGALINE_LLM_BASE_URL`` is set, else ``default``."""
    base_url = os.environ.get("SAGALINE_LLM_BASE_URL")
    if not base_url:
        return default
    return OpenAIChatModel(
        base_url,
        model=os.environ.get("SAGALINE_LLM_MODEL", "gpt-4o-mini"),
        api_key=os.environ.get("SAGALINE_LLM_API_KEY"),
    )
