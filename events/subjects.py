"""Subject and stream names. One subject per aggregate; a prefix keeps test runs and tenants apart."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from events.envelope import AggregateType
from events.ids import check_id

PARTITIONS = 64
"""Fixed forever: a partition token in every event subject lets a projection split the log by aggregate."""

_PREFIX = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""A JetStream stream name that is also one subject token (no ``.``, ``*``, ``>`` or spaces)."""


def partition_of(aggregate_id: str) -> int:
    return zlib.crc32(aggregate_id.encode()) % PARTITIONS


@dataclass(frozen=True, slots=True)
class Naming:
    """Names of the subjects and streams of one Dealstream installation.

    Event subjects: ``<prefix>.evt.<aggregate type>.<partition>.<aggregate id>``; the partition
    (0-63, from the id) lets several workers of one projection share the log without reordering one
    aggregate's events. Dead letters: ``<prefix>.dlq.<origin>``. Inbound NATS captures:
    ``<prefix>.in.<kind>``.
    """

    prefix: str = "dealstream"

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise ValueError(f"subject prefix {self.prefix!r} must match {_PREFIX.pattern}")

    @property
    def events_stream(self) -> str:
        return f"{self.prefix.upper()}_EVENTS"

    @property
    def dead_letter_stream(self) -> str:
        return f"{self.prefix.upper()}_DLQ"

    @property
    def inbox_stream(self) -> str:
        return f"{self.prefix.upper()}_INBOX"

    @property
    def anchors_stream(self) -> str:
        """Signed chain heads of the log, kept outside it (see :mod:`events.anchors`)."""
        return f"{self.prefix.upper()}_ANCHORS"

    @property
    def all_anchors(self) -> str:
        return f"{self.prefix}.anchor.>"

    def anchor_subject(self, stream: str) -> str:
        """Where the anchors of ``stream`` (the event log, or a copy an auditor checks) are kept."""
        if not STREAM_NAME.fullmatch(stream):
            raise ValueError(f"stream name {stream!r} must match {STREAM_NAME.pattern}")
        return f"{self.prefix}.anchor.{stream}"

    @property
    def lead_keys_bucket(self) -> str:
        """The key-value bucket of the per-lead keys that seal personal data."""
        return f"{self.prefix.upper()}_LEAD_KEYS"

    @property
    def lead_keys_stream(self) -> str:
        """The stream behind the lead-keys bucket (NATS names a bucket's stream ``KV_<bucket>``)."""
        return f"KV_{self.lead_keys_bucket}"

    @property
    def all_events(self) -> str:
        return f"{self.prefix}.evt.>"

    def events_of_type(self, aggregate_type: AggregateType) -> str:
        return f"{self.prefix}.evt.{aggregate_type}.*.*"

    def aggregate_subject(self, aggregate_type: AggregateType, aggregate_id: str) -> str:
        """The subject of one aggregate; an id that is not one subject token (``>``, ``a.b``) never becomes one."""
        check_id(aggregate_id, f"{aggregate_type}_id")
        return f"{self.prefix}.evt.{aggregate_type}.{partition_of(aggregate_id)}.{aggregate_id}"

    def partition_filter(self, partition: int) -> str:
        return f"{self.prefix}.evt.*.{partition}.*"

    def dead_letter_subject(self, origin: str) -> str:
        return f"{self.prefix}.dlq.{origin}"

    @property
    def all_dead_letters(self) -> str:
        return f"{self.prefix}.dlq.>"

    def inbox_subject(self, kind: str) -> str:
        return f"{self.prefix}.in.{kind}"

    @property
    def all_inbox(self) -> str:
        return f"{self.prefix}.in.>"
