"""The lead-source adapters against the real payload samples: signatures, mappings, business times, errors."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from events.envelope import RawPayload
from events.types import LeadCaptured
from services.errors import AuthError, InputError
from services.providers import html_form, hubspot, meta, typeform, webflow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
NOW = dt.datetime(2025, 11, 22, 16, 2, 0, tzinfo=dt.UTC)
SECRET = "s3cr3t-key"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> Any:
    return json.loads(fixture(name))


def fields_of(exc: pytest.ExceptionInfo[InputError]) -> list[str]:
    return [e.field for e in exc.value.errors]


def hex_hmac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)


# --- Meta ---------------------------------------------------------------------------------------------------


def meta_header(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hex_hmac(secret, body)


def meta_body(*changes: Any) -> bytes:
    return json.dumps({"object": "page", "entry": [{"id": "1", "time": 1, "changes": list(changes)}]}).encode()


def leadgen(leadgen_id: Any = "42", **extra: Any) -> dict[str, Any]:
    return {"field": "leadgen", "value": {"leadgen_id": leadgen_id, "created_time": 1763812790, **extra}}


class TestMetaHandshake:
    def test_matching_token_returns_the_challenge(self) -> None:
        params = {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": "tok"}
        assert meta.verify_challenge(params, "tok") == "1158201444"

    @pytest.mark.parametrize(
        "params",
        [
            {"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": "wrong"},
            {"hub.mode": "subscribe", "hub.challenge": "1"},
            {"hub.mode": "unsubscribe", "hub.challenge": "1", "hub.verify_token": "tok"},
            {"hub.challenge": "1", "hub.verify_token": "tok"},
            {"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": "tök"},
        ],
    )
    def test_wrong_mode_or_token_is_forbidden(self, params: dict[str, str]) -> None:
        with pytest.raises(AuthError) as exc:
            meta.verify_challenge(params, "tok")
        assert exc.value.status == 403

    def test_an_unconfigured_token_matches_nothing(self) -> None:
        with pytest.raises(AuthError):
            meta.verify_challenge({"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": ""}, "")

    @pytest.mark.parametrize("challenge", [None, "", "<script>", "x" * 129])
    def test_a_missing_or_odd_challenge_is_not_echoed(self, challenge: str | None) -> None:
        params = {"hub.mode": "subscribe", "hub.verify_token": "tok"}
        if challenge is not None:
            params["hub.challenge"] = challenge
        with pytest.raises(InputError) as exc:
            meta.verify_challenge(params, "tok")
        assert fields_of(exc) == ["hub.challenge"]


class TestMetaSignature:
    def test_correct_signature_is_accepted(self) -> None:
        body = fixture("meta_leadgen_webhook.json")
        meta.verify_signature(body, meta_header(body), SECRET)
        meta.verify_signature(body, meta_header(body).upper().replace("SHA256=", "sha256="), SECRET)

    @pytest.mark.parametrize(
        "header",
        [
            None,
            "",
            "sha256=",
            "sha1=" + "0" * 40,
            "sha256=" + "0" * 63,
            "sha256=" + "g" * 64,
            "sha256=" + "é" * 64,
            "sha256=" + "0" * 64,
        ],
    )
    def test_missing_malformed_or_wrong_signature_is_rejected(self, header: str | None) -> None:
        with pytest.raises(AuthError) as exc:
            meta.verify_signature(fixture("meta_leadgen_webhook.json"), header, SECRET)
        assert exc.value.status == 401

    def test_signature_with_another_secret_or_over_another_body_is_rejected(self) -> None:
        body = fixture("meta_leadgen_webhook.json")
        with pytest.raises(AuthError, match="does not match"):
            meta.verify_signature(body, meta_header(body, "other"), SECRET)
        with pytest.raises(AuthError, match="does not match"):
            meta.verify_signature(body + b" ", meta_header(body), SECRET)

    def test_no_secret_configured_accepts_nothing(self) -> None:
        body = b"{}"
        with pytest.raises(AuthError):
            meta.verify_signature(body, meta_header(body, ""), "")


class TestMetaParse:
    def test_fixture_gives_one_id_only_lead_per_change(self) -> None:
        body = fixture("meta_leadgen_webhook.json")
        first, second = meta.parse(body)
        assert first.source == "meta"
        assert first.source_ref == "5545971704561545"
        # 1763812790 is 2025-11-22T11:59:50Z (the Graph API sample says 12:39:50 for the same lead).
        assert first.occurred_at == utc(2025, 11, 22, 11, 59, 50)
        assert first.occurred_at.tzinfo is dt.UTC
        assert first.lead == LeadCaptured(
            source_ref="5545971704561545",
            form_id="551111744595541",
            campaign={"page_id": "516540199134611", "ad_id": "238497524509876", "adgroup_id": "238497524509870"},
        )
        assert (second.source_ref, second.occurred_at) == ("5545971704561546", utc(2025, 11, 22, 11, 59, 55))

    def test_each_lead_keeps_its_own_change_verbatim_and_the_batch_digest(self) -> None:
        body = fixture("meta_leadgen_webhook.json")
        leads = meta.parse(body)
        changes = json.loads(body)["entry"][0]["changes"]
        for lead, change in zip(leads, changes, strict=True):
            assert lead.raw.content_type == "application/json"
            assert lead.raw.body in body.decode()
            assert json.loads(lead.raw.body) == change
            assert lead.raw.batch_sha256 == hashlib.sha256(body).hexdigest()

    def test_integer_ids_are_accepted_as_text(self) -> None:
        [lead] = meta.parse(meta_body(leadgen(5545971704561545, form_id=551, page_id=516, ad_id=238, adgroup_id=239)))
        assert lead.source_ref == "5545971704561545"
        assert lead.lead.form_id == "551"
        assert lead.lead.campaign == {"page_id": "516", "ad_id": "238", "adgroup_id": "239"}

    def test_only_leadgen_changes_become_leads(self) -> None:
        feed = {"field": "feed", "value": {"item": "status", "anything": [1, 2]}}
        [lead] = meta.parse(meta_body(feed, leadgen("7"), {"field": "leadgen_update", "value": 3}))
        assert lead.source_ref == "7"
        assert meta.parse(meta_body(feed)) == []

    def test_changes_across_entries_count_towards_the_batch_limit(self) -> None:
        def body(n: int) -> bytes:
            entries = [{"id": "1", "changes": [leadgen(str(i)) for i in range(n)]}, {"id": "2", "changes": [leadgen()]}]
            return json.dumps({"object": "page", "entry": entries}).encode()

        assert len(meta.parse(body(999))) == 1000
        with pytest.raises(InputError) as exc:
            meta.parse(body(1000))
        assert fields_of(exc) == ["entry"]
        assert "1000" in exc.value.errors[0].reason

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"field": "leadgen", "value": {"created_time": 1}}, "entry.0.changes.0.value.leadgen_id"),
            (leadgen(None), "entry.0.changes.0.value.leadgen_id"),
            (leadgen(""), "entry.0.changes.0.value.leadgen_id"),
            (leadgen(1.5), "entry.0.changes.0.value.leadgen_id"),
            (leadgen("x" * 129), "entry.0.changes.0.value.leadgen_id"),
            ({"field": "leadgen", "value": {"leadgen_id": "1", "created_time": "1763812790"}}, "created_time"),
            ({"field": "leadgen", "value": {"leadgen_id": "1", "created_time": 10**15}}, "created_time"),
            (leadgen(form_id=[1]), "entry.0.changes.0.value.form_id"),
            ({"field": 3, "value": {}}, "entry.0.changes.0.field"),
            ({"value": {}}, "entry.0.changes.0.field"),
            ("leadgen", "entry.0.changes.0"),
        ],
    )
    def test_wrong_types_or_missing_fields_name_the_field(self, change: Any, field: str) -> None:
        with pytest.raises(InputError) as exc:
            meta.parse(meta_body(change))
        [got] = fields_of(exc)
        assert got.endswith(field)
        assert exc.value.status == 422

    @pytest.mark.parametrize(
        ("body", "field", "status"),
        [
            (b"", "body", 400),
            (b"{", "body", 400),
            (b'{"object": "page", "entry": [{"changes": [{"field": "x\xff"}]}]}', "body", 400),
            (b"[]", "body", 422),
            (b'{"entry": []}', "object", 422),
            (b'{"object": "page", "entry": {}}', "entry", 422),
        ],
    )
    def test_unreadable_or_misshapen_bodies(self, body: bytes, field: str, status: int) -> None:
        with pytest.raises(InputError) as exc:
            meta.parse(body)
        assert (fields_of(exc), exc.value.status) == ([field], status)


class TestMetaGraphLead:
    def test_fixture_maps_the_person_and_the_rest_to_answers(self) -> None:
        lead = meta.parse_graph_lead(fixture("meta_lead_graph_response.json"))
        assert lead.source == "meta"
        assert lead.source_ref == "5545971704561545"
        assert lead.occurred_at == utc(2025, 11, 22, 12, 39, 50)
        assert lead.lead == LeadCaptured(
            full_name="James Oak",
            email="james.oak@example.org",
            phone="+15550100123",
            company="Oak & Sons Joinery",
            job_title="Owner",
            source_ref="5545971704561545",
            form_id="551111744595541",
            campaign={"ad_id": "238497524509876"},
            answers={"what_is_your_budget?": "10k-50k"},
        )

    def test_email_wins_over_work_email_and_several_values_are_joined(self) -> None:
        body = {
            "id": 1,
            "created_time": "2025-11-22T13:39:50+0100",
            "field_data": [
                {"name": "work_email", "values": ["w@example.com"]},
                {"name": "email", "values": [" p@example.com "]},
                {"name": "interests", "values": ["a", "b"]},
            ],
        }
        lead = meta.parse_graph_lead(json.dumps(body).encode())
        assert lead.occurred_at == utc(2025, 11, 22, 12, 39, 50)
        assert lead.lead.email == "p@example.com"
        assert lead.lead.answers == {"interests": "a, b"}

    @pytest.mark.parametrize(
        ("patch", "field"),
        [
            ({"created_time": "yesterday"}, "created_time"),
            ({"created_time": "2025-11-22T12:39:50"}, "created_time"),
            ({"created_time": 1763812790}, "created_time"),
            ({"field_data": [{"name": "email", "values": ["not-an-email"]}]}, "field_data.0.values"),
            ({"field_data": [{"name": "email", "values": "x@example.com"}]}, "field_data.0.values"),
        ],
    )
    def test_bad_values_name_the_field(self, patch: dict[str, Any], field: str) -> None:
        body = {**fixture_json("meta_lead_graph_response.json"), **patch}
        with pytest.raises(InputError) as exc:
            meta.parse_graph_lead(json.dumps(body).encode())
        assert fields_of(exc) == [field]


# --- Typeform -----------------------------------------------------------------------------------------------


def typeform_header(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def typeform_body(answers: list[dict[str, Any]], **response: Any) -> bytes:
    document = fixture_json("typeform_form_response.json")
    document["form_response"]["answers"] = answers
    document["form_response"].update(response)
    return json.dumps(document).encode()


def answer(ref: str, kind: str, value: Any, field_type: str = "short_text") -> dict[str, Any]:
    return {"type": kind, kind: value, "field": {"id": f"id-{ref}", "type": field_type, "ref": ref}}


class TestTypeformSignature:
    def test_correct_signature_is_accepted(self) -> None:
        body = fixture("typeform_form_response.json")
        typeform.verify_signature(body, typeform_header(body), SECRET)

    @pytest.mark.parametrize(
        "header",
        [
            None,
            "",
            "sha256=",
            "sha256=not base64!",
            "sha256=" + base64.b64encode(b"\0" * 31).decode(),
            "sha256=" + "0" * 64,
            "sha256=" + base64.b64encode(b"\0" * 32).decode(),
            base64.b64encode(b"\0" * 32).decode(),
        ],
    )
    def test_missing_malformed_or_wrong_signature_is_rejected(self, header: str | None) -> None:
        with pytest.raises(AuthError) as exc:
            typeform.verify_signature(fixture("typeform_form_response.json"), header, SECRET)
        assert exc.value.status == 401

    def test_hex_instead_of_base64_or_another_secret_is_rejected(self) -> None:
        body = fixture("typeform_form_response.json")
        with pytest.raises(AuthError):
            typeform.verify_signature(body, "sha256=" + hex_hmac(SECRET, body), SECRET)
        with pytest.raises(AuthError, match="does not match"):
            typeform.verify_signature(body, typeform_header(body, "other"), SECRET)
        with pytest.raises(AuthError, match="does not match"):
            typeform.verify_signature(body.replace(b"Laura", b"Laure"), typeform_header(body), SECRET)


class TestTypeformParse:
    def test_fixture_maps_refs_hidden_fields_and_submission_time(self) -> None:
        body = fixture("typeform_form_response.json")
        [lead] = typeform.parse(body)
        assert lead.source == "typeform"
        assert lead.source_ref == "a3a12ec67a1365927098a606107fac15"
        assert lead.occurred_at == utc(2025, 11, 22, 18, 17, 2)
        assert lead.lead == LeadCaptured(
            first_name="Laura",
            email="laura@example.com",
            source_ref="a3a12ec67a1365927098a606107fac15",
            form_id="lT4Z3j",
            campaign={"utm_source": "newsletter", "utm_campaign": "q4-promo"},
            source="newsletter",
            utm_campaign="q4-promo",
            answers={"first_name": "Laura", "email": "laura@example.com", "company_size": "51-200"},
        )
        assert lead.raw == RawPayload(content_type="application/json", body=body.decode())

    def test_every_answer_type_becomes_text(self) -> None:
        answers = [
            answer("work_email", "email", "ceo@acme.io", "email"),
            answer("Company-Name", "text", "  Acme  "),
            answer("phone_number", "phone_number", "+48600100200", "phone_number"),
            answer("last_name", "text", "Nowak"),
            answer("seats", "number", 12, "number"),
            answer("ratio", "number", 2.5, "number"),
            answer("agree", "boolean", True, "yes_no"),
            answer("when", "date", "2025-12-01", "date"),
            answer("site", "url", "https://acme.io", "website"),
            answer("size", "choice", {"label": "51-200"}, "multiple_choice"),
            answer("source", "choice", {"other": "a friend"}, "multiple_choice"),
            answer("tools", "choices", {"labels": ["CRM", "ERP"], "other": "Excel"}, "multiple_choice"),
            answer("pay", "payment", {"amount": "10", "last4": "4242"}, "payment"),
            answer("clip", "multi_format", "https://files/x", "multi_format"),
            {"type": "mystery", "field": {"id": "m1", "type": "mystery"}},
            answer("blank", "text", "   "),
        ]
        [lead] = typeform.parse(typeform_body(answers))
        assert lead.lead.email == "ceo@acme.io"
        assert lead.lead.company == "Acme"
        assert lead.lead.phone == "+48600100200"
        assert lead.lead.last_name == "Nowak"
        assert lead.lead.answers == {
            "work_email": "ceo@acme.io",
            "Company-Name": "Acme",
            "phone_number": "+48600100200",
            "last_name": "Nowak",
            "seats": "12",
            "ratio": "2.5",
            "agree": "true",
            "when": "2025-12-01",
            "site": "https://acme.io",
            "size": "51-200",
            "source": "a friend",
            "tools": "CRM, ERP, Excel",
            "pay": '{"amount":"10","last4":"4242"}',
            "clip": "https://files/x",
        }

    def test_email_and_phone_answers_fill_the_lead_when_no_ref_does(self) -> None:
        answers = [answer("q1", "email", "x@example.com", "email"), answer("q2", "phone_number", "+1 555", "phone")]
        [lead] = typeform.parse(typeform_body(answers))
        assert (lead.lead.email, lead.lead.phone) == ("x@example.com", "+1 555")

    def test_submission_time_is_converted_to_utc(self) -> None:
        [lead] = typeform.parse(typeform_body([], submitted_at="2025-11-22T19:17:02+01:00"))
        assert lead.occurred_at == utc(2025, 11, 22, 18, 17, 2)
        assert lead.occurred_at.tzinfo is dt.UTC

    @pytest.mark.parametrize(
        ("body", "fields"),
        [
            (typeform_body([answer("email", "email", "not an email", "email")]), ["form_response.answers.0.email"]),
            (typeform_body([answer("first_name", "text", "x" * 201)]), ["form_response.answers.0.text"]),
            (typeform_body([answer("first_name", "text", 5)]), ["form_response.answers.0.text"]),
            (typeform_body([answer("a", "number", "5")]), ["form_response.answers.0.number"]),
            (typeform_body([{"type": "text", "text": "x"}]), ["form_response.answers.0.field"]),
            (
                typeform_body([answer("a", "text", "x"), answer("a", "text", "y")]),
                ["form_response.answers.1.field.ref"],
            ),
            (typeform_body([], token=None), ["form_response.token"]),
            (typeform_body([], token=""), ["form_response.token"]),
            (typeform_body([], submitted_at="2025-11-22T18:17:02"), ["form_response.submitted_at"]),
            (typeform_body([], submitted_at="soon"), ["form_response.submitted_at"]),
            (typeform_body([], hidden={"utm_source": 1}), ["form_response.hidden[...]"]),
            (b'{"event_type": "form_response"}', ["form_response"]),
            (b'{"event_type": "form_response_partial", "form_response": {}}', ["form_response.token"]),
            (json.dumps({**fixture_json("typeform_form_response.json"), "event_type": "x"}).encode(), ["event_type"]),
        ],
    )
    def test_bad_input_names_the_field(self, body: bytes, fields: list[str]) -> None:
        with pytest.raises(InputError) as exc:
            typeform.parse(body)
        assert fields_of(exc) == fields

    def test_more_than_100_answers_is_an_input_error(self) -> None:
        with pytest.raises(InputError) as exc:
            typeform.parse(typeform_body([answer(f"q{i}", "text", "x") for i in range(101)]))
        assert fields_of(exc) == ["form_response.answers"]


# --- Webflow ------------------------------------------------------------------------------------------------


def webflow_headers(body: bytes, at: dt.datetime = NOW, secret: str = SECRET) -> tuple[str, str]:
    timestamp = str(int(at.timestamp() * 1000))
    return timestamp, hex_hmac(secret, timestamp.encode() + b":" + body)


def webflow_body(data: dict[str, Any], **payload: Any) -> bytes:
    document = fixture_json("webflow_form_submission.json")
    document["payload"]["data"] = data
    document["payload"].update(payload)
    return json.dumps(document).encode()


class TestWebflowSignature:
    def test_correct_signature_is_accepted(self) -> None:
        body = fixture("webflow_form_submission.json")
        webflow.verify_signature(body, *webflow_headers(body), SECRET, NOW)

    @pytest.mark.parametrize("offset", [dt.timedelta(minutes=-5), dt.timedelta(minutes=5), dt.timedelta(0)])
    def test_up_to_five_minutes_either_way_is_accepted(self, offset: dt.timedelta) -> None:
        body = fixture("webflow_form_submission.json")
        webflow.verify_signature(body, *webflow_headers(body, NOW + offset), SECRET, NOW)

    def test_a_replayed_old_request_is_rejected(self) -> None:
        body = fixture("webflow_form_submission.json")
        headers = webflow_headers(body, NOW - dt.timedelta(minutes=5, milliseconds=1))
        with pytest.raises(AuthError, match="more than 5 minutes old") as exc:
            webflow.verify_signature(body, *headers, SECRET, NOW)
        assert exc.value.status == 401
        with pytest.raises(AuthError, match="old"):
            webflow.verify_signature(body, *webflow_headers(body, NOW), SECRET, NOW + dt.timedelta(hours=36))

    def test_a_request_from_the_future_is_rejected(self) -> None:
        body = fixture("webflow_form_submission.json")
        headers = webflow_headers(body, NOW + dt.timedelta(minutes=5, milliseconds=1))
        with pytest.raises(AuthError, match="future"):
            webflow.verify_signature(body, *headers, SECRET, NOW)

    @pytest.mark.parametrize(
        ("timestamp", "signature"),
        [
            (None, "0" * 64),
            ("1763827320000", None),
            ("", "0" * 64),
            ("1763827320.5", "0" * 64),
            ("-1", "0" * 64),
            ("1" * 40, "0" * 64),
            ("1763827320000", "sha256=" + "0" * 64),
            ("1763827320000", "z" * 64),
            ("1763827320000", "0" * 64),
        ],
    )
    def test_missing_malformed_or_wrong_headers_are_rejected(
        self, timestamp: str | None, signature: str | None
    ) -> None:
        with pytest.raises(AuthError) as exc:
            webflow.verify_signature(fixture("webflow_form_submission.json"), timestamp, signature, SECRET, NOW)
        assert exc.value.status == 401

    def test_signature_must_cover_the_timestamp_and_the_body(self) -> None:
        body = fixture("webflow_form_submission.json")
        timestamp, signature = webflow_headers(body)
        with pytest.raises(AuthError, match="does not match"):
            webflow.verify_signature(body, str(int(timestamp) - 1), signature, SECRET, NOW)
        with pytest.raises(AuthError, match="does not match"):
            webflow.verify_signature(body + b"\n", timestamp, signature, SECRET, NOW)
        with pytest.raises(AuthError, match="does not match"):
            webflow.verify_signature(body, *webflow_headers(body, secret="other"), SECRET, NOW)


class TestWebflowParse:
    def test_fixture_maps_names_and_stringifies_the_numeric_phone(self) -> None:
        [lead] = webflow.parse(fixture("webflow_form_submission.json"))
        assert lead.source == "webflow"
        assert lead.source_ref == "6321ca84df3949bfc6752327"
        assert lead.occurred_at == utc(2025, 11, 22, 16, 0, 0)
        assert lead.lead == LeadCaptured(
            first_name="Zaphod",
            last_name="Beeblebrox",
            email="zaphod@heartofgold.ai",
            phone="15550000000",
            company="Heart of Gold Ltd",
            source_ref="6321ca84df3949bfc6752327",
            form_id="65429eadebe8a9f3a30f62d0",
            answers={
                "First Name": "Zaphod",
                "Last Name": "Beeblebrox",
                "email": "zaphod@heartofgold.ai",
                "Phone Number": "15550000000",
                "Company": "Heart of Gold Ltd",
            },
        )

    def test_names_match_case_insensitively_and_everything_lands_in_answers(self) -> None:
        data = {
            "NAME": "Ford Prefect",
            "E-Mail": "ford@guide.com",
            "phone": "+44 20 7946 0000",
            "Job Title": "Researcher",
            "message": "Don't panic",
            "Newsletter": True,
            "Interests": ["towels", "tea"],
            "utm_source": "guide",
            "Empty": "",
            "Nothing": None,
        }
        [lead] = webflow.parse(webflow_body(data))
        assert lead.lead.full_name == "Ford Prefect"
        assert lead.lead.email == "ford@guide.com"
        assert lead.lead.phone == "+44 20 7946 0000"
        assert lead.lead.job_title == "Researcher"
        assert lead.lead.message == "Don't panic"
        assert lead.lead.campaign == {"utm_source": "guide"}
        assert lead.lead.answers == {
            "NAME": "Ford Prefect",
            "E-Mail": "ford@guide.com",
            "phone": "+44 20 7946 0000",
            "Job Title": "Researcher",
            "message": "Don't panic",
            "Newsletter": "true",
            "Interests": "towels, tea",
            "utm_source": "guide",
        }

    @pytest.mark.parametrize(
        ("body", "fields"),
        [
            (webflow_body({"email": "zaphod"}), ["payload.data.email"]),
            (webflow_body({"Phone Number": "call me"}), ["payload.data.Phone Number"]),
            (webflow_body({"Phone Number": {"cc": 1}}), ["payload.data.Phone Number"]),
            (webflow_body({"email": "a@b", "First Name": "x" * 201}),
             ["payload.data.email", "payload.data.First Name"]),
            (webflow_body({}, id=None), ["payload.id"]),
            (webflow_body({}, submittedAt="2025-11-22T16:00:00"), ["payload.submittedAt"]),
            (webflow_body({}, formId=7), ["payload.formId"]),
            (webflow_body([]), ["payload.data"]),  # type: ignore[arg-type]
            (webflow_body({f"f{i}": "x" for i in range(101)}), ["payload.data"]),
            (json.dumps({**fixture_json("webflow_form_submission.json"), "triggerType": "site_publish"}).encode(),
             ["triggerType"]),
            (b'{"triggerType": "form_submission"}', ["payload"]),
        ],
    )  # fmt: skip
    def test_bad_input_names_the_field(self, body: bytes, fields: list[str]) -> None:
        with pytest.raises(InputError) as exc:
            webflow.parse(body)
        assert fields_of(exc) == fields


# --- HTML form ----------------------------------------------------------------------------------------------


class TestHtmlForm:
    def test_fixture_keeps_polish_diacritics(self) -> None:
        body = fixture("html_form.urlencoded")
        lead = html_form.parse(body, NOW)
        assert lead.source == "web_form"
        assert lead.source_ref is None
        assert lead.occurred_at == NOW
        assert lead.lead == LeadCaptured(
            first_name="Marta",
            last_name="Kowalska",
            email="marta.kowalska@example.pl",
            company="Kowalski i Synowie Sp. z o.o.",
            phone="+48 600 100 200",
            message="Proszę o kontakt w sprawie wyceny",
            campaign={"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "lejek-2025"},
            source="google",
            utm_campaign="lejek-2025",
        )
        assert lead.raw == RawPayload(content_type="application/x-www-form-urlencoded", body=body.decode())

    def test_unescaped_utf8_and_every_recognised_name(self) -> None:
        body = (
            "first_name= Łukasz &last_name=Żółćkiewicz&full_name=Łukasz+Ż&email=l%40example.pl&phone=&"
            "job_title=Prezes&country=pl&budget=duży&utm_term=crm&company=ZAŻÓŁĆ+GĘŚLĄ+JAŹŃ"
        ).encode()
        lead = html_form.parse(body, NOW).lead
        assert lead == LeadCaptured(
            first_name="Łukasz",
            last_name="Żółćkiewicz",
            full_name="Łukasz Ż",
            email="l@example.pl",
            job_title="Prezes",
            country="PL",
            company="ZAŻÓŁĆ GĘŚLĄ JAŹŃ",
            campaign={"utm_term": "crm"},
            answers={"budget": "duży"},
        )

    def test_name_fills_full_name(self) -> None:
        assert html_form.parse(b"name=Jan+Nowak", NOW).lead.full_name == "Jan Nowak"
        assert html_form.parse(b"name=&full_name=Jan", NOW).lead.full_name == "Jan"

    @pytest.mark.parametrize(
        ("body", "fields"),
        [
            (b"email=a%40b.pl&email=c%40d.pl", ["email"]),
            (b"x=1&email=a%40b.pl&x=2&y=&y=", ["x", "y"]),
            (b"name=Jan&full_name=Jan", ["full_name"]),
            (b"email=not-an-email", ["email"]),
            (b"email=a%40b&phone=abc&country=Polska", ["email", "phone", "country"]),
            (b"first_name=" + b"x" * 201, ["first_name"]),
            (b"message=" + b"x" * 10_001, ["message"]),
            (b"first_name=a%00b", ["first_name"]),
            (b"&".join(b"q%d=x" % i for i in range(101)), ["answers"]),
        ],
    )
    def test_bad_fields_are_named(self, body: bytes, fields: list[str]) -> None:
        with pytest.raises(InputError) as exc:
            html_form.parse(body, NOW)
        assert fields_of(exc) == fields
        assert exc.value.status == 422

    def test_invalid_email_says_why(self) -> None:
        with pytest.raises(InputError) as exc:
            html_form.parse(b"email=marta%40", NOW)
        assert exc.value.errors[0].reason == "must be an email address like name@example.com"

    @pytest.mark.parametrize("body", [b"first_name=\xc5", b"first_name=%C5", b"a=%FF%FE", b"&".join([b"a=1"] * 251)])
    def test_unreadable_bodies_are_400(self, body: bytes) -> None:
        with pytest.raises(InputError) as exc:
            html_form.parse(body, NOW)
        assert (fields_of(exc), exc.value.status) == (["body"], 400)

    def test_business_time_is_now_in_utc(self) -> None:
        warsaw = dt.timezone(dt.timedelta(hours=1))
        lead = html_form.parse(b"email=a%40b.pl", dt.datetime(2025, 11, 22, 17, 2, tzinfo=warsaw))
        assert lead.occurred_at == NOW
        assert lead.occurred_at.tzinfo is dt.UTC

    def test_lead_from_fields(self) -> None:
        lead = html_form.lead_from_fields({"email": " a@b.pl ", "company": "", "utm_source": "x", "k": "v"})
        assert lead == LeadCaptured(email="a@b.pl", campaign={"utm_source": "x"}, answers={"k": "v"}, source="x")


class TestWebFormJson:
    def test_flat_object_with_business_time_and_source_ref(self) -> None:
        body = {
            "email": "marta@example.pl",
            "first_name": "Marta",
            "phone": None,
            "occurred_at": "2025-11-22T17:00:00+01:00",
            "source_ref": "crm-123",
            "utm_source": "google",
            "campaign": {"utm_medium": "cpc"},
            "answers": {"budget": "10k"},
            "seats": "5",
        }
        lead = html_form.parse_json(json.dumps(body).encode(), NOW)
        assert lead.source == "web_form"
        assert lead.source_ref == "crm-123"
        assert lead.occurred_at == utc(2025, 11, 22, 16, 0, 0)
        assert lead.lead == LeadCaptured(
            email="marta@example.pl",
            first_name="Marta",
            source_ref="crm-123",
            campaign={"utm_source": "google", "utm_medium": "cpc"},
            source="google",
            answers={"seats": "5", "budget": "10k"},
        )
        assert lead.raw.content_type == "application/json"

    def test_the_marketing_source_and_campaign_are_kept_beside_the_channel(self) -> None:
        body = {"email": "a@b.pl", "source": " Referral ", "utm_source": "google", "utm_campaign": "partner-week"}
        lead = html_form.parse_json(json.dumps(body).encode(), NOW)
        assert lead.source == "web_form"
        assert (lead.lead.source, lead.lead.utm_campaign) == ("referral", "partner-week")
        form = html_form.parse(b"email=a%40b.pl&source=event&utm_campaign=fair-2026", NOW).lead
        assert (form.source, form.utm_campaign) == ("event", "fair-2026")
        # A tracking parameter that is no marketing id stays sealed in ``campaign`` and refuses nothing.
        odd = html_form.parse(b"email=a%40b.pl&utm_source=anna%40example.com", NOW).lead
        assert odd.source is None and odd.campaign == {"utm_source": "anna@example.com"}

    def test_a_source_that_is_no_marketing_id_names_the_field(self) -> None:
        with pytest.raises(InputError) as caught:
            html_form.parse_json(b'{"email": "a@b.pl", "source": "anna@example.com"}', NOW)
        assert [e.field for e in caught.value.errors] == ["source"]

    def test_defaults(self) -> None:
        lead = html_form.parse_json(b'{"email": "a@b.pl"}', NOW)
        assert (lead.source_ref, lead.occurred_at) == (None, NOW)

    @pytest.mark.parametrize(
        ("body", "fields"),
        [
            ({"email": 5}, ["email"]),
            ({"email": "nope", "phone": ["1"]}, ["phone"]),
            ({"email": "nope"}, ["email"]),
            ({"occurred_at": "2025-11-22T17:00:00"}, ["occurred_at"]),
            ({"occurred_at": 1763827200}, ["occurred_at"]),
            ({"source_ref": ""}, ["source_ref"]),
            ({"source_ref": 7}, ["source_ref"]),
            ({"answers": {"a": 1, "b": "x"}}, ["answers.a"]),
            ({"campaign": ["x"]}, ["campaign"]),
            ([], ["body"]),
        ],
    )
    def test_wrong_types_name_the_field(self, body: Any, fields: list[str]) -> None:
        with pytest.raises(InputError) as exc:
            html_form.parse_json(json.dumps(body).encode(), NOW)
        assert fields_of(exc) == fields

    def test_unreadable_json_is_400(self) -> None:
        for body in (b"{", b"\xff", b'{"a": "\xff"}'):
            with pytest.raises(InputError) as exc:
                html_form.parse_json(body, NOW)
            assert exc.value.status == 400


# --- HubSpot ------------------------------------------------------------------------------------------------


class TestHubspot:
    def test_fixture(self) -> None:
        lead = hubspot.parse(fixture("hubspot_forms_v3_submission.json"), NOW)
        assert lead.source == "hubspot"
        assert lead.source_ref is None
        assert lead.occurred_at == utc(2025, 11, 22, 16, 0, 0)
        assert lead.lead == LeadCaptured(
            email="ana.ruiz@example.net",
            first_name="Ana",
            last_name="Ruiz",
            company="Ruiz Logistics",
            job_title="Head of Operations",
            campaign={
                "page_uri": "https://www.example.com/pricing",
                "page_name": "Pricing",
                "hutk": "2f1b3c8a9d7e6f5a4b3c2d1e0f9a8b7c",
            },
            answers={
                "email": "ana.ruiz@example.net",
                "firstname": "Ana",
                "lastname": "Ruiz",
                "0-2/name": "Ruiz Logistics",
                "jobtitle": "Head of Operations",
            },
        )

    def test_without_submitted_at_business_time_is_now(self) -> None:
        body = b'{"fields": [{"name": "email", "value": "a@b.pl"}], "submittedAt": 1763827200000}'
        assert hubspot.parse(body, NOW).occurred_at == utc(2025, 11, 22, 16, 0, 0)
        assert hubspot.parse(b'{"fields": []}', NOW).occurred_at == NOW

    @pytest.mark.parametrize(
        ("body", "fields"),
        [
            ({"fields": [], "submittedAt": "yesterday"}, ["submittedAt"]),
            ({"fields": [], "submittedAt": "9" * 30}, ["submittedAt"]),
            ({"fields": [{"name": "email", "value": "x"}]}, ["fields.0.value"]),
            ({"fields": [{"name": "email", "value": 1}]}, ["fields.0.value"]),
            ({"fields": [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]}, ["fields.1.name"]),
            ({}, ["fields"]),
        ],
    )
    def test_bad_input_names_the_field(self, body: Any, fields: list[str]) -> None:
        with pytest.raises(InputError) as exc:
            hubspot.parse(json.dumps(body).encode(), NOW)
        assert fields_of(exc) == fields


def test_every_fixture_lead_round_trips_as_an_event() -> None:
    leads = [
        *meta.parse(fixture("meta_leadgen_webhook.json")),
        meta.parse_graph_lead(fixture("meta_lead_graph_response.json")),
        *typeform.parse(fixture("typeform_form_response.json")),
        *webflow.parse(fixture("webflow_form_submission.json")),
        html_form.parse(fixture("html_form.urlencoded"), NOW),
        hubspot.parse(fixture("hubspot_forms_v3_submission.json"), NOW),
    ]
    for lead in leads:
        assert msgspec.json.decode(msgspec.json.encode(lead.lead), type=LeadCaptured) == lead.lead
        assert msgspec.json.decode(msgspec.json.encode(lead.raw), type=RawPayload) == lead.raw
        assert lead.occurred_at.tzinfo is dt.UTC
