"""Meta's Graph API answers, classified; its page tokens read from the environment and never shown."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from events.types import AlertRaised
from projections.notices import Subject, address, notice_of
from projections.notify import NotifyRules, Recipient, Smtp, deliveries, message
from services.providers.meta_graph import details_of, graph_error
from tests.builders import envelope
from workers.settings import Settings

GRAPH = Path(__file__).resolve().parents[1] / "fixtures" / "graph"
T = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
WEBHOOKS = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"


@pytest.mark.parametrize(
    ("name", "status", "kind", "code"),
    [
        ("expired_token", 400, "expired_token", 190),
        ("rate_limit", 400, "rate_limit", 4),
        ("page_rate_limit", 400, "rate_limit", 32),
    ],
)
def test_graph_error_bodies_say_what_failed(name: str, status: int, kind: str, code: int) -> None:
    error = graph_error(status, (GRAPH / f"{name}.json").read_bytes(), "")
    assert (error.kind, error.code, error.status) == (kind, code, status)


def test_an_answer_without_a_graph_body_is_unavailable_on_5xx_and_refused_on_4xx() -> None:
    assert graph_error(502, b"<html>Bad gateway</html>", "").kind == "unavailable"
    assert graph_error(404, b"not json", "").kind == "refused"


def test_a_token_or_lead_id_meta_quotes_back_is_scrubbed_from_the_message() -> None:
    body = b'{"error": {"message": "Invalid OAuth access token - Cannot parse access token EAAsecret", "code": 190}}'
    error = graph_error(400, body, "EAAsecret")
    assert "EAAsecret" not in str(error) and error.kind == "expired_token"
    missing = b'{"error": {"message": "Object with ID \'5545971704561545\' does not exist", "code": 100}}'
    error = graph_error(400, missing, "EAAsecret", "5545971704561545")
    assert "5545971704561545" not in str(error) and error.kind == "refused"


def test_the_graph_lead_maps_to_details_with_the_providers_aliases() -> None:
    details = details_of((WEBHOOKS / "meta_lead_graph_response.json").read_bytes())
    assert (details.provider, details.email, details.phone, details.job_title) == (
        "meta",
        "james.oak@example.org",
        "+15550100123",
        "Owner",
    )
    assert details.answers == {"what_is_your_budget?": "10k-50k"}


def test_page_tokens_come_from_the_environment_and_never_show() -> None:
    env = {
        "DEALSTREAM_META_PAGE_TOKENS": '{"516540199134611": "EAApagetoken"}',
        "DEALSTREAM_META_GRAPH_URL": "http://127.0.0.1:9",
        "DEALSTREAM_META_FETCH_ATTEMPTS": "3",
    }
    graph = Settings.from_env(env).meta_graph
    assert graph.page_tokens.get("516540199134611") == "EAApagetoken"
    assert (graph.base_url, graph.version, graph.attempts) == ("http://127.0.0.1:9", "v21.0", 3)
    assert "EAApagetoken" not in repr(Settings.from_env(env))
    with pytest.raises(ValueError, match="DEALSTREAM_META_PAGE_TOKENS") as bad:
        Settings.from_env({"DEALSTREAM_META_PAGE_TOKENS": "EAApagetoken"})
    assert "EAApagetoken" not in str(bad.value)


def test_a_lead_whose_fields_cannot_be_had_is_announced_to_the_admin() -> None:
    alert = AlertRaised(
        kind="source_fetch", policy="meta_graph", subject_type="lead", subject_id="l1", deadline=T, rep="maria"
    )
    rules = NotifyRules(recipients={"maria": Recipient(email="maria@example.com")}, smtp=Smtp())
    notice = notice_of(envelope(alert, aggregate_type="alert", aggregate_id="a1"))
    assert notice is not None
    # The admin the alert names hears it, whoever owns the lead.
    to = address(notice, Subject(owner="ana"), dt.timedelta(0), rules.unassigned_wait, None)
    assert to is not None
    [delivery] = deliveries(rules, message(rules, notice, Subject(owner="ana"), to, T))
    assert delivery.target == "maria@example.com"
    assert "access token" in delivery.message.text and delivery.message.subject_id == "l1"
