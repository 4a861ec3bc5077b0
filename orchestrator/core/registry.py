"""Which definition runs which saga: (type name, version) -> saga class."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sagaline.orchestrator.core.errors import SagaDefinitionError, UnknownSagaType
from sagaline.orchestrator.core.saga import Saga

__all__ = ["SagaRegistry"]


class SagaRegistry:
    """An explicit catalogue of saga definitions (no import-time global registry).

    In-flight sagas keep the version they started with: register every
    version that may still have running sagas.
    """

    def __init__(self, definitions: Iterable[type[Saga[Any]]] = ()) -> None:
        self._by_key: dict[tuple[str, int], type[Saga[Any]]] = {}
        for definition in definitions:
            self.add(definition)

    def add(self, definition: type[Saga[Any]]) -> None:
        """Register ``definition`` (another class with the same name and version is an error)."""
        key = (definition.type_name, definition.version)
        existing = self._by_key.get(key)
        if existing is not None and existing is not definition:
            raise SagaDefinitionError(
                f"two definitions for saga type {key[0]!r} version {key[1]}: "
                f"{existing.__qualname__} and {definition.__qualname__}"
            )
        self._by_key[key] = definition

    def get(self, type_name: str, version: int | None = None) -> type[Saga[Any]]:
        """The definition of ``type_name`` at ``version`` (``None``: the latest)."""
        if version is None:
            return self.latest(type_name)
        try:
            return self._by_key[(type_name, version)]
        except KeyError:
            known = ", ".join(f"{n} v{v}" for n, v in sorted(self._by_key)) or "none"
            raise UnknownSagaType(
                f"no saga definition {type_name!r} version {version} (registered: {known})"
            ) from None

    def latest(self, type_name: str) -> type[Saga[Any]]:
        """The highest registered version of ``type_name``."""
        versions = [v for (n, v) in self._by_key if n == type_name]
        if not versions:
            known = ", ".join(sorted({n for n, _ in self._by_key})) or "none"
            raise UnknownSagaType(f"no saga definition {type_name!r} (registered: {known})")
        return self._by_key[(type_name, max(versions))]

    def __iter__(self) -> Iterator[type[Saga[Any]]]:
        return iter(self._by_key[k] for k in sorted(self._by_key))

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, tuple):
            return item in self._by_key
        if isinstance(item, str):
            return any(n == item for n, _ in self._by_key)
        return any(d is item for d in self._by_key.values())
