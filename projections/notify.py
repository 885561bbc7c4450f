"""Notifications: who hears about an alert or a qualified lead, on which channel, with what message, and when.

Pure: the ``[notify]`` rules, the deliveries an event calls for, the message text (Slack-compatible),
the webhook signature, quiet hours and the retry schedule. Sending lives in workers/notify.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import zoneinfo
from typing import Annotated, Literal

import msgspec

from events.envelope import Envelope
from events.ids import derived_id
from events.types import AlertEscalated, AlertRaised, LeadQualified

Channel = Literal["webhook", "email"]


class QuietHours(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Local times between which nothing is sent (``start`` > ``end`` spans midnight)."""

    start: dt.time
    end: dt.time
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"quiet_hours.timezone: unknown time zone {self.timezone!r}") from exc
        if self.start == self.end:
            raise ValueError("quiet_hours: start and end must differ")

    def release(self, now: dt.datetime) -> dt.datetime | None:
        """When sending may resume if ``now`` is quiet; None if it is not."""
        zone = zoneinfo.ZoneInfo(self.timezone)
        local = now.astimezone(zone)
        t = local.time().replace(tzinfo=None)
        spans_midnight = self.start > self.end
        quiet = (self.start <= t or t < self.end) if spans_midnight else (self.start <= t < self.end)
        if not quiet:
            return None
        day = local.date() + dt.timedelta(days=1) if spans_midnight and t >= self.start else local.date()
        return dt.datetime.combine(day, self.end, tzinfo=zone).astimezone(dt.UTC)


class Recipient(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    webhook: Annotated[str, msgspec.Meta(pattern=r"^https?://")] | None = None
    email: Annotated[str, msgspec.Meta(pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    quiet_hours: QuietHours | None = None


class Smtp(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 25
    sender: str = "dealstream@localhost"
    starttls: bool = False
    username: str | None = None
    password_env: str | None = None


class NotifyRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``recipients``: by rep or manager name. ``secret_env`` names the environment variable holding the
    webhook signing secret. Events recorded more than ``max_age_hours`` before they are folded are not
    announced (a new notify build replaying old history must not page anyone)."""

    recipients: dict[str, Recipient] = {}
    smtp: Smtp | None = None
    secret_env: str = "DEALSTREAM_NOTIFY_SECRET"
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    backoff_initial_seconds: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    backoff_max_seconds: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    max_age_hours: Annotated[float, msgspec.Meta(gt=0)] = 24.0

    def backoff(self, attempts: int) -> dt.timedelta:
        """The wait after the ``attempts``-th failed attempt: doubling from the initial wait, capped."""
        return backoff(self.backoff_initial_seconds, self.backoff_max_seconds, attempts)


def backoff(initial_seconds: float, max_seconds: float, attempts: int) -> dt.timedelta:
    """The wait after the ``attempts``-th failed attempt of a delivery: doubling from ``initial_seconds``, capped."""
    return dt.timedelta(seconds=min(max_seconds, initial_seconds * 2 ** (attempts - 1)))


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """What the webhook receives as JSON (``text`` is Slack-compatible) and the e-mail says."""

    event_id: str
    type: str
    recipient: str
    text: str
    subject_type: str
    subject_id: str
    occurred_at: dt.datetime
    data: dict[str, object]


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    delivery_id: str
    event_id: str
    recipient: str
    channel: Channel
    target: str
    message: Message


def _message(envelope: Envelope, recipient: str) -> Message | None:
    data = envelope.data
    subject: tuple[str, str]
    if isinstance(data, AlertRaised):
        what = {
            "first_touch": "has not been touched since its capture",
            "next_touch": "has had no follow-up in time",
            "task_due": f"has an overdue task {data.task_id}",
            "deal_rotting": f"has not moved out of stage {data.stage}",
            "source_fetch": "has no fields: the source's API would not give them (check the page's access token)",
        }[data.kind]
        text = (
            f":rotating_light: {data.subject_type.capitalize()} `{data.subject_id}` {what} "
            f"(deadline {data.deadline:%Y-%m-%d %H:%M} UTC, policy {data.policy}, rep {data.rep or 'unassigned'})."
        )
        subject = (data.subject_type, data.subject_id)
    elif isinstance(data, AlertEscalated):
        text = (
            f":warning: Escalated to {data.manager}: an alert for {data.rep or 'an unassigned lead or deal'} "
            f"went unanswered (alert `{envelope.aggregate_id}`)."
        )
        subject = ("alert", envelope.aggregate_id)
    elif isinstance(data, LeadQualified):
        score = f" with score {data.score:g}" if data.score is not None else ""
        text = f":star: Lead `{envelope.aggregate_id}` qualified{score}. {data.reason or ''}".rstrip()
        subject = ("lead", envelope.aggregate_id)
    else:
        return None
    return Message(
        event_id=envelope.event_id,
        type=envelope.type,
        recipient=recipient,
        text=text,
        subject_type=subject[0],
        subject_id=subject[1],
        occurred_at=envelope.occurred_at,
        data=msgspec.to_builtins(data),
    )


def recipient_of(envelope: Envelope, lead_owner: str | None) -> str | None:
    """Who hears of this event: the alert's rep (or the manager it escalated to), the qualified lead's owner."""
    data = envelope.data
    if isinstance(data, AlertRaised):
        return data.rep
    if isinstance(data, AlertEscalated):
        return data.manager
    if isinstance(data, LeadQualified):
        return lead_owner
    return None


def deliveries(rules: NotifyRules, envelope: Envelope, lead_owner: str | None = None) -> list[Delivery]:
    """The deliveries one event calls for: one per channel of its recipient. The id derives from the event,
    the recipient and the channel, so folding the event again asks for the same delivery."""
    name = recipient_of(envelope, lead_owner)
    if name is None or name not in rules.recipients:
        return []
    message = _message(envelope, name)
    if message is None:
        return []
    to = rules.recipients[name]
    out = []
    for channel, target in (("webhook", to.webhook), ("email", to.email if rules.smtp else None)):
        if target:
            out.append(
                Delivery(
                    delivery_id=derived_id("delivery", envelope.event_id, name, channel),
                    event_id=envelope.event_id,
                    recipient=name,
                    channel=channel,  # type: ignore[arg-type]
                    target=target,
                    message=message,
                )
            )
    return out


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``Dealstream-Signature`` value: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>``.

    A receiver recomputes the HMAC over the timestamp and the raw body with the shared secret, compares in
    constant time, and rejects timestamps older than a few minutes (replays)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"
