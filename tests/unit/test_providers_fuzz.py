"""Fuzzing the adapters: whatever arrives, the answer is a valid lead or an ``InputError``/``AuthError``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.envelope import RawPayload
from events.types import LeadCaptured
from services.errors import AuthError, InputError
from services.providers import html_form, hubspot, meta, typeform, webflow
from services.providers.base import InboundLead

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
