"""The JetStream streams, created or checked from code: the event log, dead letters, the NATS inbox, the
bucket of lead keys, the chain anchors."""

from __future__ import annotations

from dataclasses import dataclass

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


async def ensure_streams(js: JetStreamContext, naming: Naming, settings: StreamSettings) -> list[StreamConfig]:
    """Create each stream, or bring an existing one to the wanted configuration. Safe to run repeatedly."""
    result: list[StreamConfig] = []
    for wanted in stream_configs(naming, settings):
        assert wanted.name is not None
        try:
            existing = await js.stream_info(wanted.name)
        except NotFoundError:
            info = await js.add_stream(wanted)
        else:
            try:
                info = await js.update_stream(wanted)
            except APIError as exc:
                if exc.err_code != CANNOT_ALLOW_DELETES or wanted.name != naming.lead_keys_stream:
                    raise
                # A bucket made by an older version, as a stock KV bucket: the server never lifts deny_delete.
                log.warning(
                    "streams.lead_keys_deny_delete",
                    stream=wanted.name,
                    consequence="erasure purges keys without overwriting them; see README, Erasing personal data",
                )
                info = existing
        result.append(info.config)
    return result
