"""The house's shape: import contracts, module and function sizes, the package list.

The one-way arrows between the parts are import-linter contracts in
``pyproject.toml`` (``[tool.importlinter]``); ``make test`` runs ``lint-imports``
and this test runs it too, so that a plain ``pytest`` catches a broken arrow.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("orchestrator", "schemas", "consumers", "sagas")
MAX_MODULE_LINES = 600


def _lint_imports() -> str:
    found = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    assert Path(found).exists(), "import-linter is part of the dev dependencies"
    return found


def test_import_contracts_hold() -> None:
    result = subprocess.run(
        [_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_contracts_cover_the_core_the_schemas_and_the_command_line() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    forbidden: dict[str, set[str]] = {}
    for contract in contracts:
        if contract["type"] == "forbidden":
            for source in contract["source_modules"]:
                forbidden.setdefault(source, set()).update(contract["forbidden_modules"])
    assert {"confluent_kafka", "psycopg"} <= forbidden["sagaline.orchestrator.core"]
    assert "sagaline.orchestrator" in forbidden["sagaline.schemas"]
    assert "sagaline.consumers" in forbidden["sagaline.orchestrator.runtime"]
    assert all(
        "sagaline.orchestrator.cli" in forbidden[s]
        for s in ("sagaline.consumers", "sagaline.orchestrator.core", "sagaline.sagas")
    )


def _product_files() -> list[Path]:
    files = [ROOT / "__init__.py"]
    for package in PRODUCT:
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def test_no_product_module_over_600_lines() -> None:
    long = {
        f.relative_to(ROOT).as_posix(): n
        for f in _product_files()
        if (n := len(f.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_every_package_folder_is_installed() -> None:
    """pyproject lists packages by hand (the root maps to ``sagaline``): none may be missing."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    on_disk = {"sagaline"}
    for package in PRODUCT:
        for init in (ROOT / package).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT).as_posix().replace("/", ".")
            on_disk.add(f"sagaline.{rel}")
    assert listed == on_disk


def test_no_top_level_import_outside_the_namespace() -> None:
    """Every import of our own code goes through ``sagaline.``."""
    offenders: list[str] = []
    for path in _product_files() + sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [
                f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in PRODUCT
            ]
    assert offenders == []


MAX_FUNCTION_LINES = 60


def test_no_product_function_over_60_lines() -> None:
    long: list[str] = []
    for path in _product_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert long == []
