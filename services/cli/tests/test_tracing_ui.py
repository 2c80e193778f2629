"""The tracing UI (Phoenix) starts without logging its schema migrations' SQL (~4,800 lines)."""

from __future__ import annotations

from pathlib import Path

import pytest

from costwise.cli._up import _tracing_ui


def test_phoenix_is_told_not_to_echo_its_sql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV", "/usr/bin/true")
    monkeypatch.delenv("PHOENIX_LOG_MIGRATIONS", raising=False)
    monkeypatch.delenv("PHOENIX_DB_LOGGING_LEVEL", raising=False)
    spec = _tracing_ui(6006, tmp_path, tmp_path)
    assert spec is not None
    assert spec.env["PHOENIX_LOG_MIGRATIONS"] == "false"
    assert spec.env["PHOENIX_DB_LOGGING_LEVEL"] == "warning"
    assert spec.env["PHOENIX_PORT"] == "6006"


def test_a_users_phoenix_logging_setting_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV", "/usr/bin/true")
    monkeypatch.setenv("PHOENIX_LOG_MIGRATIONS", "true")
    spec = _tracing_ui(6006, tmp_path, tmp_path)
    assert spec is not None
    assert spec.env["PHOENIX_LOG_MIGRATIONS"] == "true"
