"""The JetStream streams, created or checked from code: the event log, dead letters, the NATS inbox."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from events.subjects import Naming

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
    """The three streams. Only the event log is the truth; it can never be deleted from or purged."""
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
    return [events, dead_letters, inbox]


async def ensure_streams(js: JetStreamContext, naming: Naming, settings: StreamSettings) -> list[StreamConfig]:
    """Create each stream, or bring an existing one to the wanted configuration. Safe to run repeatedly."""
    result: list[StreamConfig] = []
    for wanted in stream_configs(naming, settings):
        assert wanted.name is not None
        try:
            await js.stream_info(wanted.name)
        except NotFoundError:
            info = await js.add_stream(wanted)
        else:
            info = await js.update_stream(wanted)
        result.append(info.config)
    return result
