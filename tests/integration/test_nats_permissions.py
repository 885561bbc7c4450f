"""The dev nats-server (deploy/nats/dev.conf) holds every user to the cluster's permissions: nobody but the admin
can create, update, delete or purge a stream, another local process cannot connect without a password, and the
API's and the workers' users can still do all their work."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.js.api import StreamConfig
from nats.js.errors import APIError

from devstack.servers import NatsServer, free_port
from devstack.stack import NATS_USERS, nats_passwords, nats_server_env
from events.audit import scan
from events.config import NatsSettings, connect
from events.personal import Vault
from events.store import EventStore
from events.streams import ensure_streams
from events.subjects import Naming
from tests.builders import deal_opened, envelope

pytestmark = pytest.mark.integration

DEV_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "dev.conf"
NAMING = Naming()  # the permissions name the default prefix's subjects


@dataclasses.dataclass
class DevNats:
    server: NatsServer
    passwords: dict[str, str]

    def settings(self, user: str) -> NatsSettings:
        return NatsSettings(
            servers=(self.server.url,), naming=NAMING, user=user, password=self.passwords[user], publish_timeout=1.0
        )


@pytest.fixture
async def dev_nats(tmp_path: Path) -> AsyncIterator[DevNats]:
    passwords = nats_passwords(tmp_path / "secrets")
    server = NatsServer(
        tmp_path / "nats", config=DEV_CONF, monitor_port=free_port(), env=nats_server_env(passwords)
    ).start()
    try:
        dev = DevNats(server, passwords)
        nc, js = await connect(dev.settings("admin"), "test-admin")
        try:
            await ensure_streams(js, NAMING, dev.settings("admin").streams)
        finally:
            await nc.close()
        yield dev
    finally:
        server.stop()


async def _as(dev: DevNats, user: str) -> tuple[Any, Any, asyncio.Queue[str]]:
    errors: asyncio.Queue[str] = asyncio.Queue()

    async def on_error(exc: Exception) -> None:
        await errors.put(str(exc).lower())

    settings = dev.settings(user)
    nc = await nats.connect(
        settings.servers[0], user=user, password=settings.password, error_cb=on_error, allow_reconnect=False
    )
    return nc, nc.jetstream(timeout=1.0), errors


async def _refused(errors: asyncio.Queue[str], attempt: Any) -> None:
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError, APIError)):
        await attempt
    assert "permissions violation for publish" in await asyncio.wait_for(errors.get(), 10)


@pytest.mark.parametrize("user", ["api", "worker", "integration"])
async def test_only_the_admin_may_change_a_stream(dev_nats: DevNats, user: str) -> None:
    """The issue's attack: a stream update to max_msgs_per_subject=1 (which dropped 44 events), a stream delete."""
    admin_nc, admin_js, _ = await _as(dev_nats, "admin")
    nc, js, errors = await _as(dev_nats, user)
    try:
        before = (await admin_js.stream_info(NAMING.events_stream)).config
        attacked = dataclasses.replace(before, max_msgs_per_subject=1)
        await _refused(errors, js.update_stream(attacked))
        await _refused(errors, js.delete_stream(NAMING.events_stream))
        await _refused(errors, js.purge_stream(NAMING.dead_letter_stream))
        await _refused(errors, js.add_stream(StreamConfig(name="STOLEN", subjects=["stolen.>"])))
        after = (await admin_js.stream_info(NAMING.events_stream)).config
        assert after.max_msgs_per_subject == -1 and after == before
        assert "STOLEN" not in [i.config.name for i in await admin_js.streams_info()]
        # The admin may (and `dealstream streams` puts it back).
        await admin_js.update_stream(attacked)
        await ensure_streams(admin_js, NAMING, dev_nats.settings("admin").streams)
        assert (await admin_js.stream_info(NAMING.events_stream)).config.max_msgs_per_subject == -1
    finally:
        await nc.close()
        await admin_nc.close()


async def test_another_local_process_cannot_connect_without_a_password(dev_nats: DevNats) -> None:
    async def ignore(_: Exception) -> None:
        return None

    for user, password in [(None, None), ("api", "guessed"), ("admin", dev_nats.passwords["api"])]:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(
                dev_nats.server.url, user=user, password=password, allow_reconnect=False, error_cb=ignore
            )
    assert sorted(dev_nats.passwords) == sorted(NATS_USERS)


async def test_the_api_and_worker_users_can_do_their_work(dev_nats: DevNats) -> None:
    """What the API does as `api` (append, read, lead keys made and erased, the log scanned) and a worker as
    `worker` (a durable pull consumer, acks, key reads), with no permissions violation."""
    nc, js, errors = await _as(dev_nats, "api")
    wnc, wjs, worker_errors = await _as(dev_nats, "worker")
    try:
        store = EventStore(nc, js, NAMING)
        [appended] = await store.append([envelope(deal_opened(), aggregate_id="perm-deal")], expected_version=0)
        assert [s.sequence for s in await store.read("deal", "perm-deal")] == [appended.sequence]
        vault = Vault(js, NAMING)
        key = await vault.key("perm-lead", create=True)
        assert key is not None and await Vault(wjs, NAMING).key("perm-lead") == key
        assert await vault.erase("perm-lead") is True and await vault.key("perm-lead") is None
        assert [m.sequence async for m in scan(js, NAMING.events_stream)] == [appended.sequence]
        sub = await wjs.pull_subscribe(NAMING.all_events, durable="perm-board", stream=NAMING.events_stream)
        [msg] = await sub.fetch(1, timeout=5)
        await msg.ack_sync()
        await wjs.delete_consumer(NAMING.events_stream, "perm-board")
        worker_store = EventStore(wnc, wjs, NAMING)
        await worker_store.append([envelope(deal_opened(), aggregate_id="perm-deal-2")], expected_version=0)
        assert errors.empty() and worker_errors.empty()
    finally:
        await wnc.close()
        await nc.close()
