"""A user's ``--app`` and ``--data`` as objects, with one clear line when they are wrong."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from sagaline.orchestrator.core.errors import ConfigError, SagalineError
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.saga import Saga
from sagaline.orchestrator.runtime.loader import load_object

__all__ = ["describe_validation", "load_app_object", "load_registry", "parse_data"]


def load_app_object(spec: str, option: str = "--app") -> Any:
    """Import ``module:attribute`` (a zero-argument function is called) with the one
    loader, :func:`sagaline.orchestrator.runtime.loader.load_object`."""
    try:
        return load_object(spec, option=option, error=ConfigError, call_unless="decide")
    except SagalineError:
        raise
    except Exception as exc:  # the user's module failed while importing: their code
        module_name = spec.partition(":")[0]
        raise ConfigError(
            f"{option} {spec!r}: importing {module_name!r} failed with "
            f"{type(exc).__name__}: {exc} (run again with --debug for the traceback)"
        ) from exc


def load_registry(spec: str) -> SagaRegistry:
    """The saga registry ``--app`` names (a registry, a Saga class or a list of them)."""
    obj = load_app_object(spec)
    if isinstance(obj, SagaRegistry):
        return obj
    if isinstance(obj, type) and issubclass(obj, Saga):
        return SagaRegistry([obj])
    if (
        isinstance(obj, list | tuple)
        and obj
        and all(isinstance(i, type) and issubclass(i, Saga) for i in obj)
    ):
        return SagaRegistry(list(obj))
    registry = getattr(obj, "registry", None)
    if isinstance(registry, SagaRegistry):
        return registry
    raise ConfigError(
        f"--app {spec!r} is a {type(obj).__name__}, not a SagaRegistry or Saga classes"
    )


def describe_validation(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line: which fields of ``model`` are wrong, and why."""
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "(the whole value)"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return f"does not fit {model.__name__}: " + "; ".join(problems) + more


def parse_data(text: str, model: type[BaseModel], option: str = "--data") -> BaseModel:
    """Validate ``text`` (JSON) as ``model``; one clear line when it is not."""
    try:
        json.loads(text)  # a JSON syntax error gets its own message
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{option} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            f"""quote it for the shell, e.g. {option} '{{"name": "Ada"}}'"""
        ) from None
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        fields = ", ".join(model.model_fields) or "no fields"
        raise ConfigError(
            f"{option} {describe_validation(exc, model)} (fields of {model.__name__}: {fields})"
        ) from None
