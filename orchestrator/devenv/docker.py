"""Is a Docker engine answering? (Decides whether tests use testcontainers.)"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

__all__ = ["docker_available", "docker_endpoint"]

_DEFAULT_SOCKET = "/var/run/docker.sock"


def docker_endpoint() -> str:
    """``$DOCKER_HOST`` or the default unix socket."""
    return os.environ.get("DOCKER_HOST") or f"unix://{_DEFAULT_SOCKET}"


def docker_available(timeout: float = 0.5) -> bool:
    """True when ``GET /_ping`` on the Docker endpoint answers ``OK`` within ``timeout`` s.

    Only unix sockets and plain ``tcp://`` endpoints are probed; anything else (TLS,
    ssh) counts as unavailable. Never raises.
    """
    endpoint = urlparse(docker_endpoint())
    try:
        if endpoint.scheme == "unix":
            if not os.path.exists(endpoint.path):
                return False
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(endpoint.path)
        elif endpoint.scheme == "tcp" and endpoint.hostname and endpoint.port:
            sock = socket.create_connection((endpoint.hostname, endpoint.port), timeout=timeout)
        else:
            return False
        with sock:
            sock.settimeout(timeout)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(1024)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0] + b" "
