"""Streamed LLM answers (partial output for ``ctx.progress``): the OpenAI-compatible
client reads server-sent events from a real local HTTP server; the scripted model
streams word by word."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from sagaline.orchestrator.core.errors import TerminalError
from sagaline.sagas.llm import ChatMessage, ChatResponse, OpenAIChatModel, ScriptedModel, ToolSpec

pytestmark = pytest.mark.unit

TEXT_EVENTS = [
    {"model": "m-1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    {"model": "m-1", "choices": [{"index": 0, "delta": {"content": "Kafka "}}]},
    {"model": "m-1", "choices": [{"index": 0, "delta": {"content": "keeps "}}]},
    {"model": "m-1", "choices": [{"index": 0, "delta": {"content": "logs."}}]},
    {"model": "m-1", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}},
]
TOOL_EVENTS = [
    {
        "model": "m-2",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "search_web", "arguments": ""},
                        }
                    ]
                },
            }
        ],
    },
    {
        "model": "m-2",
        "choices": [
            {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"qu'}}]}}
        ],
    },
    {
        "model": "m-2",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [{"index": 0, "function": {"arguments": 'ery": "kafka"}'}}]
                },
            }
        ],
    },
    {"model": "m-2", "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 9}},
]


class _Streaming(BaseHTTPRequestHandler):
    events: ClassVar[list[dict[str, Any]]] = TEXT_EVENTS
    bodies: ClassVar[list[dict[str, Any]]] = []
    garbage: ClassVar[bool] = False

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b": keep-alive\n\n")
        for event in self.events:
            self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            self.wfile.flush()
        if self.garbage:
            self.wfile.write(b"data: {not json\n\n")
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture
def endpoint() -> Iterator[str]:
    _Streaming.events, _Streaming.bodies, _Streaming.garbage = TEXT_EVENTS, [], False
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Streaming)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


ASK = [ChatMessage(role="user", content="what keeps the log?")]


def test_a_streamed_answer_is_handed_over_chunk_by_chunk(endpoint: str) -> None:
    chunks: list[str] = []
    response = OpenAIChatModel(endpoint, model="m-1").complete(ASK, on_partial=chunks.append)
    assert chunks == ["Kafka ", "keeps ", "logs."]
    assert response == ChatResponse(
        content="Kafka keeps logs.", tokens_in=12, tokens_out=3, model="m-1"
    )
    body = _Streaming.bodies[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_streamed_tool_calls_are_assembled(endpoint: str) -> None:
    _Streaming.events = TOOL_EVENTS
    chunks: list[str] = []
    tools = [ToolSpec(name="search_web", description="search")]
    response = OpenAIChatModel(endpoint, model="m-2").complete(ASK, tools, on_partial=chunks.append)
    assert chunks == []  # a tool call has no text to show
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        ("call_1", "search_web", {"query": "kafka"})
    ]
    assert (response.tokens_in, response.tokens_out, response.content) == (20, 9, None)


def test_a_broken_stream_is_a_terminal_error(endpoint: str) -> None:
    _Streaming.garbage = True
    with pytest.raises(TerminalError, match="invalid JSON"):
        OpenAIChatModel(endpoint, model="m-1").complete(ASK, on_partial=lambda _chunk: None)


def test_the_scripted_model_streams_word_by_word() -> None:
    model = ScriptedModel(lambda _m, _t: ChatResponse(content="Sagas survive crashes."))
    chunks: list[str] = []
    answer = model.complete(ASK, on_partial=chunks.append)
    assert chunks == ["Sagas", " survive", " crashes."]
    assert "".join(chunks) == answer.content
    assert model.complete(ASK) == answer  # streaming changes nothing else
