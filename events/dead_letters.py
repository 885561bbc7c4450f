"""The headers of a dead letter, the same for every origin (the intake worker, each projection's engine)."""

from __future__ import annotations

REASON_LIMIT = 1000
"""Characters of the reason a dead letter keeps: NATS headers are not the place for a long text."""


def dead_letter_headers(msg_id: str, reason: str, subject: str, sequence: int, **origin: str) -> dict[str, str]:
    """Why (the reason), what (the subject and stream sequence it came from) and whence: each ``origin`` item
    becomes a ``Dealstream-<Key>`` header (``origin="intake"``, ``projection=build``)."""
    return {
        "Nats-Msg-Id": msg_id,
        "Dealstream-Reason": reason[:REASON_LIMIT],
        **{f"Dealstream-{key.capitalize()}": value for key, value in origin.items()},
        "Dealstream-Sequence": str(sequence),
        "Dealstream-Subject": subject,
    }
