"""What counts as a stream's drift from its wanted configuration, and which changes would weaken the log."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st
from nats.js.api import DiscardPolicy, StreamConfig

from events.streams import FieldDrift, StreamSettings, config_drift, stream_configs
from events.subjects import Naming

NAMING = Naming("drift")


def _as_the_server_reports(wanted: StreamConfig) -> StreamConfig:
    """The config a server answers with: every field it defaults filled in."""
    filled = {"max_consumers": -1, "max_msgs": -1, "max_bytes": -1, "max_age": wanted.max_age or 0.0}
    return dataclasses.replace(
        wanted,
        **filled,
        duplicate_window=wanted.duplicate_window or 120.0,
        discard=wanted.discard or DiscardPolicy.OLD,
        allow_msg_ttl=False,
    )


def test_streams_as_made_have_no_drift() -> None:
    for wanted in stream_configs(NAMING, StreamSettings()):
        assert config_drift(wanted, _as_the_server_reports(wanted)) == [], wanted.name


def test_the_attack_of_the_issue_is_named_field_by_field() -> None:
    events = stream_configs(NAMING, StreamSettings(replicas=3))[0]
    attacked = dataclasses.replace(_as_the_server_reports(events), max_msgs_per_subject=1, num_replicas=1)
    drifts = config_drift(events, attacked)
    assert [str(d) for d in drifts] == [
        "DRIFT_EVENTS.num_replicas is 1, expected 3",
        "DRIFT_EVENTS.max_msgs_per_subject is 1, expected -1",
    ]
    # Restoring either is no weakening; setting them so would have been.
    assert not any(d.weakens for d in drifts)
    assert [d.field for d in config_drift(attacked, _as_the_server_reports(events)) if d.weakens] == ["num_replicas"]


@given(st.sampled_from(["deny_delete", "deny_purge"]), st.booleans(), st.booleans())
def test_only_loosening_a_deny_flag_weakens(field: str, wanted: bool, actual: bool) -> None:
    drift = FieldDrift("S", field, str(wanted), str(actual))
    assert drift.weakens == (actual and not wanted)


@given(st.integers(1, 5), st.integers(1, 5))
def test_only_fewer_replicas_weaken(wanted: int, actual: int) -> None:
    assert FieldDrift("S", "num_replicas", str(wanted), str(actual)).weakens == (wanted < actual)


def test_allowing_rollups_weakens_and_a_missing_stream_reads_as_missing() -> None:
    assert FieldDrift("S", "allow_rollup_hdrs", "True", "False").weakens
    assert not FieldDrift("S", "allow_rollup_hdrs", "False", "True").weakens
    assert str(FieldDrift("S", "stream", "present", "missing")) == "S is missing"
