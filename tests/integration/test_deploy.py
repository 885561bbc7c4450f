"""deploy/: the NATS configurations, the compose file and the example API config, checked without Docker.

Every nats-server config is parsed by the real server (it rejects unknown keys); the three-node cluster
is started from its own files on loopback and must keep taking appends after its stream leader is killed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import urllib.request
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.errors
import pytest
import yaml  # type: ignore[import-untyped]
from nats.js.api import StreamConfig
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError, ServiceUnavailableError

from devstack.servers import free_port, nats_server_binary, wait_for_port
from devstack.stack import nats_passwords, nats_server_env
from events.anchors import Anchorer, stored_anchors
from events.config import NatsSettings, connect
from events.envelope import Envelope
from events.personal import Vault
from events.signing import new_signing_key
from events.store import EventStore, StoreUnavailable
from events.streams import StreamSettings, StreamsNotReady, WeakeningRefused, ensure_streams, require_streams
from events.subjects import Naming
from services.config import SCOPES, load_config
from tests.builders import deal_opened, envelope, stage_changed
from tests.deploy_helpers import (
    CLUSTER_CONFIGS,
    DEPLOY,
    NODES,
    USERS,
    LoopbackCluster,
    password_env,
    server_name,
)

pytestmark = pytest.mark.integration

T = TypeVar("T")
WORKERS = ("board", "velocity", "scores", "sla", "notify", "intake", "compliance", "lead_records", "people", "tasks")
NATS_CONFIGS = sorted(DEPLOY.glob("nats/**/*.conf"))
COMPOSE = DEPLOY / "compose.yaml"
PRODUCTION_TOML = DEPLOY / "production.toml"
# Failures that mean "not yet": the cluster is still electing leaders or a client is reconnecting.
NOT_YET = (
    StoreUnavailable,
    ServiceUnavailableError,
    NoStreamResponseError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
)


def dummy_passwords() -> dict[str, str]:
    return {user: f"{user}-test-password" for user in USERS}


def nats_test(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``nats-server -t``: parse and validate, start nothing."""
    return subprocess.run(
        [nats_server_binary(), *args, "-t", "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


async def until(attempt: Callable[[], Awaitable[T]], retry_on: tuple[type[BaseException], ...], within: float) -> T:
    """Call ``attempt`` until it stops raising ``retry_on``; after ``within`` seconds the last error is raised."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await attempt()
        except retry_on:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


# --- configuration files -------------------------------------------------------------------------------


def test_the_expected_nats_configs_exist() -> None:
    names = {p.relative_to(DEPLOY / "nats").as_posix() for p in NATS_CONFIGS}
    assert {"dev.conf", "cluster/node-1.conf", "cluster/node-2.conf", "cluster/node-3.conf"} <= names


@pytest.mark.parametrize("config", NATS_CONFIGS, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_nats_config_parses(config: Path) -> None:
    result = nats_test(config, env={**os.environ, **password_env(dummy_passwords())})
    assert result.returncode == 0, result.stderr


def test_cluster_config_refuses_to_start_without_its_passwords() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEALSTREAM_NATS_")}
    result = nats_test(CLUSTER_CONFIGS / "node-1.conf", env=env)
    assert result.returncode != 0
    assert "DEALSTREAM_NATS_" in result.stderr


def test_dev_config_starts_the_way_the_dev_stack_starts_it(tmp_path: Path) -> None:
    """devstack/stack.py's command line (NatsServer): -p, -m and -sd come from the dev stack's options, the
    users' passwords from its environment."""
    port, monitor = free_port(), free_port()
    args = ["-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "nats"), "-n", "dealstream-dev"]
    config = ["-c", str(DEPLOY / "nats" / "dev.conf"), "-m", str(monitor)]
    env = nats_server_env(nats_passwords(tmp_path / "secrets"))
    proc = subprocess.Popen(
        [nats_server_binary(), *args, *config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    try:
        wait_for_port(port, 15, proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/varz", timeout=5) as response:
            varz = json.load(response)
        assert varz["port"] == port
        assert varz["max_payload"] == 2 * 1024 * 1024
        assert varz["jetstream"]["config"]["store_dir"] == str(tmp_path / "nats" / "jetstream")
        assert varz["http_port"] == monitor and varz["auth_required"] is True
    finally:
        proc.terminate()
        proc.wait(15)


def compose() -> dict[str, Any]:
    with COMPOSE.open() as f:
        doc: dict[str, Any] = yaml.safe_load(f)
    return doc


def test_compose_runs_the_api_every_worker_and_three_nats_nodes() -> None:
    services = compose()["services"]
    assert {"api", "postgres", "streams", "nats-1", "nats-2", "nats-3"} <= set(services)
    for name in WORKERS:
        assert services[f"worker-{name}"]["command"] == ["worker", name]
    assert services["api"]["command"] == ["api"]
    assert services["postgres"]["image"].startswith("postgres:16")

    apps = ["api", "streams", *(f"worker-{w}" for w in WORKERS)]
    for name in apps:
        env = services[name]["environment"]
        assert str(env["DEALSTREAM_REPLICAS"]) == "3", name
        assert env["DEALSTREAM_CONFIG"] == "/etc/dealstream/production.toml", name
        assert env["DEALSTREAM_LOG_FORMAT"] == "json", name
        assert env["DATABASE_URL"].startswith("postgresql://"), name
        urls = env["DEALSTREAM_NATS_URL"].split(",")
        assert [u.rsplit("@", 1)[1] for u in urls] == ["nats-1:4241", "nats-2:4242", "nats-3:4243"], name
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile", name
    # Least privilege: only the one-shot `streams` job is the administrator; the API appends as `api`, workers
    # consume as `worker`.
    assert services["streams"]["environment"]["DEALSTREAM_NATS_URL"].startswith("nats://admin:")
    assert services["api"]["environment"]["DEALSTREAM_NATS_URL"].startswith("nats://api:")
    assert all(
        services[f"worker-{w}"]["environment"]["DEALSTREAM_NATS_URL"].startswith("nats://worker:") for w in WORKERS
    )
    # Nothing may write before the streams exist with three replicas; `streams` itself waits for NATS only.
    for name in ["api", *(f"worker-{w}" for w in WORKERS)]:
        assert services[name]["depends_on"]["streams"]["condition"] == "service_completed_successfully"
    assert set(services["streams"]["depends_on"]) == {"nats-1", "nats-2", "nats-3"}
    assert "/v1/health" in " ".join(services["api"]["healthcheck"]["test"])
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert (DEPLOY / "Dockerfile").is_file()


@pytest.mark.parametrize("node", NODES)
def test_compose_nats_node_mounts_its_config_and_checks_jetstream_health(node: int, tmp_path: Path) -> None:
    service = compose()["services"][f"nats-{node}"]
    image, tag = service["image"].split(":")
    assert image == "nats" and tuple(int(x) for x in tag.split("-")[0].split(".")) >= (2, 12)
    assert "./nats/cluster:/etc/nats:ro" in service["volumes"]
    assert "/healthz?js-enabled-only=true" in " ".join(service["healthcheck"]["test"])
    command: list[str] = service["command"]
    assert command[:2] == ["-c", f"/etc/nats/node-{node}.conf"]
    # The container's command line, with its paths mapped onto this checkout, is accepted by nats-server.
    args = [
        str(CLUSTER_CONFIGS / a.removeprefix("/etc/nats/"))
        if a.startswith("/etc/nats/")
        else str(tmp_path)
        if a == "/data"
        else a
        for a in command[2:]
    ]
    result = nats_test(
        CLUSTER_CONFIGS / f"node-{node}.conf", *args, env={**os.environ, **password_env(dummy_passwords())}
    )
    assert result.returncode == 0, result.stderr


def test_production_toml_loads_and_lets_nobody_in_as_shipped() -> None:
    config = load_config(PRODUCTION_TOML)
    assert config.api_keys, "the example should show how keys are written"
    for key in config.api_keys:
        assert set(key.scopes) <= set(SCOPES)
        assert int(key.sha256, 16) < 16, f"{key.id}: only placeholder hashes (0...0N) belong in the example"
    # Webhook secrets are commented out: a made-up secret in a deployed copy would let anyone forge leads.
    assert config.webhooks.meta is None and config.webhooks.typeform is None and config.webhooks.webflow is None


def test_production_toml_commented_webhook_examples_load_when_uncommented(tmp_path: Path) -> None:
    example = re.compile(r'^# (\[webhooks\.\w+\]|\w+ = ".*")$')
    lines = [line[2:] if example.match(line) else line for line in PRODUCTION_TOML.read_text().splitlines()]
    (tmp_path / "production.toml").write_text("\n".join(lines) + "\n")
    webhooks = load_config(tmp_path / "production.toml").webhooks
    assert webhooks.meta is not None and webhooks.typeform is not None and webhooks.webflow is not None


def test_a_quoted_bcrypt_hash_in_the_servers_environment_replaces_the_password(tmp_path: Path) -> None:
    """README's advice: servers hold bcrypt hashes, clients the plain passwords. Runs common.conf alone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # stdlib up to 3.12; the only bcrypt at hand without a new dependency
        except ImportError:
            pytest.skip("no crypt module to make a bcrypt hash with")
    plain = dummy_passwords()
    try:
        hashed = {u: crypt.crypt(p, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=2**4)) for u, p in plain.items()}
    except (ValueError, OSError):
        pytest.skip("this libc's crypt has no bcrypt")
    assert all(h.startswith("$2") for h in hashed.values())
    # The server lexes a variable's value like config text: unquoted, "$2b$..." is read as a variable reference.
    env = {**os.environ, **password_env({u: f"'{h}'" for u, h in hashed.items()})}
    port = free_port()
    log = tmp_path / "nats.log"
    proc = subprocess.Popen(
        [
            nats_server_binary(),
            "-c",
            str(CLUSTER_CONFIGS / "common.conf"),
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            str(free_port()),
            "-sd",
            str(tmp_path / "data"),
        ],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, 15, proc)

        async def check() -> None:
            nc = await nats.connect(f"nats://api:{plain['api']}@127.0.0.1:{port}", allow_reconnect=False)
            await nc.close()
            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                await nats.connect(f"nats://api:wrong@127.0.0.1:{port}", allow_reconnect=False, error_cb=_ignore)

        asyncio.run(check())
    finally:
        proc.terminate()
        proc.wait(15)
    assert "Plaintext passwords detected" not in log.read_text()


async def _ignore(_: Exception) -> None:
    return None


# --- the three-node cluster on loopback ----------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackCluster]:
    started = LoopbackCluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield started.start()
    finally:
        started.stop()


async def streams_when_ready(js: Any, naming: Naming, settings: StreamSettings) -> list[StreamConfig]:
    """ensure_streams (as `admin`), retried while the cluster elects its meta leader and finds room for three
    replicas."""
    return await until(lambda: ensure_streams(js, naming, settings), (*NOT_YET, APIError), within=90)


def test_every_node_fsyncs_each_write(cluster: LoopbackCluster) -> None:
    for node in NODES:
        config = cluster.monitor(node, "/jsz")["config"]
        assert config["sync_always"] is True, node


async def next_error(errors: asyncio.Queue[str]) -> str:
    return (await asyncio.wait_for(errors.get(), 30)).lower()


async def test_users_are_held_to_their_permissions(cluster: LoopbackCluster) -> None:
    naming = Naming()
    violations: dict[str, asyncio.Queue[str]] = {u: asyncio.Queue() for u in ("admin", "api", "worker", "integration")}

    async def client(user: str) -> Any:
        async def on_error(exc: Exception) -> None:
            await violations[user].put(str(exc))

        return await nats.connect(list(cluster.urls(user)), error_cb=on_error, name=f"deploy-test-{user}")

    admin, api, worker, integration = [await client(u) for u in ("admin", "api", "worker", "integration")]
    try:
        api_js = api.jetstream()
        # Only the administrator makes the streams.
        await streams_when_ready(admin.jetstream(), naming, StreamSettings(replicas=3))
        made = await until(lambda: api_js.stream_info(naming.events_stream), NOT_YET, 60)
        # The issue's attack, as the API's and the workers' users: a stream update to max_msgs_per_subject=1
        # (which dropped 44 events), a delete, a purge, a new stream. Each is refused before it reaches JetStream.
        for user, nc in (("api", api), ("worker", worker)):
            js = nc.jetstream(timeout=2.0)
            attacks = [
                js.update_stream(dataclasses.replace(made.config, max_msgs_per_subject=1)),
                js.delete_stream(naming.events_stream),
                js.purge_stream(naming.dead_letter_stream),
                js.add_stream(StreamConfig(name=f"STOLEN_{user.upper()}", subjects=[f"stolen.{user}.>"])),
            ]
            for attack in attacks:
                with pytest.raises((*NOT_YET, APIError)):
                    await attack
                assert "permissions violation for publish" in await next_error(violations[user])
        after = await until(lambda: api_js.stream_info(naming.events_stream), NOT_YET, 60)
        assert after.config == made.config and after.config.max_msgs_per_subject == -1
        # An integration may put captures into the inbox and gets its JetStream ack back on _INBOX.
        ack = await until(
            lambda: integration.jetstream().publish(naming.inbox_subject("lead"), b"{}", stream=naming.inbox_stream),
            NOT_YET,
            60,
        )
        assert ack.stream == naming.inbox_stream
        # ... but cannot write into the event log, nor call the JetStream API.
        forged = naming.aggregate_subject("deal", f"forged-{uuid.uuid4().hex[:8]}")
        await integration.publish(forged, b"{}")
        assert "permissions violation for publish" in await next_error(violations["integration"])
        await integration.publish("$JS.API.STREAM.INFO." + naming.events_stream, b"")
        assert "permissions violation for publish" in await next_error(violations["integration"])
        # The API may not delete the event log: deny_delete guards its messages, not the stream itself.
        await api.publish("$JS.API.STREAM.DELETE." + naming.events_stream, b"")
        assert "permissions violation for publish" in await next_error(violations["api"])
        # Asked of the stream leader (not a direct get, which a lagging follower may answer).
        with pytest.raises(NotFoundError):
            await until(lambda: api_js.get_msg(naming.events_stream, subject=forged), NOT_YET, 60)
        # The event log is still there (stream_info raises NotFoundError for a deleted stream).
        assert (await until(lambda: api_js.stream_info(naming.events_stream), NOT_YET, 60)).config.deny_delete
        # Nor delete one of its messages; but it seals captures with lead keys and erases them.
        await api.publish(f"$JS.API.STREAM.MSG.DELETE.{naming.events_stream}", b'{"seq": 1}')
        assert "permissions violation for publish" in await next_error(violations["api"])
        vault = Vault(api_js, naming)
        lead = f"lead-{uuid.uuid4().hex[:8]}"
        assert await until(lambda: vault.key(lead, create=True), NOT_YET, 60) is not None
        assert await vault.erase(lead) is True
        assert await vault.key(lead) is None
        assert violations["api"].empty()
        # Intake erases an inbox message once it is in the log (the message-delete API overwrites it on disk);
        # a worker may delete nothing else: not an event, not a lead key.
        assert await until(lambda: worker.jetstream().delete_msg(naming.inbox_stream, ack.seq), NOT_YET, 60)
        await worker.publish(f"$JS.API.STREAM.MSG.DELETE.{naming.events_stream}", b'{"seq": 1}')
        assert "permissions violation for publish" in await next_error(violations["worker"])
        await worker.publish(f"$JS.API.STREAM.MSG.DELETE.{naming.lead_keys_stream}", b'{"seq": 1}')
        assert "permissions violation for publish" in await next_error(violations["worker"])
    finally:
        for nc in (integration, worker, api, admin):
            await nc.close()


async def test_a_process_started_without_three_replicas_lowers_nothing(cluster: LoopbackCluster) -> None:
    """The issue: the API started without DEALSTREAM_REPLICAS=3 lowered every stream to one replica. Now it
    refuses to start naming the field, and even the administrator's command refuses unless told."""
    naming = Naming("replicas")
    admin = NatsSettings(servers=cluster.urls("admin"), naming=naming, streams=StreamSettings(replicas=3))
    nc, js = await connect(admin, "deploy-test-admin")
    try:
        await streams_when_ready(js, naming, admin.streams)
        one = StreamSettings(replicas=1)
        for user in ("api", "worker"):
            settings = NatsSettings(servers=cluster.urls(user), naming=naming, streams=one)
            unc, ujs = await connect(settings, f"deploy-test-{user}")
            try:
                with pytest.raises(StreamsNotReady, match=rf"{naming.events_stream}\.num_replicas is 3, expected 1"):
                    await until(lambda ujs=ujs: require_streams(ujs, naming, one), NOT_YET, 60)  # type: ignore[misc]
            finally:
                await unc.close()
        with pytest.raises(WeakeningRefused, match=r"num_replicas 3 -> 1.*--allow-weaker"):
            await ensure_streams(js, naming, one)
        infos = [await until(lambda n=n: js.stream_info(n), NOT_YET, 60) for n in _stream_names(naming)]  # type: ignore[misc]
        assert [i.config.num_replicas for i in infos] == [3, 3, 3, 3, 3]
    finally:
        await nc.close()


def _stream_names(naming: Naming) -> list[str]:
    return [
        naming.events_stream,
        naming.dead_letter_stream,
        naming.inbox_stream,
        naming.lead_keys_stream,
        naming.anchors_stream,
    ]


async def test_the_anchoring_job_keeps_anchors_as_worker_and_cannot_delete_them(cluster: LoopbackCluster) -> None:
    naming = Naming()
    api_settings = NatsSettings(servers=cluster.urls("api"), naming=naming, streams=StreamSettings(replicas=3))
    api_nc, api_js = await connect(api_settings, "deploy-test-streams")
    violations: asyncio.Queue[str] = asyncio.Queue()

    async def on_error(exc: Exception) -> None:
        await violations.put(str(exc))

    worker = await nats.connect(list(cluster.urls("worker")), error_cb=on_error, name="deploy-test-anchors")
    try:
        await streams_when_ready(api_js, naming, api_settings.streams)
        store = EventStore(api_nc, api_js, naming)
        opened = envelope(deal_opened(), aggregate_id=f"d-{uuid.uuid4().hex[:8]}")
        await until(lambda: store.append([opened], 0), NOT_YET, 60)
        worker_js = worker.jetstream()
        anchorer = Anchorer(worker_js, naming, naming.events_stream, new_signing_key())
        anchor = await until(anchorer.take, NOT_YET, 60)
        kept = await until(lambda: stored_anchors(worker_js, naming, naming.events_stream), NOT_YET, 60)
        assert anchor in kept
        await worker.publish(f"$JS.API.STREAM.MSG.DELETE.{naming.anchors_stream}", b'{"seq": 1}')
        assert "permissions violation for publish" in await next_error(violations)
        assert violations.empty()
    finally:
        await worker.close()
        await api_nc.close()


async def test_appends_survive_the_crash_of_the_stream_leader(cluster: LoopbackCluster) -> None:
    naming = Naming()
    settings = NatsSettings(servers=cluster.urls("api"), naming=naming, streams=StreamSettings(replicas=3))
    admin = NatsSettings(servers=cluster.urls("admin"), naming=naming, streams=settings.streams)
    anc, ajs = await connect(admin, "deploy-test-admin")
    try:
        configs = await streams_when_ready(ajs, naming, settings.streams)
    finally:
        await anc.close()
    assert [c.num_replicas for c in configs] == [3, 3, 3, 3, 3]
    nc, js = await connect(settings, "deploy-test-failover")
    try:
        await until(lambda: require_streams(js, naming, settings.streams), NOT_YET, 60)
        store = EventStore(nc, js, naming)
        deal = f"deal-{uuid.uuid4().hex[:8]}"
        sent: list[Envelope] = []
        version = 0

        async def append(event: Envelope) -> None:
            nonlocal version
            # Retrying is safe: a first attempt that landed is recognised by its event id (events/store.py).
            [appended] = await until(lambda: store.append([event], expected_version=version), NOT_YET, 60)
            version = appended.sequence
            sent.append(event)

        await append(envelope(deal_opened(), aggregate_id=deal))
        before = await until(lambda: js.stream_info(naming.events_stream), NOT_YET, 60)
        assert before.cluster is not None
        leader = before.cluster.leader
        victim = next(n for n in NODES if server_name(n) == leader)
        cluster.kill(victim)

        for i in range(10):
            await append(envelope(stage_changed(f"s{i}", f"s{i + 1}"), aggregate_id=deal))

        info = await until(lambda: js.stream_info(naming.events_stream), NOT_YET, 60)
        assert info.cluster is not None and info.cluster.leader not in (None, leader)
        assert info.config.num_replicas == 3

        # Direct gets may be answered by a follower that has not applied the newest entry yet: poll.
        async def all_read_back() -> list[Envelope]:
            got = [stored.envelope for stored in await store.read("deal", deal)]
            if got != sent:
                raise StoreUnavailable(f"read {len(got)} of {len(sent)} events")
            return got

        assert await until(all_read_back, NOT_YET, 60) == sent
    finally:
        await nc.close()
