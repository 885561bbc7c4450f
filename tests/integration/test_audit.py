"""Tamper evidence against a real nats-server: the chains of an untouched log hold; an altered, removed or
moved event in a copy of the stream is caught at the right position; an event without a link once chains began
is a break; a removed tail, a deleted last event or a rewritten chain shows against the last signed anchor,
which is kept outside the log; a signed export checks offline."""

from __future__ import annotations

import base64
import io
from typing import Any

import msgspec
import pytest
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import APIError

from events.anchors import Anchorer, AnchorRefused, anchor_id, check_against_anchors, stored_anchors
from events.audit import audit_stream, check_export, new_signing_key, public_key_of, scan, write_export
from events.chain import CHAIN_HEADER, GENESIS, ChainedMessage, chain_link
from events.codec import encode
from events.store import EventStore
from events.streams import MESSAGE_DELETE_DENIED, StreamSettings, ensure_streams
from events.subjects import Naming
from events.types import DealStageChanged, TouchpointLogged
from tests.builders import deal_opened, envelope

pytestmark = pytest.mark.integration


async def history(store: EventStore) -> None:
    for deal in ("a", "b", "c", "d"):
        await store.append([envelope(deal_opened("new"), "deal", deal)], 0)
        await store.append([envelope(DealStageChanged(from_stage="new", to_stage="won"), "deal", deal)], None)
        touch = TouchpointLogged(touchpoint_id="t1", kind="call", direction="outbound")
        await store.append([envelope(touch, "deal", deal)], None)


async def test_an_untouched_log_holds_and_tampered_copies_are_caught_where_they_were_tampered(
    store: EventStore, nats_conn: tuple[Any, JetStreamContext], naming: Naming
) -> None:
    _, js = nats_conn
    await history(store)
    report = await audit_stream(js, naming.events_stream)
    assert report.intact and report.events == 12 and report.aggregates == 4 and report.unchained == 0

    original = [m async for m in scan(js, naming.events_stream)]
    by_deal: dict[str, list[Any]] = {}
    for m in original:
        by_deal.setdefault(m.subject.rsplit(".", 1)[1], []).append(m)
    # The copy: a's 2nd event altered, b's 2nd removed, c's 2nd and 3rd swapped, d untouched.
    altered = msgspec.json.decode(by_deal["a"][1].data)
    altered["data"]["to_stage"] = "lost"
    tampered = {by_deal["a"][1].sequence: msgspec.json.encode(altered)}
    removed = {by_deal["b"][1].sequence}
    swap = {by_deal["c"][1].sequence: by_deal["c"][2], by_deal["c"][2].sequence: by_deal["c"][1]}
    copy = f"{naming.prefix}_COPY"
    await js.add_stream(StreamConfig(name=copy, subjects=[f"{naming.prefix}copy.>"]))
    positions: dict[tuple[str, int], int] = {}
    for m in original:
        if m.sequence in removed:
            continue
        source = swap.get(m.sequence, m)
        data = tampered.get(source.sequence, source.data)
        ack = await js.publish(
            source.subject.replace(naming.prefix, f"{naming.prefix}copy", 1),
            data,
            stream=copy,
            headers={CHAIN_HEADER: source.link or ""},
        )
        positions[(source.subject.rsplit(".", 1)[1], source.sequence)] = ack.seq

    report = await audit_stream(js, copy)
    breaks = {b.subject.rsplit(".", 1)[1]: b.sequence for b in report.breaks}
    assert breaks == {
        "a": positions[("a", by_deal["a"][1].sequence)],  # the altered event itself
        "b": positions[("b", by_deal["b"][2].sequence)],  # the event after the one removed
        "c": positions[("c", by_deal["c"][2].sequence)],  # the first one out of place
    }


async def test_a_signed_export_checks_offline_and_a_rewritten_chain_fails_the_seal(
    store: EventStore, nats_conn: tuple[Any, JetStreamContext], naming: Naming
) -> None:
    _, js = nats_conn
    await history(store)
    key = new_signing_key()
    anchor = await Anchorer(js, naming, naming.events_stream, key).take()
    out = io.StringIO()
    seal = write_export([m async for m in scan(js, naming.events_stream)], out, key, [anchor])
    lines = out.getvalue().splitlines()
    assert len(lines) == 14 and seal.count == 12
    check = check_export(lines, public_key_of(key))
    assert check.ok and check.anchor == anchor

    # An altered event, with every later link of its chain recomputed: the chains hold, the seal does not.
    first = msgspec.json.decode(lines[0])
    data = msgspec.json.decode(base64.b64decode(first["data"]))
    data["actor"] = "someone-else"
    first["data"] = base64.b64encode(msgspec.json.encode(data)).decode()
    rewritten = [first] + [msgspec.json.decode(line) for line in lines[1:-2]]
    links: dict[str, str] = {}
    for item in rewritten:
        item["link"] = chain_link(links.get(item["subject"], GENESIS), base64.b64decode(item["data"]))
        links[item["subject"]] = item["link"]
    forged = [msgspec.json.encode(i).decode() for i in rewritten] + lines[-2:]
    check = check_export(forged, public_key_of(key))
    assert check.report.intact and not check.heads_match and not check.ok
    assert any("differ from the anchor" in p for p in check.anchor_problems), check.anchor_problems
    # Plainly altered, without rewriting the chain: the chain breaks at that event.
    untouched_link = {**first, "link": msgspec.json.decode(lines[0])["link"]}
    plain = [msgspec.json.encode(untouched_link).decode(), *lines[1:]]
    assert check_export(plain, public_key_of(key)).report.breaks[0].sequence == first["sequence"]
    # A seal signed by another key fails against the company's public key.
    assert not check_export(lines, public_key_of(new_signing_key())).signature_valid


async def copy_of_log(js: JetStreamContext, naming: Naming) -> tuple[str, list[ChainedMessage]]:
    """The log copied, links and all, into a stream that allows deletes: the attacker's position, who got the
    administrator's rights over the log."""
    copy = f"{naming.prefix.upper()}_TAMPERABLE"
    await js.add_stream(StreamConfig(name=copy, subjects=[f"{naming.prefix}copy.>"], deny_delete=False))
    copied: list[ChainedMessage] = []
    async for m in scan(js, naming.events_stream):
        subject = m.subject.replace(naming.prefix, f"{naming.prefix}copy", 1)
        ack = await js.publish(subject, m.data, stream=copy, headers={CHAIN_HEADER: m.link or ""})
        copied.append(ChainedMessage(ack.seq, subject, m.data, m.link))
    return copy, copied


async def test_an_event_appended_without_a_link_after_chains_began_is_a_break(
    store: EventStore, nats_conn: tuple[Any, JetStreamContext], naming: Naming
) -> None:
    _, js = nats_conn
    await history(store)
    moved = envelope(DealStageChanged(from_stage="won", to_stage="lost"), "deal", "a")
    into_a = await js.publish(naming.aggregate_subject("deal", "a"), encode(moved), stream=naming.events_stream)
    opened = envelope(deal_opened("won"), "deal", "forged")
    new_deal = await js.publish(naming.aggregate_subject("deal", "forged"), encode(opened), stream=naming.events_stream)
    report = await audit_stream(js, naming.events_stream)
    assert [b.sequence for b in report.breaks] == [into_a.seq, new_deal.seq]
    assert all("no chain link" in b.reason for b in report.breaks)
    assert report.unchained == 0


async def test_a_removed_tail_and_a_deleted_last_event_show_against_the_anchor(
    store: EventStore, nats_conn: tuple[Any, JetStreamContext], naming: Naming
) -> None:
    _, js = nats_conn
    await history(store)
    copy, copied = await copy_of_log(js, naming)
    key = new_signing_key()
    anchor = await Anchorer(js, naming, copy, key).take()
    assert anchor.last_sequence == copied[-1].sequence and anchor.events == 12 and anchor.aggregates == 4
    assert await stored_anchors(js, naming, copy) == [anchor]

    last_of_a = [m for m in copied if m.subject.endswith(".a")][-1]
    await js.delete_msg(copy, last_of_a.sequence)  # deal a's last event
    await js.delete_msg(copy, copied[-1].sequence)  # the log's last event (deal d's last)
    assert (await audit_stream(js, copy)).intact  # every remaining link holds: the chains alone cannot see it

    check = check_against_anchors(
        [m async for m in scan(js, copy)], copy, await stored_anchors(js, naming, copy), public_key_of(key)
    )
    assert not check.ok and check.anchor == anchor
    changed = {p.split("the chain heads of ", 1)[1].split(" ")[0] for p in check.problems if "chain heads" in p}
    assert changed == {last_of_a.subject.rpartition(".")[0], copied[-1].subject.rpartition(".")[0]}
    assert any("the log's tail was removed" in p for p in check.problems)
    assert any("10 events" in p for p in check.problems)
    # A fresh anchor would bless the shortened log: it is refused instead.
    with pytest.raises(AnchorRefused) as refused:
        await Anchorer(js, naming, copy, key).take()
    assert any("the log's tail was removed" in p for p in refused.value.problems)
    assert await stored_anchors(js, naming, copy) == [anchor]


async def test_a_rewritten_chain_shows_against_the_anchor(
    store: EventStore, nats_conn: tuple[Any, JetStreamContext], naming: Naming
) -> None:
    _, js = nats_conn
    await history(store)
    copy, copied = await copy_of_log(js, naming)
    key = new_signing_key()
    await Anchorer(js, naming, copy, key).take()

    # Deal b's events after its first are deleted and written again, the stage move altered, every link redone.
    of_b = [m for m in copied if m.subject.endswith(".b")]
    for m in of_b[1:]:
        await js.delete_msg(copy, m.sequence)
    link = of_b[0].link or ""
    for m in of_b[1:]:
        event = msgspec.json.decode(m.data)
        if event["data"].get("to_stage") == "won":
            event["data"]["to_stage"] = "lost"
        data = msgspec.json.encode(event)
        link = chain_link(link, data)
        await js.publish(m.subject, data, stream=copy, headers={CHAIN_HEADER: link})
    assert (await audit_stream(js, copy)).intact

    check = check_against_anchors(
        [m async for m in scan(js, copy)], copy, await stored_anchors(js, naming, copy), public_key_of(key)
    )
    assert not check.ok
    assert any(of_b[0].subject.rpartition(".")[0] in p and "differ from the anchor" in p for p in check.problems)


async def test_anchors_are_kept_outside_the_log_where_none_can_be_deleted_and_only_new_events_get_one(
    store: EventStore, nats_conn: tuple[Any, JetStreamContext], naming: Naming
) -> None:
    _, js = nats_conn
    config = (await js.stream_info(naming.anchors_stream)).config
    assert config.deny_delete and config.deny_purge and config.subjects == [naming.all_anchors]
    await history(store)
    anchorer = Anchorer(js, naming, naming.events_stream, new_signing_key())
    first = await anchorer.take()
    assert await anchorer.take() == first  # nothing new: no second anchor
    await store.append([envelope(DealStageChanged(from_stage="won", to_stage="lost"), "deal", "a")], None)
    second = await anchorer.take()
    assert second.last_sequence == first.last_sequence + 1 and second.events == 13
    assert await stored_anchors(js, naming, naming.events_stream) == [first, second]
    with pytest.raises(APIError) as denied:
        await js.delete_msg(naming.anchors_stream, 1)
    assert denied.value.err_code == MESSAGE_DELETE_DENIED
    with pytest.raises(APIError):
        await js.purge_stream(naming.anchors_stream)
    assert (await js.stream_info(naming.anchors_stream)).state.messages == 2


async def test_anchors_lost_with_their_stream_still_judge_from_the_copies_kept_elsewhere(
    store: EventStore, nats_conn: tuple[Any, JetStreamContext], naming: Naming
) -> None:
    """The attacker with the administrator's rights: removes an aggregate's last event, then deletes the
    anchors' stream and brings back only the anchor from before that event. The job's own file and the
    auditor's copies still know the lost anchor."""
    _, js = nats_conn
    await history(store)
    copy, copied = await copy_of_log(js, naming)
    key = new_signing_key()
    first = await Anchorer(js, naming, copy, key).take()
    last_of_a = [m for m in copied if m.subject.endswith(".a")][-1]
    link = chain_link(last_of_a.link or "", b'{"later":1}')
    await js.publish(last_of_a.subject, b'{"later":1}', stream=copy, headers={CHAIN_HEADER: link})
    second = await Anchorer(js, naming, copy, key, [first]).take()
    kept = [first, second]  # the job's --keep file, and the auditor's 'audit anchors --out'
    assert second.previous == anchor_id(first)

    await js.delete_msg(copy, second.last_sequence)  # a's new last event
    await js.delete_stream(naming.anchors_stream)
    await ensure_streams(js, naming, StreamSettings())
    await js.publish(naming.anchor_subject(copy), msgspec.json.encode(first), stream=naming.anchors_stream)

    last_of_c = [m for m in copied if m.subject.endswith(".c")][-1]
    link = chain_link(last_of_c.link or "", b'{"meanwhile":1}')
    await js.publish(last_of_c.subject, b'{"meanwhile":1}', stream=copy, headers={CHAIN_HEADER: link})
    # A job that trusts the stream alone signs the shortened log, once a later event came...
    unaware = await Anchorer(js, naming, copy, key).take()
    stored = await stored_anchors(js, naming, copy)
    assert (
        stored == [first, unaware]
        and check_against_anchors([m async for m in scan(js, copy)], copy, stored, public_key_of(key)).ok
    )
    # ... but not one that keeps its own file, and the auditor's copies show the lost anchor.
    with pytest.raises(AnchorRefused) as refused:
        await Anchorer(js, naming, copy, key, kept).take()
    assert any(second.taken_at in p and "anchors were lost" in p for p in refused.value.problems)
    check = check_against_anchors([m async for m in scan(js, copy)], copy, [*kept, *stored], public_key_of(key))
    assert not check.ok
    assert any(second.taken_at in p and "not in the line of the last anchor" in p for p in check.problems)
