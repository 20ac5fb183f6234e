"""Settings: file + env precedence, unknown keys named, secrets from *_file, generated docs in sync."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailflow import configdoc
from mailflow.config import load_settings
from mailflow.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[smtp]\nhost = "relay.example.org"\nport = 587\n')
    monkeypatch.setenv("MAILFLOW_SMTP__PORT", "2525")
    s = load_settings(cfg)
    assert (s.smtp.host, s.smtp.port) == ("relay.example.org", 2525)


def test_unknown_key_and_bad_value_are_named(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[smtp]\nprot = 25\n[calendar]\nwindow_days = [9]\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert "unknown setting 'smtp.prot'" in str(err.value)
    assert "setting 'calendar.window_days'" in str(err.value)


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[smtp\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(cfg)


def test_secrets_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    monkeypatch.setenv("MAILFLOW_SMTP__PASSWORD_FILE", str(tmp_path / "pw"))
    monkeypatch.setenv("MAILFLOW_SECURITY__SECRET_FILE", str(tmp_path / "pw"))
    s = load_settings(None)
    assert s.smtp.password is not None and s.smtp.password.get_secret_value() == "s3cret"
    assert s.token_secrets()[0] == b"s3cret"
    assert "s3cret" not in repr(s)


def test_settings_are_frozen() -> None:
    s = load_settings(None)
    with pytest.raises(Exception):  # noqa: B017
        s.smtp.port = 1  # type: ignore[misc]


def test_policy_from_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[calendar]\nwindow_start = "09:00"\nreminder_days = [5, 10]\n')
    p = load_settings(cfg).policy()
    assert p.window_start.hour == 9 and p.reminder_days == (5, 10)


def test_generated_config_and_reference_match_the_model() -> None:
    assert (ROOT / "config" / "mailflow.toml").read_text(encoding="utf-8") == configdoc.render_toml()
    assert (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8") == configdoc.render_markdown()
    load_settings(ROOT / "config" / "mailflow.toml")
