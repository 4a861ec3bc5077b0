"""Start-up cost: what importing sagaline and starting a command loads.

A replacement orchestrator, worker or relay must get through its imports
quickly (issue #11 goal 6: in-flight sagas move within 1 s of its start), so
the public face and the command line load only what the command run uses.
Each check runs a fresh interpreter and looks at ``sys.modules``: a real
regression test of what is imported, not a timing.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import sagaline
from sagaline.orchestrator.runtime import kafka_config

pytestmark = pytest.mark.unit

# the module (``sagaline.orchestrator.cli.main`` is also the name of its function)
cli_main = importlib.import_module("sagaline.orchestrator.cli.main")

#: the I/O and settings libraries: none of them for ``import sagaline`` or the CLI's entry
HEAVY = ("psycopg", "confluent_kafka", "pydantic_settings")
#: the web console (Starlette, Jinja, argon2's hashing at import): only ``sagaline ui``
CONSOLE = ("starlette", "jinja2", "argon2", "sagaline.orchestrator.console.app")


def _loaded_after(code: str, watched: tuple[str, ...]) -> list[str]:
    """The modules of ``watched`` present in ``sys.modules`` after running ``code``."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {watched!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


def test_import_sagaline_loads_no_kafka_postgres_or_settings() -> None:
    assert _loaded_after("import sagaline", (*HEAVY, "pydantic")) == []


def test_the_command_line_entry_loads_no_kafka_postgres_or_settings() -> None:
    assert _loaded_after("import sagaline.orchestrator.cli.main", (*HEAVY, *CONSOLE)) == []


def test_defining_sagas_loads_no_kafka_or_postgres() -> None:
    code = "from sagaline import Saga, step, approval, StepContext, SagaRegistry"
    assert _loaded_after(code, HEAVY) == []


@pytest.mark.parametrize("command", [["orchestrator", "run"], ["worker", "run"], ["relay", "run"]])
def test_a_process_command_does_not_load_the_web_console(command: list[str]) -> None:
    code = (
        "from sagaline.orchestrator.cli.main import build_parser\n"
        f"build_parser({command[0]!r}).parse_args({[*command, '--help']!r})"
    )
    # --help exits after parsing: catch it so that the probe still prints
    code = f"try:\n    {code.replace(chr(10), chr(10) + '    ')}\nexcept SystemExit:\n    pass"
    assert _loaded_after(code, CONSOLE) == []


def test_the_relay_does_not_load_the_worker_or_the_saga_core() -> None:
    code = "from sagaline.orchestrator.cli.main import build_parser\nbuild_parser('relay')"
    watched = ("sagaline.consumers.worker", "sagaline.orchestrator.core.saga")
    assert _loaded_after(code, watched) == []


def test_the_public_face_resolves_every_name_it_exports() -> None:
    for name in sagaline.__all__:
        assert getattr(sagaline, name) is not None, name
    assert set(sagaline.__all__) <= set(dir(sagaline))
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        sagaline.NoSuchName  # noqa: B018


def test_each_command_parses_the_same_from_its_own_modules() -> None:
    """:data:`COMMANDS` names the modules of every command: the parser built from
    them alone shows the same help as the one built from every command module."""
    full = cli_main.build_parser()
    choices = full._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(cli_main.COMMANDS) == set(choices)
    assert {m for ms in cli_main.COMMANDS.values() for m in ms} == set(cli_main.COMMAND_MODULES)
    for name, sub in choices.items():
        alone = cli_main.build_parser(name)
        alone_sub = alone._subparsers._group_actions[0].choices[name]  # type: ignore[union-attr]
        assert alone_sub.format_help() == sub.format_help(), name


def test_the_log_level_variable_is_the_kafka_configs() -> None:
    assert cli_main.LOG_LEVEL_ENV == kafka_config.LOG_LEVEL_ENV
