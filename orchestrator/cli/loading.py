"""A user's ``--app`` and ``--data`` as objects, with one clear line when they are wrong."""

from __future__ import annotations

import importlib
import json
from typing import Any

from pydantic import BaseModel, ValidationError

from sagaline.orchestrator.core.errors import ConfigError
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.saga import Saga

__all__ = ["describe_validation", "load_app_object", "load_registry", "parse_data"]


def load_app_object(spec: str, option: str = "--app") -> Any:
    """Import ``module:attribute`` (a zero-argument function is called)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"{option} expects module:attribute (e.g. myapp.sagas:registry), got {spec!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"{option} {spec!r}: no module named {exc.name!r}; run from the folder that holds "
            "it or add that folder to PYTHONPATH"
        ) from exc
    try:
        obj: Any = getattr(module, attr)
    except AttributeError:
        raise ConfigError(
            f"{option} {spec!r}: module {module_name!r} has no attribute {attr!r}"
        ) from None
    if callable(obj) and not isinstance(obj, type) and not hasattr(obj, "decide"):
        obj = obj()
    return obj


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
