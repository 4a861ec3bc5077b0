"""``sagaline ui``: a web console onto running sagas (Starlette, server-rendered, live).

Pages: the approval inbox (every open approval, oldest first, approve or
reject with a note), the saga list (filters, counts by status) and a saga's
page (its timeline from the journal, current state, Mermaid diagram with the
current node highlighted, operator actions).  They update without reload
when the journal moves (server-sent events, :mod:`~sagaline.orchestrator.console.live`).

Users and roles come from a TOML file (:mod:`~sagaline.orchestrator.console.users`);
writes go through :class:`~sagaline.orchestrator.client.SagaClient`, as the
CLI's do.  Only the command line imports this package (an import contract).
See docs/console.md.

The names below are imported on first use (PEP 562): a process that only needs
:mod:`~sagaline.orchestrator.console.redact` (every ``worker``/``orchestrator``/``relay
run`` does, through ``sagaline config``'s options) loads neither Starlette nor argon2.
"""

from typing import TYPE_CHECKING

from sagaline._lazy import LazyExports

if TYPE_CHECKING:
    from sagaline.orchestrator.console.app import ConsoleOptions, create_app, serve
    from sagaline.orchestrator.console.users import ROLES, add_user, load_users

__all__ = ["ROLES", "ConsoleOptions", "add_user", "create_app", "load_users", "serve"]

_HOME_OF = {
    "ConsoleOptions": "sagaline.orchestrator.console.app",
    "create_app": "sagaline.orchestrator.console.app",
    "serve": "sagaline.orchestrator.console.app",
    "ROLES": "sagaline.orchestrator.console.users",
    "add_user": "sagaline.orchestrator.console.users",
    "load_users": "sagaline.orchestrator.console.users",
}


if not TYPE_CHECKING:  # a type checker sees the names above, and flags any other
    _EXPORTS = LazyExports(globals(), _HOME_OF)
    __getattr__ = _EXPORTS.attribute
    __dir__ = _EXPORTS.names
