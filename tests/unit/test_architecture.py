"""Import rules from docs/architecture.md, checked on the source with ``ast``.

* The pure core imports no Kafka, PostgreSQL or OpenTelemetry client.
* Dependency direction: schemas <- orchestrator <- consumers <- sagas.
  ``orchestrator.cli`` is the composition root and may load everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
INFRA_CLIENTS = ("confluent_kafka", "psycopg", "psycopg_pool", "opentelemetry")
CORE_MODULES = (
    "orchestrator/saga.py",
    "orchestrator/policies.py",
    "orchestrator/decider.py",
    "orchestrator/fold.py",
    "orchestrator/journal.py",
    "orchestrator/registry.py",
    "orchestrator/context.py",
    "orchestrator/testing.py",
    "orchestrator/diagram.py",
    "orchestrator/errors.py",
    "orchestrator/validation.py",
    "orchestrator/payloads.py",
    "orchestrator/agents.py",
    "orchestrator/decider_base.py",
    "orchestrator/decider_agents.py",
    "orchestrator/timeline.py",
)
FORBIDDEN_PACKAGES = {
    "schemas": ("orchestrator", "consumers", "sagas"),
    "orchestrator": ("consumers", "sagas"),
    "consumers": ("sagas",),
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _top(name: str) -> str:
    return name.split(".", 1)[0]


@pytest.mark.parametrize("relpath", CORE_MODULES)
def test_pure_core_imports_no_infrastructure_client(relpath: str) -> None:
    path = ROOT / relpath
    assert path.is_file(), f"{relpath} is listed as pure core but does not exist"
    bad = sorted(m for m in imported_modules(path) if _top(m) in INFRA_CLIENTS)
    assert bad == [], f"{relpath} imports {bad}"


@pytest.mark.parametrize("package", sorted(FORBIDDEN_PACKAGES))
def test_dependency_direction(package: str) -> None:
    offenders: list[str] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("orchestrator/cli/"):
            continue  # the composition root
        for module in imported_modules(path):
            if _top(module) in FORBIDDEN_PACKAGES[package]:
                offenders.append(f"{rel} imports {module}")
    assert offenders == []
