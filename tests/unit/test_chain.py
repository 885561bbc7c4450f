"""The chain and anchor rules without a server: a link missing after chains began is a break; against a signed
anchor, a removed tail, a deleted last event or a rewritten chain shows; only the auditor's key is trusted."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.anchors import Anchor, check_against_anchors, make_anchor, snapshot_of
from events.chain import GENESIS, ChainedMessage, Chains, chain_link, verify
from events.signing import new_signing_key, public_key_of
from events.subjects import Naming

KEY = new_signing_key()
PUBLIC = public_key_of(KEY)
NOW = dt.datetime(2026, 11, 23, 20, 0, tzinfo=dt.UTC)
STREAM = "T_EVENTS"


def chained_log(
    aggregates: list[str], first_sequence: int = 1, links: dict[str, str] | None = None
) -> list[ChainedMessage]:
    """One event per entry of ``aggregates`` (subject ids), in that order, each linked into its chain (``links``:
    the chains' heads so far, updated)."""
    links = {} if links is None else links
    log: list[ChainedMessage] = []
    for i, aggregate in enumerate(aggregates):
        subject = f"t.evt.deal.{len(aggregate) % 3}.{aggregate}"
        data = f'{{"n":{i},"of":"{aggregate}"}}'.encode()
        links[subject] = chain_link(links.get(subject, GENESIS), data)
        log.append(ChainedMessage(first_sequence + i, subject, data, links[subject]))
    return log


def anchor_of(log: list[ChainedMessage], key: bytes = KEY, previous: Anchor | None = None) -> Anchor:
    chains = Chains()
    for m in log:
        chains.add(m)
    return make_anchor(STREAM, snapshot_of(chains), key, NOW + dt.timedelta(minutes=len(log)), previous)


def test_a_log_written_before_chains_is_counted_not_judged_until_the_first_link() -> None:
    old = [ChainedMessage(i, f"t.evt.deal.0.d{i % 2}", b"{}", None) for i in (1, 2, 3)]
    report = verify(old + chained_log(["d0", "d1"], first_sequence=4))
    assert report.intact and report.unchained == 3 and report.events == 5


def test_a_missing_link_after_chains_began_is_a_break_in_its_own_chain_or_a_new_one() -> None:
    log = chained_log(["a", "b", "a"])
    slipped_into_a = ChainedMessage(4, log[0].subject, b'{"forged":1}', None)
    new_aggregate = ChainedMessage(5, "t.evt.deal.1.z", b'{"forged":2}', None)
    report = verify([*log, slipped_into_a, new_aggregate])
    assert [(b.sequence, b.subject) for b in report.breaks] == [(4, log[0].subject), (5, "t.evt.deal.1.z")]
    assert "no chain link" in report.breaks[0].reason and "chains began in the log at sequence 1" in (
        report.breaks[1].reason
    )
    assert report.unchained == 0


def test_the_heads_at_the_anchor_are_checked_not_the_heads_now() -> None:
    links: dict[str, str] = {}
    log = chained_log(["a", "b", "a", "c"], links=links)
    anchor = anchor_of(log)
    later = [*log, *chained_log(["b", "d"], first_sequence=5, links=links)]
    check = check_against_anchors(later, STREAM, [anchor], PUBLIC)
    assert check.ok, check.problems
    assert check.anchor == anchor


def test_a_deleted_last_event_of_an_aggregate_shows_against_the_anchor() -> None:
    log = chained_log(["a", "b", "a", "c", "b"])
    anchor = anchor_of(log)
    without_as_last = [m for m in log if m.sequence != 3]
    assert verify(without_as_last).intact  # the chains alone cannot see it
    check = check_against_anchors(without_as_last, STREAM, [anchor], PUBLIC)
    assert not check.ok
    assert any("t.evt.deal.1" in p and "differ from the anchor" in p for p in check.problems), check.problems
    assert any("4 events" in p for p in check.problems), check.problems


def test_a_removed_tail_of_the_log_shows_against_the_anchor() -> None:
    log = chained_log(["a", "b", "c"])
    check = check_against_anchors(log[:-1], STREAM, [anchor_of(log)], PUBLIC)
    assert any("the log's tail was removed" in p for p in check.problems), check.problems


def test_a_rewritten_chain_shows_against_the_anchor() -> None:
    log = chained_log(["a", "b", "a"])
    anchor = anchor_of(log)
    forged_data = b'{"n":2,"of":"a","amount":"1"}'
    rewritten = [*log[:2], ChainedMessage(3, log[2].subject, forged_data, chain_link(log[0].link or "", forged_data))]
    assert verify(rewritten).intact
    assert not check_against_anchors(rewritten, STREAM, [anchor], PUBLIC).ok


def test_only_anchors_signed_by_the_auditors_key_count() -> None:
    log = chained_log(["a", "b"])
    intruder = new_signing_key()
    forged = anchor_of(log[:1], intruder)  # an intruder's anchor blessing a shorter log
    check = check_against_anchors(log[:1], STREAM, [forged], PUBLIC)
    assert check.anchor is None and not check.ok
    assert any("not signed by the given public key" in p for p in check.problems)
    assert any("no anchor" in p for p in check.problems)
    assert check_against_anchors(log[:1], STREAM, [forged], public_key_of(intruder)).ok


def test_without_an_anchor_the_check_does_not_pass() -> None:
    check = check_against_anchors(chained_log(["a"]), STREAM, [], PUBLIC)
    assert not check.ok and check.report.intact


@settings(max_examples=60, deadline=None)
@given(
    aggregates=st.lists(st.sampled_from(["a", "bb", "ccc", "d", "ee"]), min_size=1, max_size=30),
    data=st.data(),
)
def test_removing_any_event_at_or_before_the_anchor_is_caught(aggregates: list[str], data: st.DataObject) -> None:
    links: dict[str, str] = {}
    log = chained_log(aggregates, links=links)
    anchor = anchor_of(log)
    later = [*log, *chained_log(["a", "zz"], first_sequence=len(log) + 1, links=links)]
    gone = data.draw(st.integers(min_value=1, max_value=len(log)))
    tampered = [m for m in later if m.sequence != gone]
    assert check_against_anchors(later, STREAM, [anchor], PUBLIC).ok
    assert not check_against_anchors(tampered, STREAM, [anchor], PUBLIC).ok


def test_an_anchor_off_the_line_of_the_last_shows_that_anchors_were_lost() -> None:
    links: dict[str, str] = {}
    log = chained_log(["a", "b"], links=links)
    first = anchor_of(log)
    log += chained_log(["a"], first_sequence=3, links=links)
    second = anchor_of(log, previous=first)
    log += chained_log(["c"], first_sequence=4, links=links)
    in_line = anchor_of(log, previous=second)
    assert check_against_anchors(log, STREAM, [first, second, in_line], PUBLIC).ok
    # Taken by a job that knew only the first anchor (the second was lost from where it looked).
    unaware = anchor_of(log, previous=first)
    check = check_against_anchors(log, STREAM, [first, second, unaware], PUBLIC)
    assert not check.ok and check.anchor == unaware
    assert [p for p in check.problems if "not in the line" in p] == [
        f"the anchor taken at {second.taken_at} (up to sequence 3) is not in the line of the last anchor: anchors "
        f"were lost before {unaware.taken_at}, or that one was taken without knowing them"
    ]


@given(st.text(max_size=20))
def test_a_stream_name_reaches_an_anchor_subject_only_as_one_plain_token(name: str) -> None:
    for refused in ("", "X.>", "*", "a b", "EVENTS.anchor"):
        with pytest.raises(ValueError):
            Naming("t").anchor_subject(refused)
    try:
        subject = Naming("t").anchor_subject(name)
    except ValueError:
        return
    assert subject.split(".") == ["t", "anchor", name] and not any(c in name for c in "*> \t\r\n")
