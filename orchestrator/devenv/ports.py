"""Free-port discovery and checks on the loopback interface."""

from __future__ import annotations

import random
import socket
from pathlib import Path

from sagaline.orchestrator.devenv.errors import PortInUseError

__all__ = ["LOOPBACK", "ensure_port_free", "free_port", "port_accepts", "port_is_free"]

LOOPBACK = "127.0.0.1"


#: where a port for a server is looked for: below the kernel's ephemeral range (see
#: free_port), at most this many ports wide
_BELOW_EPHEMERAL = 12_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now, for a server started a little later.

    Taken below the kernel's ephemeral range when there is room: a port from that
    range (what binding port 0 gives) can be handed to an outgoing connection as
    its local port while the server is still initialising (PostgreSQL's initdb
    takes seconds), and the server then finds it taken.  Random, and checked free;
    the kernel's choice when no such port is found.
    """
    low = _ephemeral_low()
    if low - _BELOW_EPHEMERAL >= 1024:
        for _ in range(50):
            port = random.randrange(low - _BELOW_EPHEMERAL, low)
            if port_is_free(port, host):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (0 when it cannot be read)."""
    try:
        return int(_EPHEMERAL_RANGE.read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when a listening socket could bind ``host:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def ensure_port_free(port: int, host: str = LOOPBACK) -> None:
    """Raise :class:`PortInUseError` when ``host:port`` is taken."""
    if not port_is_free(port, host):
        raise PortInUseError(port, host)


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
