"""The models an agent step's LLM handler receives and returns.

An agent turn is a task like any other: its handler gets an
:class:`AgentTurn` (saga data, transcript, tools) and returns an
:class:`AgentDecision`, which is recorded before anything acts on it.  The
decider validates a tool call's arguments against the tool's pydantic model;
invalid arguments go back to the LLM as an error and count as a turn.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, Field, model_validator

__all__ = ["AgentDecision", "AgentTurn", "HistoryItem", "ToolInfo"]

ModelT = TypeVar("ModelT", bound=BaseModel)


class ToolInfo(BaseModel):
    """A tool the LLM may call: name, description, JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    risky: bool = False


class HistoryItem(BaseModel):
    """One transcript entry: the LLM's own decision, a tool result, or an error."""

    turn: int
    role: str
    tool: str | None = None
    content: str


class AgentTurn(BaseModel):
    """The input of an agent's LLM handler for one turn.

    ``model`` is the model this attempt must ask (the agent's ``models`` list,
    falling back to the next one after a retryable error or a timeout);
    ``None`` when the agent declares no models.
    """

    agent: str
    turn: int
    max_turns: int
    data: dict[str, Any]
    tools: list[ToolInfo]
    history: list[HistoryItem] = Field(default_factory=list)
    model: str | None = None
    models: list[str] = Field(default_factory=list)
    attempt: int = 1

    def data_as(self, model_type: type[ModelT]) -> ModelT:
        """The saga data as its pydantic model."""
        return model_type.model_validate(self.data)


class AgentDecision(BaseModel):
    """What the LLM decided: call ``tool`` with ``arguments``, or give the final ``answer``."""

    tool: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    answer: str | None = None
    thought: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> AgentDecision:
        if (self.tool is None) == (self.answer is None):
            raise ValueError("an AgentDecision has exactly one of `tool` and `answer`")
        return self

    @classmethod
    def call(
        cls,
        tool: str,
        arguments: BaseModel | dict[str, Any] | None = None,
        *,
        thought: str | None = None,
    ) -> AgentDecision:
        """Call ``tool``; typed ``arguments`` are dumped to JSON-compatible values."""
        if isinstance(arguments, BaseModel):
            args = arguments.model_dump(mode="json")
        else:
            args = dict(arguments or {})
        return cls(tool=tool, arguments=args, thought=thought)

    @classmethod
    def final(cls, answer: str, *, thought: str | None = None) -> AgentDecision:
        """Finish the agent loop with ``answer``."""
        return cls(answer=answer, thought=thought)
