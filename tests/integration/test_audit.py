"""Tamper evidence against a real nats-server: the chains of an untouched log hold; an altered, removed or
moved event in a copy of the stream is caught at the right position; a signed export checks offline."""

from __future__ import annotations

import base64
import io
from typing import Any

import msgspec
import pytest
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from events.audit import audit_stream, check_export, new_signing_key, public_key_of, scan, write_export
from events.chain import CHAIN_HEADER, GENESIS, chain_link
from events.store import EventStore
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
    out = io.StringIO()
    seal = write_export([m async for m in scan(js, naming.events_stream)], out, key)
    lines = out.getvalue().splitlines()
    assert len(lines) == 13 and seal.count == 12
    check = check_export(lines, public_key_of(key))
    assert check.ok

    # An altered event, with every later link of its chain recomputed: the chains hold, the seal does not.
    first = msgspec.json.decode(lines[0])
    data = msgspec.json.decode(base64.b64decode(first["data"]))
    data["actor"] = "someone-else"
    first["data"] = base64.b64encode(msgspec.json.encode(data)).decode()
    rewritten = [first] + [msgspec.json.decode(line) for line in lines[1:-1]]
    links: dict[str, str] = {}
    for item in rewritten:
        item["link"] = chain_link(links.get(item["subject"], GENESIS), base64.b64decode(item["data"]))
        links[item["subject"]] = item["link"]
    forged = [msgspec.json.encode(i).decode() for i in rewritten] + [lines[-1]]
    check = check_export(forged, public_key_of(key))
    assert check.report.intact and not check.heads_match and not check.ok
    # Plainly altered, without rewriting the chain: the chain breaks at that event.
    untouched_link = {**first, "link": msgspec.json.decode(lines[0])["link"]}
    plain = [msgspec.json.encode(untouched_link).decode(), *lines[1:]]
    assert check_export(plain).report.breaks[0].sequence == first["sequence"]
    # A seal signed by another key fails against the company's public key.
    assert not check_export(lines, public_key_of(new_signing_key())).signature_valid
