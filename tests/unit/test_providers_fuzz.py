"""Fuzzing the adapters: whatever arrives, the answer is a valid lead or an ``InputError``/``AuthError``."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.codec import DecodeError, decode, encode
from events.envelope import RawPayload
from events.types import LeadCaptured
from services.errors import AuthError, InputError
from services.providers import html_form, hubspot, meta, typeform, webflow
from services.providers.base import InboundLead
from tests.builders import envelope
from workers import intake

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
NOW = dt.datetime(2025, 11, 22, 16, 2, 0, tzinfo=dt.UTC)

fuzz = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["", " ", "a@b.co", "+48 600", "2025-11-22T16:00:00Z", "1763812790", "leadgen", "\x00"])
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=16,
)


def _lists(lead: InboundLead | list[InboundLead]) -> list[InboundLead]:
    return lead if isinstance(lead, list) else [lead]


PARSERS: dict[str, Callable[[bytes], list[InboundLead]]] = {
    "meta": meta.parse,
    "meta_graph": lambda body: [meta.parse_graph_lead(body)],
    "typeform": typeform.parse,
    "webflow": webflow.parse,
    "hubspot": lambda body: [hubspot.parse(body, NOW)],
    "html_form": lambda body: [html_form.parse(body, NOW)],
    "web_form_json": lambda body: [html_form.parse_json(body, NOW)],
}
FIXTURE_OF = {
    "meta": "meta_leadgen_webhook.json",
    "meta_graph": "meta_lead_graph_response.json",
    "typeform": "typeform_form_response.json",
    "webflow": "webflow_form_submission.json",
    "hubspot": "hubspot_forms_v3_submission.json",
}


def check(parser: Callable[[bytes], list[InboundLead]], body: bytes) -> None:
    """Parse; an ``InputError`` is fine, any other exception fails the test, and every lead must be valid."""
    try:
        leads = parser(body)
    except InputError as exc:
        assert exc.errors
        assert all(e.field and e.reason for e in exc.errors)
        assert exc.status in (400, 422)
        return
    for lead in leads:
        assert msgspec.json.decode(msgspec.json.encode(lead.lead), type=LeadCaptured) == lead.lead
        assert msgspec.json.decode(msgspec.json.encode(lead.raw), type=RawPayload) == lead.raw
        assert lead.occurred_at.tzinfo is dt.UTC
        assert lead.source_ref == lead.lead.source_ref


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> Any:
    """The document with some values replaced by arbitrary JSON and some keys dropped."""

    def walk(node: Any) -> Any:
        if draw(st.integers(0, 7)) == 0:
            return draw(json_values)
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items() if draw(st.integers(0, 11))}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(document)


@pytest.mark.parametrize("name", sorted(PARSERS))
@fuzz
@given(body=st.binary(max_size=300))
def test_arbitrary_bytes(name: str, body: bytes) -> None:
    check(PARSERS[name], body)


@pytest.mark.parametrize("name", sorted(PARSERS))
@fuzz
@given(value=json_values, ascii_only=st.booleans())
def test_arbitrary_json(name: str, value: Any, ascii_only: bool) -> None:
    check(PARSERS[name], json.dumps(value, ensure_ascii=ascii_only).encode())


@pytest.mark.parametrize("name", sorted(FIXTURE_OF))
@fuzz
@given(data=st.data())
def test_mutated_fixtures(name: str, data: st.DataObject) -> None:
    document = json.loads((FIXTURES / FIXTURE_OF[name]).read_bytes())
    check(PARSERS[name], json.dumps(data.draw(mutated(document))).encode())


@fuzz
@given(answers=st.lists(st.fixed_dictionaries({"type": st.text(max_size=12), "field": json_values}), max_size=5))
def test_typeform_answers_of_any_type(answers: list[dict[str, Any]]) -> None:
    document = json.loads((FIXTURES / "typeform_form_response.json").read_bytes())
    for item in answers:
        item[item["type"]] = item["field"]
        item["field"] = {"id": "x", "ref": item["type"] or "r"}
    document["form_response"]["answers"] = answers
    check(typeform.parse, json.dumps(document).encode())


form_names = st.sampled_from([*html_form.FIELD_NAMES, "utm_source", "answer", "Email"]) | st.text(max_size=10)


@fuzz
@given(pairs=st.lists(st.tuples(form_names, st.text(max_size=40)), max_size=12))
def test_urlencoded_forms(pairs: list[tuple[str, str]]) -> None:
    check(PARSERS["html_form"], urlencode(pairs).encode())


@fuzz
@given(document=st.dictionaries(form_names | st.sampled_from(["occurred_at", "source_ref"]), json_values, max_size=8))
def test_json_web_forms(document: dict[str, Any]) -> None:
    check(PARSERS["web_form_json"], json.dumps(document).encode())


@fuzz
@given(header=st.none() | st.text(max_size=80), body=st.binary(max_size=50))
def test_signature_checks_raise_only_auth_errors(header: str | None, body: bytes) -> None:
    checks: list[Callable[[], None]] = [
        lambda: meta.verify_signature(body, header, "k"),
        lambda: typeform.verify_signature(body, header, "k"),
        lambda: webflow.verify_signature(body, header, header, "k", NOW),
        lambda: webflow.verify_signature(body, "1763827320000", header, "k", NOW),
    ]
    for verify in checks:
        with pytest.raises(AuthError):
            verify()
    if header != "k":
        with pytest.raises(AuthError):
            meta.verify_challenge(
                {"hub.mode": "subscribe", "hub.verify_token": header or "", "hub.challenge": "1"}, "k"
            )


# --- hostile bytes spliced into otherwise valid documents ----------------------------------------------
# Each test puts one hostile thing where a value of a real request was: the rest of the document stays
# valid, so the parser gets past its first checks and meets it where it would really arrive.

SPOT = "\ue000spot"
"""A placeholder value, found again in the JSON text (json.dumps escapes it) and replaced there by raw bytes."""

_SPOT_JSON = json.dumps(SPOT).encode()

DOCUMENTS: dict[str, Any] = {
    **{name: json.loads((FIXTURES / fixture).read_bytes()) for name, fixture in FIXTURE_OF.items()},
    "web_form_json": {"email": "ana@example.com", "first_name": "Ana", "message": "hi", "answers": {"budget": "5k"}},
}
ENVELOPE = json.loads(
    encode(
        envelope(
            LeadCaptured(email="ana@example.com", first_name="Ana", message="hi", answers={"budget": "5k"}),
            "lead",
            "lead-1",
        )
    )
)


def _places(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every value in a JSON document, containers included."""
    found = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _places(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _places(value, (*path, i))
    return found


def _put(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    copy = json.loads(json.dumps(document))
    node = copy
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return copy


@st.composite
def spliced(draw: st.DrawFn, document: Any, raw: bytes) -> bytes:
    """The document as JSON with one of its values replaced by ``raw``, verbatim."""
    place = draw(st.sampled_from(_places(document)))
    return json.dumps(_put(document, place, SPOT)).encode().replace(_SPOT_JSON, raw, 1)


def decode_or_reason(body: bytes) -> None:
    """The codec's property: an envelope, or its ``DecodeError`` with a reason; never another exception."""
    try:
        decoded = decode(body)
    except DecodeError as exc:
        assert exc.reason
        return
    assert decode(encode(decoded)) == decoded


CHECKS: dict[str, Callable[[bytes], None]] = {
    **{name: (lambda body, name=name: check(PARSERS[name], body)) for name in DOCUMENTS},
    "codec": decode_or_reason,
}
SOURCES: dict[str, Any] = {**DOCUMENTS, "codec": ENVELOPE}

deep = st.builds(
    lambda depth, opener: opener * depth + b"1" + (b"]" if opener == b"[" else b"}") * depth,
    st.integers(1, 3_000),
    st.sampled_from([b"[", b'{"k":']),
)
invalid_utf8 = st.builds(
    lambda before, bad, after: b'"' + before.encode() + bad + after.encode() + b'"',
    st.text(alphabet="abc@. ", max_size=5),
    st.sampled_from([b"\xff", b"\x80", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"]),
    st.text(alphabet="abc@. ", max_size=5),
)
huge = st.builds(
    lambda char, size, quote: json.dumps(char * size).encode() if quote else (b"1" * size),
    st.sampled_from(["a", "é", "\U0001f600", " ", "\\", "\x00", "@"]),
    st.sampled_from([201, 10_001, 100_001, 400_000]),
    st.booleans(),
)
hostile = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(CHECKS))
@hostile
@given(data=st.data())
def test_deep_nesting_anywhere(name: str, data: st.DataObject) -> None:
    CHECKS[name](data.draw(spliced(SOURCES[name], data.draw(deep))))


@pytest.mark.parametrize("name", sorted(CHECKS))
@hostile
@given(body=deep)
def test_deep_nesting_as_the_whole_body(name: str, body: bytes) -> None:
    CHECKS[name](body)


@pytest.mark.parametrize("name", sorted(CHECKS))
@hostile
@given(data=st.data())
def test_invalid_utf8_inside_a_string(name: str, data: st.DataObject) -> None:
    CHECKS[name](data.draw(spliced(SOURCES[name], data.draw(invalid_utf8))))


@pytest.mark.parametrize("name", sorted(CHECKS))
@hostile
@given(data=st.data())
def test_huge_values(name: str, data: st.DataObject) -> None:
    CHECKS[name](data.draw(spliced(SOURCES[name], data.draw(huge))))


def _of_another_type(value: Any) -> st.SearchStrategy[Any]:
    kinds = {bool: "bool", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    mine = kinds.get(type(value), "null")
    others = {
        "null": st.none(),
        "bool": st.booleans(),
        "number": st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False),
        "string": st.text(max_size=20),
        "array": st.lists(scalars, max_size=3),
        "object": st.dictionaries(st.text(max_size=8), scalars, max_size=3),
    }
    return st.one_of(*(strategy for kind, strategy in others.items() if kind != mine))


@pytest.mark.parametrize("name", sorted(CHECKS))
@hostile
@given(data=st.data())
def test_a_value_of_the_wrong_type(name: str, data: st.DataObject) -> None:
    document = SOURCES[name]
    place = data.draw(st.sampled_from(_places(document)))
    node = document
    for step in place:
        node = node[step]
    CHECKS[name](json.dumps(_put(document, place, data.draw(_of_another_type(node)))).encode())


@pytest.mark.parametrize("name", sorted(CHECKS))
@hostile
@given(data=st.data(), again=json_values)
def test_duplicate_keys(name: str, data: st.DataObject, again: Any) -> None:
    """A key given twice in one object, the second time with another value (JSON allows it; parsers differ)."""
    document = SOURCES[name]
    objects = [p for p in [(), *_places(document)] if isinstance(_at(document, p), dict) and _at(document, p)]
    place = data.draw(st.sampled_from(objects))
    key = data.draw(st.sampled_from(sorted(_at(document, place))))
    text = json.dumps(_put(document, (*place, SPOT), again) if place else {**document, SPOT: again}).encode()
    CHECKS[name](text.replace(_SPOT_JSON, json.dumps(key).encode(), 1))


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        document = document[step]
    return document


# --- signatures: only the exact one passes ---------------------------------------------------------------


def _sign(provider: str, secret: str, body: bytes, timestamp: str = "") -> str:
    if provider == "typeform":
        return "sha256=" + base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    if provider == "webflow":
        return hmac.new(secret.encode(), timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _verify(provider: str, body: bytes, signature: str, secret: str, timestamp: str) -> None:
    if provider == "meta":
        meta.verify_signature(body, signature, secret)
    elif provider == "typeform":
        typeform.verify_signature(body, signature, secret)
    else:
        webflow.verify_signature(body, timestamp, signature, secret, NOW)


NOW_MS = int(NOW.timestamp() * 1000)
secrets_ = st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s)


@pytest.mark.parametrize("provider", ["meta", "typeform", "webflow"])
@fuzz
@given(
    body=st.binary(max_size=200),
    secret=secrets_,
    other=secrets_,
    tamper=st.sampled_from(["body", "secret", "signature", "timestamp", "none"]),
    position=st.integers(0, 10_000),
)
def test_only_the_exact_signature_passes(
    provider: str, body: bytes, secret: str, other: str, tamper: str, position: int
) -> None:
    timestamp = str(NOW_MS)
    signature = _sign(provider, secret, body, timestamp)
    if tamper == "body":
        flipped = bytearray(body or b"\x00")
        flipped[position % len(flipped)] ^= 1 << position % 8
        body_sent = bytes(flipped) if body else b"x"
        signature_sent, secret_used, timestamp_sent = signature, secret, timestamp
    else:
        body_sent, signature_sent, secret_used, timestamp_sent = body, signature, secret, timestamp
        if tamper == "secret":
            if other == secret:
                return
            secret_used = other
        elif tamper == "signature":
            i = position % len(signature)
            signature_sent = signature[:i] + ("0" if signature[i] != "0" else "1") + signature[i + 1 :]
        elif tamper == "timestamp":
            if provider != "webflow":
                return
            timestamp_sent = str(NOW_MS - 1 - position)
    if tamper == "none":
        _verify(provider, body_sent, signature_sent, secret_used, timestamp_sent)
        return
    with pytest.raises(AuthError):
        _verify(provider, body_sent, signature_sent, secret_used, timestamp_sent)


@fuzz
@given(age_ms=st.integers(-(10**13), 10**13) | st.integers(-300_010, 300_010), body=st.binary(max_size=100))
def test_webflow_refuses_replays_of_old_and_future_timestamps(age_ms: int, body: bytes) -> None:
    """Correctly signed, yet refused when the signed timestamp is more than 5 minutes from now either way."""
    timestamp = str(NOW_MS - age_ms)
    if not timestamp.isdigit():  # before 1970: no such header comes from Webflow; malformed is refused too
        timestamp = "0"
        age_ms = NOW_MS
    signature = _sign("webflow", "k", body, timestamp)
    if abs(age_ms) <= 300_000:
        webflow.verify_signature(body, timestamp, signature, "k", NOW)
        return
    with pytest.raises(AuthError, match="5 minutes"):
        webflow.verify_signature(body, timestamp, signature, "k", NOW)


def test_a_webflow_request_replayed_later_is_refused_though_its_signature_is_right(fixtures_dir: Path) -> None:
    body = (fixtures_dir / "webflow_form_submission.json").read_bytes()
    sent_at = str(NOW_MS)
    signature = _sign("webflow", "k", body, sent_at)
    webflow.verify_signature(body, sent_at, signature, "k", NOW)
    with pytest.raises(AuthError, match="more than 5 minutes old"):
        webflow.verify_signature(body, sent_at, signature, "k", NOW + dt.timedelta(minutes=5, milliseconds=1))


# --- the event decoder -------------------------------------------------------------------------------------


@fuzz
@given(body=st.binary(max_size=400))
def test_the_decoder_on_arbitrary_bytes(body: bytes) -> None:
    decode_or_reason(body)


@fuzz
@given(data=st.data())
def test_the_decoder_on_mutated_envelopes(data: st.DataObject) -> None:
    decode_or_reason(json.dumps(data.draw(mutated(ENVELOPE))).encode())


def test_the_decoder_answers_invalid_utf8_and_deep_nesting_with_its_decode_error() -> None:
    # msgspec raises UnicodeDecodeError and RecursionError here, which a projection worker would not have taken
    # for a poison event (it dead-letters on DecodeError).
    text = json.dumps(_put(ENVELOPE, ("data", "first_name"), SPOT)).encode()
    with pytest.raises(DecodeError, match="UTF-8"):
        decode(text.replace(_SPOT_JSON, b'"An\xffa"'))
    text = json.dumps(_put(ENVELOPE, ("data", "type"), SPOT)).encode()
    with pytest.raises(DecodeError, match="nested too deeply"):
        decode(text.replace(_SPOT_JSON, b"[" * 5_000 + b"]" * 5_000))


@pytest.mark.parametrize("name", ["meta", "typeform", "webflow", "hubspot", "web_form_json"])
def test_nesting_a_thousand_deep_is_a_400_on_the_body(name: str) -> None:
    # msgspec raises RecursionError when it skips (or keeps as Any) a value nested about a thousand deep.
    body = json.dumps(_put(DOCUMENTS[name], ("zz",), SPOT)).encode().replace(_SPOT_JSON, b"[" * 5_000 + b"]" * 5_000)
    with pytest.raises(InputError) as raised:
        PARSERS[name](body)
    assert raised.value.status == 400 and raised.value.errors[0].reason == "nested too deeply"


def test_a_webflow_value_of_lists_nested_900_deep_reads_as_text() -> None:
    # Decodable (under msgspec's limit), but text_of recursed once per level and hit Python's.
    document = _put(DOCUMENTS["webflow"], ("payload", "data", "Budget"), SPOT)
    body = json.dumps(document).encode().replace(_SPOT_JSON, b"[" * 900 + b'"5k"' + b"]" * 900)
    [lead] = webflow.parse(body)
    assert lead.lead.answers["Budget"].count("[") == 899


INBOX_LEAD = {
    "integration": "hubspot-sync",
    "source_ref": "hs-1",
    "occurred_at": "2025-11-22T12:39:50Z",
    "lead": {"type": "lead.captured.v1", "email": "ana@example.com", "full_name": "Ana", "answers": {"budget": "5k"}},
}


@pytest.mark.parametrize("hostile_value", ["deep", "utf8", "huge"])
@hostile
@given(data=st.data())
def test_the_nats_intake_rejects_or_accepts_never_raises_else(hostile_value: str, data: st.DataObject) -> None:
    raw = data.draw({"deep": deep, "utf8": invalid_utf8, "huge": huge}[hostile_value])
    with contextlib.suppress(intake.Rejection):
        intake.validate(data.draw(spliced(INBOX_LEAD, raw)), NOW)


@pytest.mark.parametrize(
    ("answers", "field"),
    [({"budget": "x" * 10_001}, "lead.answers.budget"), ({"q" * 201: "yes"}, "lead.answers")],
)
def test_the_nats_intake_holds_new_leads_to_the_apis_limits(answers: dict[str, str], field: str) -> None:
    body = json.dumps(_put(INBOX_LEAD, ("lead", "answers"), answers)).encode()
    with pytest.raises(intake.Rejection, match=f"at `\\$.{field}`"):
        intake.validate(body, NOW)


def test_an_event_written_under_looser_limits_still_decodes() -> None:
    """Limits on new entries may tighten; what the log already holds must read back forever."""
    old = envelope(LeadCaptured(email="ana@example.com", answers={"q" * 300: "x" * 20_000}), "lead", "lead-1")
    assert decode(encode(old)) == old


def test_the_nats_intake_dead_letters_a_tag_nested_a_thousand_deep() -> None:
    body = json.dumps(_put(INBOX_LEAD, ("lead", "type"), SPOT)).encode()
    with pytest.raises(intake.Rejection, match="nested too deeply"):
        intake.validate(body.replace(_SPOT_JSON, b"[" * 5_000 + b"]" * 5_000), NOW)


@pytest.mark.parametrize(
    ("name", "place", "field"),
    [
        ("meta", ("entry", 0, "changes", 0, "value", "leadgen_id"), "entry.0.changes.0.value.leadgen_id"),
        ("meta_graph", ("id",), "id"),
        ("typeform", ("form_response", "token"), "form_response.token"),
        ("webflow", ("payload", "id"), "payload.id"),
    ],
)
@pytest.mark.parametrize("blank", [" ", "\t \n"])
def test_a_blank_source_id_is_refused(name: str, place: tuple[Any, ...], field: str, blank: str) -> None:
    # It was kept as the lead's identity while the lead itself, cleaned, had none: found by test_duplicate_keys.
    with pytest.raises(InputError) as raised:
        PARSERS[name](json.dumps(_put(DOCUMENTS[name], place, blank)).encode())
    assert [(e.field, e.reason) for e in raised.value.errors] == [(field, "must not be blank")]
