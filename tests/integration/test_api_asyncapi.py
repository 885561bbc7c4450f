"""The AsyncAPI document of the NATS interface describes the real subjects and validates the real messages."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import jsonschema_rs
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from events.subjects import Naming
from workers.intake import validate

pytestmark = pytest.mark.integration

INBOX_LEAD = {
    "integration": "hubspot-sync",
    "source_ref": "hs-1001",
    "occurred_at": "2025-11-22T12:39:50+01:00",
    "lead": {"email": "ana.ruiz@example.net", "full_name": "Ana Ruiz", "company": "Ruiz Logistics"},
}


def payload_validator(doc: dict[str, Any], channel: str) -> Any:
    """A validator for the payload of the channel's one message, resolving references within the document."""
    (message,) = doc["channels"][channel]["messages"].values()
    name = message["$ref"].rsplit("/", 1)[1]
    payload = doc["components"]["messages"][name]["payload"]
    return jsonschema_rs.Draft202012Validator({**payload, "components": doc["components"]})


def matches(address: str, subject: str) -> bool:
    """Whether a subject is one of a channel address's, each {parameter} standing for one token."""
    return re.fullmatch(re.sub(r"\\\{[a-z_]+\\\}", r"[^.]+", re.escape(address)), subject) is not None


async def fetch(api: AsyncTestClient[Litestar], path: str) -> dict[str, Any]:
    r = await api.get(path, headers={"Authorization": ""})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    doc: dict[str, Any] = r.json()
    return doc


async def test_the_asyncapi_document_lists_the_inbox_the_event_subjects_and_the_dead_letters(
    api: AsyncTestClient[Litestar], naming: Naming
) -> None:
    doc = await fetch(api, "/v1/asyncapi")
    assert doc == await fetch(api, "/v1/asyncapi/asyncapi.json")
    assert doc["asyncapi"].startswith("3.")
    channels = {name: channel["address"] for name, channel in doc["channels"].items()}
    assert channels == {
        "inbox": naming.inbox_subject("lead"),
        "events": f"{naming.prefix}.evt.{{aggregate_type}}.{{partition}}.{{aggregate_id}}",
        "dead-letters": f"{naming.prefix}.dlq.{{origin}}",
    }
    actions = {name: operation["action"] for name, operation in doc["operations"].items()}
    assert actions == {"inbox": "receive", "events": "send", "dead-letters": "send"}
    assert set(doc["channels"]["events"]["parameters"]) == {"aggregate_type", "partition", "aggregate_id"}
    # The same document as the OpenAPI one lists: the route is served and documented beside it.
    openapi = (await api.get("/v1/openapi/openapi.json", headers={"Authorization": ""})).json()
    assert "/v1/asyncapi" in openapi["paths"]


async def test_its_schemas_validate_a_real_envelope_from_the_log_and_a_real_inbox_message(
    api: AsyncTestClient[Litestar], nats_conn: tuple[NATS, JetStreamContext], naming: Naming
) -> None:
    _, js = nats_conn
    doc = await fetch(api, "/v1/asyncapi")

    r = await api.post("/v1/leads", json={"email": "marta@example.pl", "company": "Kowalski i Synowie"})
    assert r.status_code == 202, r.text
    subject = naming.aggregate_subject("lead", r.json()["aggregate_id"])
    stored = await js.get_last_msg(naming.events_stream, subject)
    assert stored.data is not None and stored.subject is not None
    assert matches(doc["channels"]["events"]["address"], stored.subject)
    envelopes = payload_validator(doc, "events")
    envelope = json.loads(stored.data)
    assert envelopes.is_valid(envelope), list(envelopes.iter_errors(envelope))
    assert not envelopes.is_valid({**envelope, "aggregate_type": "invoice"})
    assert not envelopes.is_valid({**envelope, "data": {**envelope["data"], "type": "lead.vanished.v1"}})

    await js.publish(naming.inbox_subject("lead"), json.dumps(INBOX_LEAD).encode(), stream=naming.inbox_stream)
    published = await js.get_last_msg(naming.inbox_stream, naming.inbox_subject("lead"))
    assert published.data is not None
    validate(published.data, dt.datetime.now(dt.UTC))  # the intake worker takes it
    inbox = payload_validator(doc, "inbox")
    assert inbox.is_valid(json.loads(published.data))
    assert not inbox.is_valid({k: v for k, v in INBOX_LEAD.items() if k != "integration"})
    assert not inbox.is_valid({**INBOX_LEAD, "surprise": 1})
