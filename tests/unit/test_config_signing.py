"""``sagaline config`` shows whether records are signed and the keyring, never a key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sagaline.orchestrator.cli.main import main
from sagaline.orchestrator.runtime.signing import create_key

pytestmark = pytest.mark.unit


def test_config_shows_signing_and_the_keyring_but_not_the_private_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAGALINE_DEV_ENV", str(tmp_path / "none.env"))
    keys = tmp_path / "ring"
    private, _, _ = create_key(keys, "ops")
    monkeypatch.setenv("SAGALINE_SIGNING", "true")
    monkeypatch.setenv("SAGALINE_KEYS_DIR", str(keys))
    monkeypatch.setenv("SAGALINE_SIGNING_KEY", str(private))
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "SAGALINE_SIGNING = True" in out
    assert f"SAGALINE_KEYS_DIR = {keys}" in out
    assert "SAGALINE_SIGNING_KEY = (set; its path is not shown)" in out
    assert str(private) not in out and "PRIVATE KEY" not in out
    # no keyring setting: the default one beside the dev file is named
    monkeypatch.delenv("SAGALINE_KEYS_DIR")
    monkeypatch.delenv("SAGALINE_SIGNING_KEY")
    monkeypatch.setenv("SAGALINE_SIGNING", "false")
    assert main(["config", "--json"]) == 0
    out = capsys.readouterr().out
    assert f'"SAGALINE_KEYS_DIR": "{tmp_path / "keys"}"' in out
    assert '"SAGALINE_SIGNING": false' in out
