"""One settings object, read from the environment where a process starts; nothing below reads it again."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from events.config import NatsSettings
from services.config import settings_from_env
from workers.engine import EngineSettings
from workers.settings import MissingSetting, Secrets, Settings

ROOT = Path(__file__).parents[2]

ENV = {
    "DEALSTREAM_NATS_URL": "nats://a:4222, nats://b:4222",
    "DEALSTREAM_PREFIX": "acme",
    "DEALSTREAM_NATS_USER": "worker",
    "DEALSTREAM_NATS_PASSWORD": "hunter2-nats",
    "DEALSTREAM_ENGINE_BATCH": "50",
    "DATABASE_URL": "postgresql://db/dealstream",
    "DEALSTREAM_RULES": "deploy/sales.toml",
    "DEALSTREAM_ENGINE_INSTANCE": "r1",
    "DEALSTREAM_CONFIG": str(ROOT / "deploy" / "dev.toml"),
    "DEALSTREAM_HOST": "0.0.0.0",
    "DEALSTREAM_PORT": "9090",
    "DEALSTREAM_EVENT_LOOP": " AsyncIO ",
    "DEALSTREAM_LOG_FORMAT": "json",
    "DEALSTREAM_LOG_LEVEL": "debug",
    "DEALSTREAM_NOTIFY_SECRET": "hunter2-webhook",
}


def test_every_variable_lands_in_its_setting() -> None:
    s = Settings.from_env(ENV)
    assert s.nats == NatsSettings.from_env(ENV) and s.nats.servers == ("nats://a:4222", "nats://b:4222")
    assert s.engine == EngineSettings(batch_size=50)
    assert (s.database_url, s.rules_path, s.instance) == ("postgresql://db/dealstream", "deploy/sales.toml", "r1")
    assert (s.host, s.port, s.event_loop) == ("0.0.0.0", 9090, "asyncio")
    assert (s.log_format, s.log_level) == ("json", "debug")
    assert s.secrets.get("DEALSTREAM_NOTIFY_SECRET") == "hunter2-webhook" and s.secrets.get(None) == ""


def test_an_empty_environment_gives_the_defaults() -> None:
    s = Settings.from_env({})
    assert s == Settings(secrets=Secrets({}))
    assert s.nats == NatsSettings() and s.engine == EngineSettings() and s.event_loop == "uvloop"
    with pytest.raises(MissingSetting, match="DATABASE_URL"):
        s.require_database_url()
    assert s.read_rules() == ("", "")


def test_a_bad_variable_is_named() -> None:
    with pytest.raises(ValueError, match="DEALSTREAM_EVENT_LOOP"):
        Settings.from_env({"DEALSTREAM_EVENT_LOOP": "trio"})


def test_no_secret_shows_in_the_settings_repr() -> None:
    shown = repr(Settings.from_env(ENV))
    assert "hunter2" not in shown and "Secrets(" in shown


def test_the_rules_file_is_read_where_named() -> None:
    text, path = Settings(rules_path=str(ROOT / "deploy" / "sales.toml")).read_rules()
    assert "[scoring]" in text and path == str((ROOT / "deploy" / "sales.toml").resolve())


def test_the_api_settings_are_the_process_settings_api_part() -> None:
    api = settings_from_env(ENV)
    process = Settings.from_env(ENV)
    assert api.nats == process.nats and api.database_url == process.database_url
    assert (api.host, api.port) == ("0.0.0.0", 9090) and api.config.api_keys


def _reads_environment_or_files(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "read_text", "read_bytes"}:
            found.append(f"{path.parent.name}/{path.name}:{node.lineno} .{node.attr}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
            found.append(f"{path.parent.name}/{path.name}:{node.lineno} open()")
        if isinstance(node, ast.Attribute) and node.attr == "load" and getattr(node.value, "id", "") == "tomllib":
            found.append(f"{path.parent.name}/{path.name}:{node.lineno} tomllib.load")
    return found


def test_only_the_settings_module_reads_the_environment_or_the_rules_file() -> None:
    """events/, projections/ and workers/ take what they need from Settings (workers/settings.py)."""
    allowed = {ROOT / "workers" / "settings.py"}
    modules = sorted(p for layer in ("events", "projections", "workers") for p in (ROOT / layer).rglob("*.py"))
    offenders = [hit for path in modules if path not in allowed for hit in _reads_environment_or_files(path)]
    assert offenders == []


def test_the_guard_sees_an_environment_read_and_a_file_opened(tmp_path: Path) -> None:
    sneaky = tmp_path / "workers" / "sneaky.py"
    sneaky.parent.mkdir()
    sneaky.write_text("import os\nURL = os.environ.get('DATABASE_URL')\nTEXT = open('rules.toml').read()\n")
    assert _reads_environment_or_files(sneaky) == ["workers/sneaky.py:2 .environ", "workers/sneaky.py:3 open()"]
