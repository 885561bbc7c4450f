"""Only the administrator changes the log: the API and the workers check the streams at start and refuse to run
on drift, naming each field and the way out; they never change a stream. ``dealstream streams`` (the
administrator's command) restores them, but does not weaken them unless told."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from nats.js import JetStreamContext

from events.config import NatsSettings
from events.streams import StreamsNotReady, WeakeningRefused, ensure_streams
from services.api.app import create_app
from services.config import Settings
from tests.conftest import api_config
from workers.intake import main as intake
from workers.registry import serve_worker

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "services.cli"]


async def _refusal(settings: NatsSettings) -> StreamsNotReady:
    """What the API's start raised (the test client hands it over inside an exception group)."""
    try:
        async with AsyncTestClient(create_app(Settings(nats=settings, config=api_config()))):
            pass
    except BaseException as exc:
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        assert isinstance(exc, StreamsNotReady), repr(exc)
        return exc
    raise AssertionError("the API started")


async def _attack(js: JetStreamContext, stream: str, **changes: Any) -> None:
    """What the issue saw accepted: a stream update, here made with full rights to set the scene."""
    config = (await js.stream_info(stream)).config
    await js.update_stream(dataclasses.replace(config, **changes))


async def test_a_drifted_log_stops_the_api_before_it_serves_naming_the_field(
    nats_conn: tuple[Any, JetStreamContext], nats_settings: NatsSettings
) -> None:
    _, js = nats_conn
    events = nats_settings.naming.events_stream
    await _attack(js, events, max_msgs_per_subject=1)
    message = str(await _refusal(nats_settings))
    assert f"{events}.max_msgs_per_subject is 1, expected -1" in message
    assert "dealstream streams" in message
    # Refused, not "fixed": the API changed nothing.
    assert (await js.stream_info(events)).config.max_msgs_per_subject == 1


async def test_missing_streams_stop_the_api_and_it_makes_none(
    nats_conn: tuple[Any, JetStreamContext], nats_settings: NatsSettings
) -> None:
    _, js = nats_conn
    naming = dataclasses.replace(nats_settings.naming, prefix=f"{nats_settings.naming.prefix}none")
    settings = dataclasses.replace(nats_settings, naming=naming)
    message = str(await _refusal(settings))
    assert f"{naming.events_stream} is missing" in message and "dealstream streams" in message
    assert not [i for i in await js.streams_info() if naming.prefix.upper() in (i.config.name or "")]


async def test_a_drifted_log_stops_every_worker_naming_the_field(
    nats_conn: tuple[Any, JetStreamContext], nats_settings: NatsSettings, pg_dsn: str
) -> None:
    _, js = nats_conn
    events = nats_settings.naming.events_stream
    await _attack(js, events, max_age=3600.0)  # events older than an hour would be dropped
    for name in ("board", "sla"):
        with pytest.raises(StreamsNotReady, match=rf"{events}\.max_age is 3600, expected 0"):
            await asyncio.wait_for(serve_worker(name, "0/1", nats_settings, pg_dsn, stop=asyncio.Event()), 60)
    with pytest.raises(StreamsNotReady, match=rf"{events}\.max_age is 3600, expected 0"):
        await asyncio.wait_for(intake(nats_settings), 60)
    assert (await js.stream_info(events)).config.max_age == 3600.0


async def test_a_worker_process_exits_with_the_drift_in_its_log(
    nats_conn: tuple[Any, JetStreamContext], nats_settings: NatsSettings, pg_dsn: str, nats_url: str
) -> None:
    _, js = nats_conn
    dlq = nats_settings.naming.dead_letter_stream
    await _attack(js, dlq, max_age=3600.0)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DEALSTREAM_")},
        "DEALSTREAM_NATS_URL": nats_url,
        "DEALSTREAM_PREFIX": nats_settings.naming.prefix,
        "DATABASE_URL": pg_dsn,
        "DEALSTREAM_LOG_FORMAT": "json",
    }
    for worker in ("velocity", "intake"):
        done = await asyncio.to_thread(
            subprocess.run, [*CLI, "worker", worker], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 3, done.stdout + done.stderr
        assert "worker.refused" in done.stderr and f"{dlq}.max_age is 3600, expected 7776000" in done.stderr


async def test_dealstream_streams_restores_the_log_and_check_names_the_drift(
    nats_conn: tuple[Any, JetStreamContext], nats_settings: NatsSettings, nats_url: str
) -> None:
    _, js = nats_conn
    events = nats_settings.naming.events_stream
    await _attack(js, events, max_msgs_per_subject=1)
    env = {**os.environ, "DEALSTREAM_NATS_URL": nats_url, "DEALSTREAM_PREFIX": nats_settings.naming.prefix}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "streams", *args], env=env, capture_output=True, text=True, timeout=60)

    checked = await asyncio.to_thread(cli, "--check")
    assert checked.returncode == 1 and f"{events}.max_msgs_per_subject is 1, expected -1" in checked.stderr
    assert (await js.stream_info(events)).config.max_msgs_per_subject == 1  # --check changes nothing
    fixed = await asyncio.to_thread(cli)
    assert fixed.returncode == 0, fixed.stderr
    assert (await js.stream_info(events)).config.max_msgs_per_subject == -1
    assert (await asyncio.to_thread(cli, "--check")).returncode == 0


async def test_dealstream_streams_does_not_weaken_a_stream_unless_told(
    nats_conn: tuple[Any, JetStreamContext], nats_settings: NatsSettings
) -> None:
    """(The server itself never lifts deny_delete or deny_purge; fewer replicas is checked on the cluster in
    test_deploy.) Allowing rollups, which purge a subject, is a weakening too."""
    _, js = nats_conn
    keys = nats_settings.naming.lead_keys_stream
    await _attack(js, keys, allow_rollup_hdrs=False)
    with pytest.raises(WeakeningRefused, match=rf"{keys}\.allow_rollup_hdrs False -> True.*--allow-weaker"):
        await ensure_streams(js, nats_settings.naming, nats_settings.streams)
    assert (await js.stream_info(keys)).config.allow_rollup_hdrs is False
    await ensure_streams(js, nats_settings.naming, nats_settings.streams, allow_weaker=True)
    assert (await js.stream_info(keys)).config.allow_rollup_hdrs is True
