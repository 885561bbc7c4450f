"""The intake worker against a real nats-server: valid inbox leads enter the log once, bad ones dead-letter."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from typing import Any

import pytest
import structlog
import structlog.testing

from events.ids import derived_id
from events.personal import Vault
from events.store import EventStore
from events.subjects import Naming
from tests.conftest import read_opened
from tests.waiting import eventually
from workers.intake import Intake

pytestmark = pytest.mark.integration

GOOD = {
    "integration": "hubspot-sync",
    "source_ref": "hs-1001",
    "occurred_at": "2025-11-22T12:39:50+01:00",
    "lead": {"email": "ana.ruiz@example.net", "full_name": "Ana Ruiz", "company": "Ruiz Logistics"},
}


async def test_inbox_leads_are_captured_once_and_bad_ones_dead_lettered(
    nats_conn: Any, store: EventStore, naming: Naming
) -> None:
    _, js = nats_conn
    subject = naming.inbox_subject("lead")
    await js.publish(subject, json.dumps(GOOD).encode(), stream=naming.inbox_stream)
    await js.publish(
        subject, json.dumps({**GOOD, "lead": {"email": "not-an-email"}}).encode(), stream=naming.inbox_stream
    )
    await js.publish(subject, b"\xff not json", stream=naming.inbox_stream)
    await js.publish(subject, json.dumps(GOOD).encode(), stream=naming.inbox_stream)  # republished

    stop = asyncio.Event()
    intake = Intake(js, store, naming)
    await intake.subscribe()  # the durable consumer exists before we ask it how far it got
    task = asyncio.create_task(intake.run(stop))
    lead_id = derived_id("nats", "hubspot-sync", "hs-1001")

    async def settled() -> bool:
        info = await js.consumer_info(naming.inbox_stream, f"{naming.prefix}_intake")
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    try:
        await eventually(settled)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    history = await read_opened(store, Vault(js, naming), lead_id)
    assert len(history) == 1
    envelope = history[0].envelope
    assert envelope.occurred_at.isoformat() == "2025-11-22T11:39:50+00:00"
    assert envelope.source == "nats" and envelope.actor == "integration:hubspot-sync"
    assert envelope.data.source_ref == "hs-1001"  # type: ignore[union-attr]
    assert json.loads(envelope.raw.body) == GOOD  # type: ignore[union-attr]

    dlq = await js.stream_info(naming.dead_letter_stream)
    assert dlq.state.messages == 2
    first = await js.get_msg(naming.dead_letter_stream, seq=1)
    assert first.headers is not None and "email" in first.headers["Dealstream-Reason"]
    assert not first.data  # the reason names the field; the clear body is not kept
    # Every inbox message, taken in or refused, is erased from the inbox once handled.
    assert (await js.stream_info(naming.inbox_stream)).state.messages == 0
    events = await js.stream_info(naming.events_stream)
    assert events.state.messages == 1


async def test_an_inbox_lead_with_a_hostile_id_is_dead_lettered_naming_it(
    nats_conn: Any, store: EventStore, naming: Naming
) -> None:
    _, js = nats_conn
    subject = naming.inbox_subject("lead")
    hostile = [
        ({**GOOD, "source_ref": "hs 1001"}, "source_ref"),
        ({**GOOD, "source_ref": "hs-1001\n"}, "source_ref"),
        ({**GOOD, "integration": "hubspot\n"}, "integration"),
        ({**GOOD, "lead": {**GOOD["lead"], "form_id": "f\u00fc"}}, "lead.form_id"),  # type: ignore[dict-item]
    ]
    for message, _ in hostile:
        await js.publish(subject, json.dumps(message).encode(), stream=naming.inbox_stream)

    stop = asyncio.Event()
    intake = Intake(js, store, naming)
    await intake.subscribe()
    task = asyncio.create_task(intake.run(stop))

    async def settled() -> bool:
        info = await js.consumer_info(naming.inbox_stream, f"{naming.prefix}_intake")
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    try:
        await eventually(settled)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    assert (await js.stream_info(naming.events_stream)).state.messages == 0
    for seq, (_, field) in enumerate(hostile, start=1):
        dead = await js.get_msg(naming.dead_letter_stream, seq=seq)
        assert dead.headers is not None and f"at `$.{field}`" in dead.headers["Dealstream-Reason"]


async def test_an_inbox_that_denies_deletes_is_still_taken_in_and_says_it_was_not_erased(
    nats_conn: Any, store: EventStore, naming: Naming
) -> None:
    """Intake erases each handled inbox message; on an inbox made with deny_delete it cannot, and must neither
    stall nor retry for ever: it warns and goes on (the message then ages out with the inbox's max_age)."""
    _, js = nats_conn
    info = await js.stream_info(naming.inbox_stream)
    await js.update_stream(dataclasses.replace(info.config, deny_delete=True))
    await js.publish(naming.inbox_subject("lead"), json.dumps(GOOD).encode(), stream=naming.inbox_stream)
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(Intake(js, store, naming).run(stop))
        try:

            async def captured() -> bool:
                return bool(await store.read("lead", derived_id("nats", "hubspot-sync", "hs-1001")))

            await eventually(captured)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["intake.inbox_not_erased"]
