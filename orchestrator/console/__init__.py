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
"""

from sagaline.orchestrator.console.app import ConsoleOptions, create_app, serve
from sagaline.orchestrator.console.users import ROLES, add_user, load_users

__all__ = ["ROLES", "ConsoleOptions", "add_user", "create_app", "load_users", "serve"]
