"""The one set of dead-letter headers both origins (intake, a projection's engine) publish."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from events.dead_letters import REASON_LIMIT, dead_letter_headers


def test_intake_and_engine_headers_name_the_origin_and_what_came() -> None:
    intake = dead_letter_headers("intake-INBOX-7", "email: bad", "p.in.lead", 7, origin="intake")
    assert intake == {
        "Nats-Msg-Id": "intake-INBOX-7",
        "Dealstream-Reason": "email: bad",
        "Dealstream-Origin": "intake",
        "Dealstream-Sequence": "7",
        "Dealstream-Subject": "p.in.lead",
    }
    engine = dead_letter_headers("board_v2:9", "decode: x", "p.evt.deal.3.d1", 9, projection="board_v2")
    assert engine["Dealstream-Projection"] == "board_v2"
    assert "Dealstream-Origin" not in engine


@given(st.text(max_size=3 * REASON_LIMIT))
def test_reason_is_cut_to_the_limit(reason: str) -> None:
    headers = dead_letter_headers("id", reason, "s", 1, origin="intake")
    assert headers["Dealstream-Reason"] == reason[:REASON_LIMIT]
