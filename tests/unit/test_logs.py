"""The log scrubber: a credential in any of the shapes a log line may show it comes out redacted."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from events import logs
from events.logs import REDACTED, redact_values, scrub

TOKENS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~", min_size=8, max_size=60)

SHAPES = (
    "Authorization: Bearer {t}",
    "{{b'authorization': b'Bearer {t}', b'host': b'x'}}",
    "[(b'x-api-key', b'{t}')]",
    "headers={{'X-Api-Key': '{t}'}}",
    "POST /v1/leads?key={t}&source=form",
    "X-Hub-Signature-256: sha256={t}",
    "typeform-signature='sha256={t}'",
    "x-webflow-signature: {t}",
    "MetaWebhook(app_secret='{t}', verify_token='{t}')",
    "hub.verify_token={t}",
    "postgresql://dealstream:{t}@db:5432/dealstream",
    "Authorization: Basic {t}",
)


@given(TOKENS)
def test_a_credential_in_any_shape_is_redacted(token: str) -> None:
    for shape in SHAPES:
        line = shape.format(t=token)
        assert token not in scrub(line), line
        # The same line as a JSON string value, quotes escaped.
        assert token not in scrub(json.dumps({"detail": line})), line


def test_ordinary_words_are_left_alone() -> None:
    line = "request.rejected status=401 detail='signature does not match' rate_per_second=50 tokens=3"
    assert scrub(line) == line


def test_registered_secrets_are_redacted_wherever_they_appear() -> None:
    redact_values(["s3cret-notify-value", "short"])
    assert scrub("sent with s3cret-notify-value in it") == f"sent with {REDACTED} in it"
    assert scrub("a short word") == "a short word"  # too short to be a secret: it would redact ordinary words


def _scrub_every_pattern(text: str) -> str:
    """What :func:`scrub` did before its fast path: every pattern on every line."""
    for pattern, replacement in logs._PATTERNS:
        text = pattern.sub(replacement, text)
    for value in logs._known:
        text = text.replace(value, REDACTED)
    return text


LINE_PARTS = st.lists(
    st.one_of(
        st.sampled_from([s.replace("{{", "{").replace("}}", "}") for s in SHAPES]),
        st.sampled_from(["Bearer", "KEY=", "Sha256=", "dsk_", "://", "TOKEN", "Cookie: ", ": ", "=", "'", '"', " "]),
        st.text(max_size=20),
    ),
    max_size=12,
)


@given(LINE_PARTS)
def test_skipping_lines_without_a_trigger_word_redacts_exactly_as_every_pattern_would(parts: list[str]) -> None:
    line = "".join(parts)
    assert scrub(line) == _scrub_every_pattern(line), line
