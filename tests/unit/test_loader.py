"""The one ``module:attribute`` loader behind --app, --codec and --sagas."""

from __future__ import annotations

import sys
import types

import pytest

from sagaline.orchestrator.core.errors import ConfigError, SagalineError
from sagaline.orchestrator.runtime.loader import LoadError, load_object

pytestmark = pytest.mark.unit


class _Logic:
    def decide(self) -> None:
        return None


@pytest.fixture
def module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    mod = types.ModuleType("loader_test_app")
    mod.VALUE = 42  # type: ignore[attr-defined]
    mod.factory = lambda: ["built"]  # type: ignore[attr-defined]
    mod.logic = _Logic()  # type: ignore[attr-defined]
    mod.nested = types.SimpleNamespace(inner="deep")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "loader_test_app", mod)
    return mod


def test_loads_attributes_and_calls_factories_only_when_asked(module: types.ModuleType) -> None:
    assert load_object("loader_test_app:VALUE") == 42
    assert load_object("loader_test_app:nested.inner") == "deep"
    assert load_object("loader_test_app:factory") is module.factory
    assert load_object("loader_test_app:factory", call_unless="decide") == ["built"]
    # an object that has the named attribute is used as it is, not called
    assert load_object("loader_test_app:logic", call_unless="decide") is module.logic


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-colon", "--app expects module:attribute (e.g. myapp.sagas:registry), got 'no-colon'"),
        (":VALUE", "--app expects module:attribute"),
        (
            "no_such_module_x:thing",
            "--app 'no_such_module_x:thing': no module named 'no_such_module_x'; run from the "
            "folder that holds it or add that folder to PYTHONPATH",
        ),
        (
            "loader_test_app:missing",
            "--app 'loader_test_app:missing': module 'loader_test_app' has no attribute 'missing'",
        ),
    ],
)
def test_one_clear_line_per_mistake(module: types.ModuleType, spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_object(spec, option="--app", error=ConfigError)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_default_error_is_a_sagaline_error() -> None:
    with pytest.raises(LoadError, match="--sagas expects module:attribute"):
        load_object("nothing", option="--sagas")
    assert issubclass(LoadError, SagalineError)
