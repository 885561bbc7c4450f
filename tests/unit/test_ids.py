"""The one id check: a full match of its rule, never a prefix, wherever an id enters."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import string
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.envelope import AggregateId
from events.ids import AGGREGATE_ID_PATTERN, InvalidId, check_id, derived_id, uuid7
from events.subjects import Naming
from services.errors import InputError
from services.providers import meta, typeform, webflow
from workers.intake import Rejection, validate

ID_CHARS = string.ascii_letters + string.digits + "-_"
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


@given(value=st.text(max_size=80))
def test_an_id_passes_exactly_when_every_character_is_a_subject_token_character(value: str) -> None:
    valid = 1 <= len(value) <= 64 and all(c in ID_CHARS for c in value)
    try:
        assert check_id(value, "deal_id") == value
    except InvalidId as exc:
        assert not valid
        assert exc.field == "deal_id" and "letters, digits" in exc.reason
    else:
        assert valid


@pytest.mark.parametrize("value", ["x\n", "x\r\n", ">", "*", "a.b", "a b", "a\x00b", "ünï", "x" * 65, ""])
def test_hostile_ids_fail_the_check_the_subject_and_the_envelope(value: str) -> None:
    with pytest.raises(InvalidId):
        check_id(value, "lead_id")
    with pytest.raises(InvalidId):
        Naming("t").aggregate_subject("lead", value)
    # The documented pattern says the same under re.search (msgspec, JSON Schema): no prefix match.
    assert re.search(AGGREGATE_ID_PATTERN, value) is None
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(value, AggregateId)


def test_our_own_ids_pass() -> None:
    for value in (uuid7(), derived_id("meta", "1"), "acme-renewal", "a_b", "x" * 64):
        assert check_id(value, "id") == value
        assert Naming("t").aggregate_subject("deal", value).endswith(f".{value}")


@given(value=st.text(max_size=140))
def test_a_ref_is_printable_ascii_without_spaces(value: str) -> None:
    valid = 1 <= len(value) <= 128 and all("!" <= c <= "~" for c in value)
    try:
        check_id(value, "source_ref", "ref")
    except InvalidId:
        assert not valid
    else:
        assert valid


def _inbox(**changes: object) -> bytes:
    item = {
        "integration": "hubspot-sync",
        "source_ref": "hs-1",
        "occurred_at": "2026-11-22T12:00:00Z",
        "lead": {"email": "ana@example.com"},
    }
    return msgspec.json.encode(item | changes)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"integration": "hubspot\n"}, "integration"),
        ({"source_ref": "hs 1"}, "source_ref"),
        ({"source_ref": "hs-1\n"}, "source_ref"),
        ({"lead": {"email": "ana@example.com", "form_id": "f\x00"}}, "lead.form_id"),
        ({"lead": {"email": "ana@example.com", "key_ref": ">"}}, "lead.key_ref"),
        ({"lead": {"email": "ana@example.com", "sealed": "AAAA"}}, "lead.sealed"),
    ],
)
def test_the_nats_inbox_dead_letters_a_bad_id_naming_it(changes: dict[str, object], field: str) -> None:
    with pytest.raises(Rejection, match=re.escape(f"at `$.{field}`")):
        validate(_inbox(**changes), NOW)
    assert validate(_inbox(), NOW).source_ref == "hs-1"


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"


def _webhook(name: str, path: tuple[str | int, ...], value: object) -> bytes:
    document = json.loads((FIXTURES / name).read_text())
    holder = document
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = value
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("parse", "name", "path", "field"),
    [
        (
            meta.parse,
            "meta_leadgen_webhook.json",
            ("entry", 0, "changes", 1, "value", "leadgen_id"),
            "entry.0.changes.1.value.leadgen_id",
        ),
        (
            meta.parse,
            "meta_leadgen_webhook.json",
            ("entry", 0, "changes", 0, "value", "form_id"),
            "entry.0.changes.0.value.form_id",
        ),
        (typeform.parse, "typeform_form_response.json", ("form_response", "token"), "form_response.token"),
        (webflow.parse, "webflow_form_submission.json", ("payload", "id"), "payload.id"),
    ],
)
@pytest.mark.parametrize("value", ["a b", "ünï", "a\nb", "a\x7fb"])
def test_a_webhook_id_fails_the_same_check_naming_its_path(
    parse: Callable[[bytes], object], name: str, path: tuple[str | int, ...], field: str, value: str
) -> None:
    with pytest.raises(InputError) as caught:
        parse(_webhook(name, path, value))
    assert [e.field for e in caught.value.errors] == [field]


@pytest.mark.parametrize("value", [">", "a.b", "x\n"])
def test_the_history_command_refuses_a_hostile_id_before_it_reads_the_log(
    value: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from services import audit_cli

    monkeypatch.setenv("DEALSTREAM_NATS_URL", "nats://127.0.0.1:1")  # nothing listens: a read would fail otherwise
    assert asyncio.run(audit_cli.history("deal", value, "table", False, None)) == 2
    assert "`ID` must be 1 to 64 letters" in capsys.readouterr().err
