"""The LLM adapter: the OpenAI-compatible client against a local server, and the scripted model.

No real LLM endpoint is reachable from this machine, so the HTTP client is
exercised against a small server in this test that speaks the OpenAI
``/chat/completions`` wire format on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from sagaline.orchestrator.core.errors import RetryableError, TerminalError
from sagaline.sagas.llm import (
    ChatMessage,
    ChatResponse,
    OpenAIChatModel,
    ScriptedModel,
    ToolCall,
    ToolSpec,
    count_tokens,
    model_from_env,
)

pytestmark = pytest.mark.unit


class _Endpoint(BaseHTTPRequestHandler):
    """Answers like an OpenAI-compatible server; ``mode`` picks the answer."""

    requests: ClassVar[list[dict[str, Any]]] = []
    mode: ClassVar[str] = "tool"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length))
        type(self).requests.append(
            {"path": self.path, "headers": dict(self.headers.items()), "body": body}
        )
        if self.mode == "overloaded":
            self._send(503, {"error": {"message": "overloaded"}})
        elif self.mode == "bad-request":
            self._send(400, {"error": {"message": "bad"}})
        elif self.mode == "garbage":
            self._send(200, {"choices": []})
        elif self.mode == "tool":
            self._send(
                200,
                {
                    "id": "chatcmpl-1",
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "tool_calls",
                            "message": {
                                "role": "assistant",
                                "content": None,
                                "tool_calls": [
                                    {
                                        "id": "call_abc",
                                        "type": "function",
                                        "function": {
                                            "name": "search_web",
                                            "arguments": '{"query": "kafka"}',
                                        },
                                    }
                                ],
                            },
                        }
                    ],
                    "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49},
                },
            )
        else:
            self._send(
                200,
                {
                    "model": body["model"],
                    "choices": [{"message": {"role": "assistant", "content": "42."}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 2},
                },
            )

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def endpoint() -> Iterator[str]:
    _Endpoint.requests = []
    _Endpoint.mode = "tool"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


CONVERSATION = [
    ChatMessage(role="system", content="be brief"),
    ChatMessage(role="user", content="what is kafka?"),
    ChatMessage(
        role="assistant",
        tool_calls=[ToolCall(id="call_1", name="search_web", arguments={"query": "kafka"})],
    ),
    ChatMessage(role="tool", tool_call_id="call_1", content='{"hits": []}'),
]
TOOLS = [ToolSpec(name="search_web", description="search", parameters={"type": "object"})]


def test_http_client_speaks_the_openai_wire_format(endpoint: str) -> None:
    model = OpenAIChatModel(endpoint, model="test-model", api_key="sk-test")
    response = model.complete(CONVERSATION, TOOLS, idempotency_key="saga-1/investigate#1/1")
    assert response == ChatResponse(
        tool_calls=[ToolCall(id="call_abc", name="search_web", arguments={"query": "kafka"})],
        tokens_in=42,
        tokens_out=7,
        model="test-model",
    )
    (request,) = _Endpoint.requests
    assert request["path"] == "/v1/chat/completions"
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["authorization"] == "Bearer sk-test"
    assert headers["idempotency-key"] == "saga-1/investigate#1/1"
    body = request["body"]
    assert body["model"] == "test-model"
    assert body["tools"][0] == {
        "type": "function",
        "function": {
            "name": "search_web",
            "description": "search",
            "parameters": {"type": "object"},
        },
    }
    assistant = body["messages"][2]
    assert assistant["tool_calls"][0]["function"] == {
        "name": "search_web",
        "arguments": '{"query": "kafka"}',
    }
    assert body["messages"][3] == {
        "role": "tool",
        "content": '{"hits": []}',
        "tool_call_id": "call_1",
    }


def test_http_client_text_answer(endpoint: str) -> None:
    _Endpoint.mode = "text"
    response = OpenAIChatModel(endpoint, model="m").complete(CONVERSATION[:2])
    assert (response.content, response.tool_calls, response.tokens_in) == ("42.", [], 10)
    assert "tools" not in _Endpoint.requests[0]["body"]
    assert "authorization" not in {k.lower() for k in _Endpoint.requests[0]["headers"]}


@pytest.mark.parametrize(
    ("mode", "error"),
    [("overloaded", RetryableError), ("bad-request", TerminalError), ("garbage", TerminalError)],
)
def test_http_errors_map_to_step_errors(endpoint: str, mode: str, error: type[Exception]) -> None:
    _Endpoint.mode = mode
    with pytest.raises(error):
        OpenAIChatModel(endpoint, model="m").complete(CONVERSATION[:2])


def test_unreachable_endpoint_is_retryable() -> None:
    model = OpenAIChatModel("http://127.0.0.1:9/v1", model="m", timeout_s=2)
    with pytest.raises(RetryableError):
        model.complete(CONVERSATION[:2])


def test_base_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        OpenAIChatModel("file:///etc/passwd", model="m")


def test_scripted_model_is_deterministic_and_counts_tokens() -> None:
    def policy(messages: Any, tools: Any) -> ChatResponse:
        return ChatResponse(content=f"{len(messages)} messages, {len(tools)} tools")

    model = ScriptedModel(policy, name="script")
    first = model.complete(CONVERSATION, TOOLS)
    second = model.complete(CONVERSATION, TOOLS)
    assert first == second
    assert first.content == "4 messages, 1 tools"
    assert first.model == "script"
    assert first.tokens_out == count_tokens("4 messages, 1 tools")
    assert first.tokens_in > 0
    assert model.calls == 2


def test_model_from_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    default = ScriptedModel(lambda m, t: ChatResponse(content="x"))
    monkeypatch.delenv("SAGALINE_LLM_BASE_URL", raising=False)
    assert model_from_env(default) is default
    monkeypatch.setenv("SAGALINE_LLM_BASE_URL", endpoint)
    monkeypatch.setenv("SAGALINE_LLM_MODEL", "local-model")
    chosen = model_from_env(default)
    assert isinstance(chosen, OpenAIChatModel)
    _Endpoint.mode = "text"
    assert chosen.complete(CONVERSATION[:2]).model == "local-model"
