"""The AsyncAPI document of the NATS interface: the inbox integrations publish to, the event subjects consumers
read, and the dead letters, served beside the OpenAPI document."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from faststream.nats import JStream, NatsBroker
from faststream.specification import AsyncAPI
from litestar import Request, Response, get

from events.config import NatsSettings
from events.envelope import AGGREGATE_TYPES, Envelope
from events.subjects import PARTITIONS
from workers.intake import InboxLead

INBOX = "inbox"
EVENTS = "events"
DEAD_LETTERS = "dead-letters"

_PAYLOAD_TYPES: dict[str, type[msgspec.Struct]] = {INBOX: InboxLead, EVENTS: Envelope}
"""Channels whose payload schema comes from the msgspec types the code decodes with."""

_HEADERS: dict[str, dict[str, str]] = {
    INBOX: {"Nats-Msg-Id": "optional: kept as the event's correlation id"},
    EVENTS: {
        "Nats-Msg-Id": "the event id (JetStream's duplicate window drops a resend)",
        "Dealstream-Chain": "the event's link in its aggregate's hash chain (hex SHA-256)",
        "Dealstream-Request-Sha256": "SHA-256 of the HTTP request that made the event, when one did",
    },
    DEAD_LETTERS: {
        "Dealstream-Reason": "why the message was refused, naming the field, never its value",
        "Dealstream-Subject": "the subject the message came from",
        "Dealstream-Sequence": "its sequence in the stream it came from",
        "Dealstream-Projection": "the projection build that refused an event (projections only)",
        "Dealstream-Origin": "intake, for a refused inbox message",
    },
}


def _declare(broker: NatsBroker, nats: NatsSettings) -> None:
    naming = nats.naming

    @broker.subscriber(
        naming.inbox_subject("lead"),
        stream=JStream(naming.inbox_stream, declare=False),
        title=INBOX,
        description=(
            "An integration that cannot call HTTP publishes one lead as JSON (JetStream, stream "
            f"{naming.inbox_stream}). The intake worker appends it once per (integration, source_ref), sealed like "
            f"every capture, or dead-letters it to {naming.dead_letter_subject('intake')}; then it erases the message."
        ),
    )
    async def inbox(body: dict[str, Any]) -> None:
        """Declared for the document only: the intake worker consumes the inbox (workers/intake.py)."""

    broker.publisher(
        f"{naming.prefix}.evt.{{aggregate_type}}.{{partition}}.{{aggregate_id}}",
        stream=JStream(naming.events_stream, declare=False),
        schema=dict[str, Any],
        title=EVENTS,
        description=(
            f"The event log (stream {naming.events_stream}): one envelope as JSON per message, one subject per "
            "aggregate, in log order. Read it with a durable pull consumer; data.type names the event and its "
            "version. Personal fields arrive sealed (see data.sealed)."
        ),
    )
    broker.publisher(
        f"{naming.prefix}.dlq.{{origin}}",
        stream=JStream(naming.dead_letter_stream, declare=False),
        schema=bytes,
        title=DEAD_LETTERS,
        description=(
            f"Dead letters (stream {naming.dead_letter_stream}): origin is intake or a projection's name. A "
            "projection's dead letter carries the event's stored bytes; intake's carries no body (it may hold "
            "personal data in clear); the headers say why."
        ),
    )


_CORRELATION: dict[str, str] = {INBOX: "$message.header#/Nats-Msg-Id", EVENTS: "$message.payload#/correlation_id"}
"""Where each message keeps its correlation id (FastStream assumes a correlation_id header, which we do not set)."""

_PARAMETERS: dict[str, dict[str, Any]] = {
    EVENTS: {
        "aggregate_type": {"enum": list(AGGREGATE_TYPES), "description": "the aggregate's type"},
        "partition": {
            "description": f"0 to {PARTITIONS - 1}: the aggregate's partition, derived from its id (partition_of)"
        },
        "aggregate_id": {"description": "the aggregate's id: 1 to 64 letters, digits, '-' or '_'"},
    },
    DEAD_LETTERS: {"origin": {"description": "intake, or the name of the projection that refused the event"}},
}


def _untagged(schema: dict[str, Any]) -> dict[str, Any]:
    """A tagged struct's schema as msgspec decodes it outside a union: the ``type`` tag may be left out."""
    required = [name for name in schema.get("required", []) if name != "type"]
    untagged = {key: value for key, value in schema.items() if key != "required"}
    return {**untagged, "required": required} if required else untagged


def document(nats: NatsSettings, version: str) -> dict[str, Any]:
    """The AsyncAPI 3.0 document: channels declared on a FastStream broker (never connected), payloads from msgspec."""
    broker = NatsBroker(nats.shown_servers)
    _declare(broker, nats)
    spec = AsyncAPI(
        broker,
        title="Dealstream NATS interface",
        version=version,
        description="What integrations publish to Dealstream on NATS, and what its event log offers consumers.",
    ).to_specification()
    doc: dict[str, Any] = json.loads(spec.to_json())
    # FastStream derives payload schemas through pydantic, which cannot read msgspec types: the channel's
    # placeholder payload is pointed at the schema msgspec generates from the very type the code decodes with.
    roots, components = msgspec.json.schema_components(
        list(_PAYLOAD_TYPES.values()), ref_template="#/components/schemas/{name}"
    )
    schemas = doc["components"]["schemas"]
    schemas.update(components)
    schemas["InboxLead"]["properties"]["lead"] = {"$ref": "#/components/schemas/InboxLeadCaptured"}
    schemas["InboxLeadCaptured"] = _untagged(schemas["LeadCaptured"])
    for channel, message in doc["components"]["messages"].items():
        name = channel.split(":", 1)[0]
        if name in _PAYLOAD_TYPES:
            root = roots[list(_PAYLOAD_TYPES).index(name)]
            payload = message["payload"]["$ref"].rsplit("/", 1)[1]
            schemas[payload] = root
        if name in _CORRELATION:
            message["correlationId"] = {"location": _CORRELATION[name]}
        else:
            message.pop("correlationId", None)
        message["headers"] = {
            "type": "object",
            "properties": {header: {"type": "string", "description": text} for header, text in _HEADERS[name].items()},
        }
    for name, parameters in _PARAMETERS.items():
        doc["channels"][name]["parameters"] = parameters
    return doc


@get(["/v1/asyncapi", "/v1/asyncapi/asyncapi.json"], tags=["ops"], sync_to_thread=False)
def asyncapi(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """The AsyncAPI document of the NATS interface (inbox, event subjects, dead letters), generated from the types."""
    doc: dict[str, Any] = request.app.state.asyncapi
    return Response(doc, media_type="application/json")
