"""Errors raised while preparing or running the local development infrastructure."""

from __future__ import annotations

from sagaline.orchestrator.core.errors import SagalineError

__all__ = ["DevEnvError", "MissingToolError", "PortInUseError", "StartupError"]


class DevEnvError(SagalineError):
    """The local Kafka or PostgreSQL could not be prepared, started or stopped."""


class MissingToolError(DevEnvError):
    """A program the local infrastructure needs (java, mvn, initdb) is not installed."""


class PortInUseError(DevEnvError):
    """A requested TCP port is already taken by another process."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        super().__init__(f"port {port} on {host} is already in use; choose another or omit it")
        self.port = port
        self.host = host


class StartupError(DevEnvError):
    """A process started but never became ready (or exited early)."""
