"""The one ``module:attribute`` loader (``--app``, ``--logic``, ``--sagas`` …).

Every option that names user code as ``package.module:attribute`` goes through
:func:`load_object`, so each says the same one clear line when the name is wrong.
"""

from __future__ import annotations

import importlib

from sagaline.orchestrator.core.errors import SagalineError

__all__ = ["LoadError", "load_object"]


class LoadError(SagalineError):
    """A ``module:attribute`` name that does not name an importable object."""


def load_object(
    spec: str,
    *,
    option: str = "module:attribute",
    error: type[SagalineError] = LoadError,
    call_unless: str | None = None,
) -> object:
    """Import ``module:attribute`` (dotted attributes allowed: ``mod:obj.attr``).

    ``option`` names the option in messages (``--app``); failures raise ``error``
    with one line. With ``call_unless``, a callable that is not a class and has no
    attribute of that name is a factory: it is called without arguments.
    """
    module_name, sep, attribute = spec.partition(":")
    if not module_name or not sep or not attribute:
        raise error(f"{option} expects module:attribute (e.g. myapp.sagas:registry), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise error(
            f"{option} {spec!r}: no module named {exc.name!r}; run from the folder that holds "
            "it or add that folder to PYTHONPATH"
        ) from exc
    except ImportError as exc:
        raise error(f"{option} {spec!r}: cannot import {module_name!r}: {exc}") from exc
    found: object = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise error(
                f"{option} {spec!r}: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    factory = callable(found) and not isinstance(found, type)
    if call_unless is not None and factory and not hasattr(found, call_unless):
        found = found()  # type: ignore[operator]
    return found
