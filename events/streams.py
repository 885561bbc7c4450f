"""The JetStream streams, created or checked from code: the event log, dead letters, the NATS inbox, the
bucket of lead keys, the chain anchors."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from events.subjects import Naming

log = structlog.get_logger("dealstream.streams")

CANNOT_ALLOW_DELETES = 10052
"""JetStream's answer to an update that would lift ``deny_delete``."""
MESSAGE_DELETE_DENIED = 10057

MAX_EVENT_BYTES = 1024 * 1024
DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class StreamSettings:
    replicas: int = 1
    duplicate_window_seconds: float = 120.0
    max_event_bytes: int = MAX_EVENT_BYTES
    dead_letter_max_age_days: float = 90.0
    inbox_max_age_days: float = 7.0


def stream_configs(naming: Naming, settings: StreamSettings) -> list[StreamConfig]:
    """The five streams: the log, dead letters, the inbox, the lead keys' bucket and the anchors. Only the event
    log is the truth; it and its anchors can never be deleted from or purged."""
    events = StreamConfig(
        name=naming.events_stream,
        description="Dealstream event log: every lead, touchpoint and deal change, immutable.",
        subjects=[naming.all_events],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_seconds,
        max_msg_size=settings.max_event_bytes,
        deny_delete=True,
        deny_purge=True,
        allow_rollup_hdrs=False,
        allow_direct=True,
    )
    dead_letters = StreamConfig(
        name=naming.dead_letter_stream,
        description="Messages Dealstream refused or could not apply, with the reason in headers.",
        subjects=[naming.all_dead_letters],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        max_age=settings.dead_letter_max_age_days * DAY,
        max_msg_size=settings.max_event_bytes * 2,
        deny_delete=True,
        deny_purge=False,
        allow_direct=True,
    )
    inbox = StreamConfig(
        name=naming.inbox_stream,
        description="Lead captures published on NATS by integrations, before validation.",
        subjects=[naming.all_inbox],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_seconds,
        max_age=settings.inbox_max_age_days * DAY,
        max_msg_size=settings.max_event_bytes,
        allow_direct=True,
    )
    return [events, dead_letters, inbox, lead_keys_config(naming, settings), anchors_config(naming, settings)]


def anchors_config(naming: Naming, settings: StreamSettings) -> StreamConfig:
    """The anchors' stream: signed chain heads of the log, outside it, so that removing the log's tail or
    rewriting a chain needs the same rights over a second stream and the operator's signing key."""
    return StreamConfig(
        name=naming.anchors_stream,
        description="Signed heads of the event log's hash chains, taken at intervals (dealstream audit anchor).",
        subjects=[naming.all_anchors],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        num_replicas=settings.replicas,
        max_msg_size=settings.max_event_bytes,
        deny_delete=True,
        deny_purge=True,
        allow_rollup_hdrs=False,
        allow_direct=True,
    )


def lead_keys_config(naming: Naming, settings: StreamSettings) -> StreamConfig:
    """The lead-keys bucket's stream: a key-value bucket, made from code because it must allow deletes."""
    return StreamConfig(
        name=naming.lead_keys_stream,
        description="Per-lead keys sealing personal data; destroying one erases that lead's personal fields.",
        subjects=[f"$KV.{naming.lead_keys_bucket}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_seconds,
        # Two revisions: a shared entry rewritten on an erasure keeps its old revision until that is overwritten.
        max_msgs_per_subject=2,
        max_msg_size=128 * 1024,  # a shared entry holds up to max_batch_leads keys (about 90 bytes each)
        allow_rollup_hdrs=True,
        # Unlike a stock KV bucket, deletes are allowed: erasure overwrites the key's record in place through the
        # message-delete API, where a KV purge would leave its bytes in a block file until compaction.
        deny_delete=False,
        allow_direct=True,
    )


CHECKED_FIELDS: dict[str, Any] = {
    "subjects": None,
    "retention": RetentionPolicy.LIMITS,
    "storage": StorageType.FILE,
    "discard": DiscardPolicy.OLD,
    "discard_new_per_subject": False,
    "num_replicas": 1,
    "max_consumers": -1,
    "max_msgs": -1,
    "max_bytes": -1,
    "max_age": 0.0,
    "max_msgs_per_subject": -1,
    "max_msg_size": -1,
    "duplicate_window": 120.0,
    "sealed": False,
    "deny_delete": False,
    "deny_purge": False,
    "allow_rollup_hdrs": False,
    "allow_direct": False,
    "allow_msg_ttl": False,
}
"""What is compared between a stream and its wanted configuration, with the server's value for an unset field."""

WAY_OUT = "the NATS administrator runs `dealstream streams` to set them"


class FieldDrift(msgspec.Struct, frozen=True):
    """One field of one stream that is not what the settings expect (``field`` is ``stream`` when it is missing)."""

    stream: str
    field: str
    expected: str
    actual: str

    @property
    def weakens(self) -> bool:
        """Setting ``expected`` over ``actual`` would weaken the log: fewer replicas, deletes, purges, rollups."""
        if self.field == "num_replicas":
            return int(self.expected) < int(self.actual)
        if self.field in {"deny_delete", "deny_purge"}:
            return self.expected == "False" and self.actual == "True"
        if self.field == "allow_rollup_hdrs":
            return self.expected == "True" and self.actual == "False"
        return False

    def __str__(self) -> str:
        if self.field == "stream":
            return f"{self.stream} is missing"
        return f"{self.stream}.{self.field} is {self.actual}, expected {self.expected}"


class StreamsNotReady(Exception):
    """The streams are missing or differ from the settings; a process refuses to run on them."""

    def __init__(self, drifts: list[FieldDrift]) -> None:
        self.drifts = drifts
        super().__init__(
            "the streams are not as this process expects: "
            + "; ".join(map(str, drifts))
            + f". Nothing was changed: {WAY_OUT} (with DEALSTREAM_REPLICAS as in production)"
        )


class WeakeningRefused(Exception):
    """``ensure_streams`` would lower replicas or loosen a deny flag, and was not told it may."""

    def __init__(self, drifts: list[FieldDrift]) -> None:
        self.drifts = drifts
        super().__init__(
            "refusing to weaken the streams: "
            + "; ".join(f"{d.stream}.{d.field} {d.actual} -> {d.expected}" for d in drifts)
            + ". Nothing was changed; if this is meant, run `dealstream streams --allow-weaker`"
        )


def _shown(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def config_drift(wanted: StreamConfig, actual: StreamConfig) -> list[FieldDrift]:
    """Every checked field where ``actual`` (as the server reports it) differs from ``wanted``."""
    assert wanted.name is not None
    drifts = []
    for name, default in CHECKED_FIELDS.items():
        want, have = getattr(wanted, name), getattr(actual, name)
        # nats-py sends a duplicate window of 0 as "unset": the server then applies its default.
        want = default if want is None or (name == "duplicate_window" and not want) else want
        have = default if have is None else have
        if isinstance(want, float) or isinstance(have, float):
            same = abs(float(want) - float(have)) < 1e-3
        else:
            same = want == have
        if not same:
            drifts.append(FieldDrift(wanted.name, name, _shown(want), _shown(have)))
    return drifts


def _tolerated(drift: FieldDrift, naming: Naming) -> bool:
    # A bucket made by a version before 2026-11-23 is a stock KV bucket denying deletes (and, made by a recent
    # server, allowing message TTLs), which the server never lifts: erasure still works on it, with a warning
    # (docs/personal-data.md).
    return (
        drift.stream == naming.lead_keys_stream
        and drift.field in {"deny_delete", "allow_msg_ttl"}
        and drift.actual != str(CHECKED_FIELDS[drift.field])
    )


async def _existing(js: JetStreamContext, name: str) -> StreamConfig | None:
    try:
        return (await js.stream_info(name)).config
    except NotFoundError:
        return None


async def streams_drift(js: JetStreamContext, naming: Naming, settings: StreamSettings) -> list[FieldDrift]:
    """How the streams differ from what ``settings`` expect; empty when every stream is as it should be."""
    drifts: list[FieldDrift] = []
    for wanted in stream_configs(naming, settings):
        assert wanted.name is not None
        actual = await _existing(js, wanted.name)
        if actual is None:
            drifts.append(FieldDrift(wanted.name, "stream", "present", "missing"))
            continue
        drifts += [d for d in config_drift(wanted, actual) if not _tolerated(d, naming)]
    return drifts


async def require_streams(js: JetStreamContext, naming: Naming, settings: StreamSettings) -> None:
    """Raise :class:`StreamsNotReady` naming every missing stream and drifted field; never change a stream.

    Every process that reads or writes the log calls this at start: only the administrator changes the log."""
    drifts = await streams_drift(js, naming, settings)
    if drifts:
        raise StreamsNotReady(drifts)


async def ensure_streams(
    js: JetStreamContext, naming: Naming, settings: StreamSettings, allow_weaker: bool = False
) -> list[StreamConfig]:
    """Create each missing stream and bring the others to the wanted configuration: the administrator's job.

    Refuses (:class:`WeakeningRefused`, before changing anything) to lower replicas or loosen a deny flag unless
    ``allow_weaker``: a process started without ``DEALSTREAM_REPLICAS=3`` must not take replicas away."""
    plan: list[tuple[StreamConfig, StreamConfig | None, list[FieldDrift]]] = []
    for wanted in stream_configs(naming, settings):
        assert wanted.name is not None
        actual = await _existing(js, wanted.name)
        plan.append((wanted, actual, [] if actual is None else config_drift(wanted, actual)))
    weaker = [d for _, _, drifts in plan for d in drifts if d.weakens and not _tolerated(d, naming)]
    if weaker and not allow_weaker:
        raise WeakeningRefused(weaker)
    result: list[StreamConfig] = []
    for wanted, actual, drifts in plan:
        if actual is None:
            result.append((await js.add_stream(wanted)).config)
            log.info("streams.created", stream=wanted.name)
        elif not drifts:
            result.append(actual)
        else:
            result.append(await _update(js, naming, wanted, actual, drifts))
    return result


async def _update(
    js: JetStreamContext, naming: Naming, wanted: StreamConfig, actual: StreamConfig, drifts: list[FieldDrift]
) -> StreamConfig:
    try:
        info = await js.update_stream(wanted)
    except APIError as exc:
        if exc.err_code != CANNOT_ALLOW_DELETES or wanted.name != naming.lead_keys_stream:
            raise
        log.warning(
            "streams.lead_keys_deny_delete",
            stream=wanted.name,
            consequence="erasure purges keys without overwriting them; see docs/personal-data.md",
        )
        drifts = [d for d in drifts if not _tolerated(d, naming)]
        if not drifts:
            return actual
        kept = replace(wanted, deny_delete=actual.deny_delete, allow_msg_ttl=actual.allow_msg_ttl)
        info = await js.update_stream(kept)
    log.info("streams.updated", stream=wanted.name, changed={d.field: f"{d.actual} -> {d.expected}" for d in drifts})
    return info.config
