"""Names a package exports but imports on first use (PEP 562), in one place.

``sagaline``, ``sagaline.consumers``, ``sagaline.orchestrator.runtime`` and
``sagaline.orchestrator.console`` export names from their submodules without
importing them all when the package is imported (``import sagaline`` must not
load Kafka; a worker must not load the console).  Each package builds one
:class:`LazyExports` from where each name lives and binds its ``attribute`` and
``names`` as the module's ``__getattr__`` and ``__dir__``; type checkers see the
names through the package's ``TYPE_CHECKING`` imports.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from importlib import import_module
from typing import Any

__all__ = ["LazyExports"]


class LazyExports:
    """The names of one package's namespace that are imported on first use."""

    __slots__ = ("_home_of", "_namespace")

    def __init__(self, namespace: MutableMapping[str, Any], home_of: Mapping[str, str]) -> None:
        """``namespace``: the package's ``globals()``; ``home_of``: name -> its module."""
        self._namespace = namespace
        self._home_of = dict(home_of)

    def attribute(self, name: str) -> Any:
        """The module's ``__getattr__``: import ``name`` from its home, keep it as a
        plain attribute of the package from then on."""
        module = self._home_of.get(name)
        if module is None:
            package = self._namespace.get("__name__", "?")
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        self._namespace[name] = value
        return value

    def names(self) -> list[str]:
        """The module's ``__dir__``: what is there, and what ``__all__`` promises."""
        return sorted({*self._namespace, *self._namespace.get("__all__", ())})
