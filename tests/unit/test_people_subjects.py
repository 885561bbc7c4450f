"""Organisations and contacts land in an existing deployment's log unchanged: their subjects are inside the events
stream's one subject filter and the NATS users' permissions, so no stream or permission changes on upgrade."""

from __future__ import annotations

from pathlib import Path

from events.envelope import AGGREGATE_TYPES
from events.streams import StreamSettings, stream_configs
from events.subjects import Naming

PERMISSIONS = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "cluster" / "permissions.inc"


def _within(subject: str, pattern: str) -> bool:
    """NATS subject matching: ``*`` one token, ``>`` one or more at the end."""
    tokens, wanted = subject.split("."), pattern.split(".")
    for n, want in enumerate(wanted):
        if want == ">":
            return len(tokens) > n
        if n >= len(tokens) or (want != "*" and want != tokens[n]):
            return False
    return len(tokens) == len(wanted)


def test_every_aggregate_types_subject_is_in_the_events_streams_filter_and_the_users_permissions() -> None:
    naming = Naming()
    [events, *_] = stream_configs(naming, StreamSettings())
    assert events.subjects == [naming.all_events]  # the filter an existing deployment already has
    granted = PERMISSIONS.read_text()
    assert f'"{naming.all_events}"' in granted
    assert {"organisation", "contact"} <= set(AGGREGATE_TYPES)
    for aggregate_type in AGGREGATE_TYPES:
        subject = naming.aggregate_subject(aggregate_type, "x1")
        assert _within(subject, naming.all_events), subject
        assert _within(subject, naming.events_of_type(aggregate_type)), subject
