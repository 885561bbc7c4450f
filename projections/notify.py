"""Notifications: who hears about an alert or a qualified lead, on which channel, with what message, and when.

Pure: the ``[notify]`` rules, the message a notice makes for its recipient (Slack-compatible text, written by
:mod:`projections.notices`) and its deliveries, the webhook signature, quiet hours and the retry schedule.
Addressing and sending live in workers/notify.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import zoneinfo
from typing import Annotated, Literal

import msgspec

from events.ids import derived_id
from projections.notices import Address, Notice, Subject, link, text

Channel = Literal["webhook", "email"]


def _zone(name: str, field: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{field}: unknown time zone {name!r}") from exc


class QuietHours(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Local times between which nothing is sent (``start`` > ``end`` spans midnight)."""

    start: dt.time
    end: dt.time
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        _zone(self.timezone, "quiet_hours.timezone")
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
    """``timezone``: the one their messages tell times in (else their quiet hours', else the rules')."""

    webhook: Annotated[str, msgspec.Meta(pattern=r"^https?://")] | None = None
    email: Annotated[str, msgspec.Meta(pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    quiet_hours: QuietHours | None = None
    timezone: str | None = None

    def __post_init__(self) -> None:
        if self.timezone is not None:
            _zone(self.timezone, "timezone")

    def zone(self, default: str) -> str:
        """The time zone their messages tell times in."""
        return self.timezone or (self.quiet_hours.timezone if self.quiet_hours else default)


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
    announced (a new notify build replaying old history must not page anyone). A notice about a lead or deal
    nobody owns waits ``unassigned_wait_seconds`` for an owner, then goes to ``fallback`` (by default the rules
    file's top-level ``manager``) saying it is unassigned. Messages link to ``public_url`` + ``/leads/<id>`` or
    ``/deals/<id>`` and tell times in the recipient's time zone (else ``timezone``). An escalation goes to the
    manager of whoever owns the subject when it is sent (``managers``: rep -> manager, by default from
    ``[teams]``), else to the manager the event named."""

    recipients: dict[str, Recipient] = {}
    smtp: Smtp | None = None
    secret_env: str = "DEALSTREAM_NOTIFY_SECRET"
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    backoff_initial_seconds: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    backoff_max_seconds: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    max_age_hours: Annotated[float, msgspec.Meta(gt=0)] = 24.0
    fallback: str | None = None
    managers: dict[str, str] = {}
    unassigned_wait_seconds: Annotated[float, msgspec.Meta(ge=0)] = 300.0
    public_url: Annotated[str, msgspec.Meta(pattern=r"^https?://")] = "http://localhost:8000"
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        _zone(self.timezone, "timezone")

    @property
    def unassigned_wait(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.unassigned_wait_seconds)

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
    link: str | None = None
    why: str | None = None


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    delivery_id: str
    event_id: str
    recipient: str
    channel: Channel
    target: str
    message: Message


def message(rules: NotifyRules, notice: Notice, subject: Subject, addressed: Address, now: dt.datetime) -> Message:
    """What ``addressed.recipient`` is told about ``notice``, written for them (their time zone) when it is sent."""
    assert addressed.recipient is not None
    recipient = rules.recipients.get(addressed.recipient, Recipient())
    data = msgspec.to_builtins(msgspec.structs.replace(notice, reason=None))
    return Message(
        event_id=notice.event_id,
        type=notice.type,
        recipient=addressed.recipient,
        text=text(notice, subject, addressed, recipient.zone(rules.timezone), now, rules.public_url),
        subject_type=notice.subject_type,
        subject_id=notice.subject_id,
        occurred_at=notice.occurred_at,
        data=data,
        link=link(rules.public_url, notice),
        why=addressed.why,
    )


def deliveries(rules: NotifyRules, message: Message) -> list[Delivery]:
    """The deliveries of one message: one per channel of its recipient. The id derives from the event, the
    recipient and the channel, so addressing the event again asks for the same delivery."""
    name = message.recipient
    to = rules.recipients.get(name)
    if to is None:
        return []
    out = []
    for channel, target in (("webhook", to.webhook), ("email", to.email if rules.smtp else None)):
        if target:
            out.append(
                Delivery(
                    delivery_id=derived_id("delivery", message.event_id, name, channel),
                    event_id=message.event_id,
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
