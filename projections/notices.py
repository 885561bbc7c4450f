"""Notices: what an alert or a qualified lead asks to announce, who hears it when it is sent, and its text. Pure.

An event becomes a :class:`Notice` when folded; the notify worker addresses it when it delivers it, to the
lead's or deal's owner as the notify read model then knows it (never the rep frozen in the event), and writes
the text for that person: who the lead is, what to do by when in their own time zone, and a link.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping
from typing import Literal

import msgspec

from events.envelope import Envelope
from events.types import AlertEscalated, AlertRaised, LeadCaptured, LeadDetailsFetched, LeadQualified

Why = Literal["owner", "named", "unassigned"]
"""Why a recipient hears a notice: they own its subject, the event named them (the manager an alert escalated
to, the admin of a source's alert), or nobody owned the subject after the wait (the fallback)."""


class Notice(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One event's announcement, before anyone is chosen to hear it. ``reason`` quotes the lead (personal)."""

    event_id: str
    type: str
    kind: str
    subject_type: Literal["lead", "deal"]
    subject_id: str
    occurred_at: dt.datetime
    deadline: dt.datetime | None = None
    policy: str | None = None
    stage: str | None = None
    task_id: str | None = None
    alert_id: str | None = None
    rep: str | None = None
    to: str | None = None
    score: float | None = None
    reason: str | None = None


class Subject(msgspec.Struct, frozen=True, kw_only=True):
    """The lead or deal a notice is about, as the notify read model knows it when the notice is sent."""

    owner: str | None = None
    name: str | None = None
    company: str | None = None
    task_owner: str | None = None


class Address(msgspec.Struct, frozen=True, kw_only=True):
    """Who hears a notice (None: nobody can) and why."""

    recipient: str | None
    why: Why


def notice_of(envelope: Envelope, raised: AlertRaised | None = None) -> Notice | None:
    """The notice an event asks for; an escalation needs the alert it escalates (``raised``), else None."""
    data = envelope.data
    if isinstance(data, AlertRaised):
        # A source's alert goes to the admin it names; the others to whoever owns the subject when sent.
        return _alert(envelope, data, to=data.rep if data.kind == "source_fetch" else None)
    if isinstance(data, AlertEscalated) and raised is not None:
        escalation = _alert(envelope, raised, to=data.manager)
        return msgspec.structs.replace(escalation, kind=f"escalated:{raised.kind}", rep=data.rep)
    if isinstance(data, LeadQualified):
        return Notice(
            event_id=envelope.event_id,
            type=envelope.type,
            kind="qualified",
            subject_type="lead",
            subject_id=envelope.aggregate_id,
            occurred_at=envelope.occurred_at,
            score=data.score,
            reason=data.reason,
        )
    return None


def _alert(envelope: Envelope, data: AlertRaised, to: str | None) -> Notice:
    return Notice(
        event_id=envelope.event_id,
        type=envelope.type,
        kind=data.kind,
        subject_type=data.subject_type,
        subject_id=data.subject_id,
        occurred_at=envelope.occurred_at,
        deadline=data.deadline,
        policy=data.policy,
        stage=data.stage,
        task_id=data.task_id,
        alert_id=envelope.aggregate_id,
        rep=data.rep,
        to=to,
    )


def address(
    notice: Notice,
    subject: Subject,
    waited: dt.timedelta,
    wait: dt.timedelta,
    fallback: str | None,
    managers: Mapping[str, str] | None = None,
) -> Address | None:
    """Who hears the notice now. An escalation: the manager of the subject's current owner (``managers``: rep ->
    manager), else the manager the event named. A source's alert: the admin it named. Else the subject's current
    owner (a task's own owner, for a task's alert); None while nobody owns it and the wait is not over; then the
    rep the event named, else the fallback, saying it is unassigned."""
    # A task's alert is its task owner's, when the task named one; the others the lead's or deal's owner's.
    owner = subject.task_owner if notice.task_id is not None and subject.task_owner else subject.owner
    owner = owner or (notice.rep if notice.kind.startswith("escalated:") else None)
    if notice.kind.startswith("escalated:"):
        manager = (managers or {}).get(owner) if owner else None
        return Address(recipient=manager or notice.to, why="named" if owner else "unassigned")
    if notice.to is not None:
        return Address(recipient=notice.to, why="named")
    if owner is not None:
        return Address(recipient=owner, why="owner")
    if waited < wait:
        return None
    if notice.rep is not None:
        return Address(recipient=notice.rep, why="owner")
    return Address(recipient=fallback, why="unassigned")


def person(captured: LeadCaptured | LeadDetailsFetched) -> tuple[str | None, str | None]:
    """A lead's name (full, else first and last, else the e-mail) and company, as captured or fetched."""
    parts = [p for p in (captured.first_name, captured.last_name) if p]
    return captured.full_name or (" ".join(parts) if parts else captured.email), captured.company


_TODO = {
    "first_touch": ("Call {who}", "first touch due {when}"),
    "next_touch": ("Follow up with {who}", "next touch was due {when}"),
    "task_due": ("Do the overdue task on {who}", "task {task} was due {when}"),
    "deal_rotting": ("Move {who} on", "stuck in stage {stage} since {when}"),
    "source_fetch": (
        "Check the Meta page's access token",
        "{who} came in without its fields (the source's API would not give them)",
    ),
}


def local_time(at: dt.datetime, zone_name: str, now: dt.datetime) -> str:
    """``14:05 Warsaw time`` (with the day when it is not today there); ``14:05 UTC`` in UTC."""
    zone = zoneinfo.ZoneInfo(zone_name)
    local = at.astimezone(zone)
    clock = local.strftime("%H:%M") if local.date() == now.astimezone(zone).date() else local.strftime("%a %d %b %H:%M")
    if zone_name in ("UTC", "Etc/UTC"):
        return f"{clock} UTC"
    return f"{clock} {zone_name.rsplit('/', 1)[-1].replace('_', ' ')} time"


def who(notice: Notice, subject: Subject) -> str:
    """The subject as a person reads it: ``Marta Kowalska (Kowalski i Synowie)``, ``deal Pilot (Acme)``."""
    name = subject.name or ("an unnamed lead" if notice.subject_type == "lead" else "an unnamed deal")
    if notice.subject_type == "deal" and subject.name:
        name = f"deal {subject.name}"
    return f"{name} ({subject.company})" if subject.company else name


def link(public_url: str, notice: Notice) -> str:
    """Where the subject is: ``<public_url>/leads/<id>`` or ``<public_url>/deals/<id>``."""
    return f"{public_url.rstrip('/')}/{notice.subject_type}s/{notice.subject_id}"


def text(notice: Notice, subject: Subject, addressed: Address, zone: str, now: dt.datetime, url: str) -> str:
    """The message for one person: what to do about whom, by when in their time, why them, and the link."""
    person_ = who(notice, subject)
    when = local_time(notice.deadline, zone, now) if notice.deadline is not None else ""
    kind = notice.kind.removeprefix("escalated:")
    if notice.kind == "qualified":
        score = f" with score {notice.score:g}" if notice.score is not None else ""
        lines = [f"Call {person_}: the lead qualified{score}."]
    else:
        todo, due = _TODO[kind]
        values = {"who": person_, "when": when, "task": notice.task_id or "", "stage": notice.stage or ""}
        if notice.kind.startswith("escalated:"):
            owner = subject.owner or notice.rep
            by = owner if owner else "nobody (it has no owner)"
            lines = [f"Escalated to you: {by} has not acted on {person_}: {due.format(**values)}."]
        else:
            lines = [f"{todo.format(**values)}: {due.format(**values)}."]
    if addressed.why == "unassigned":
        lines.append(f"You get this because the {notice.subject_type} has no owner yet (unassigned).")
    lines.append(link(url, notice))
    if notice.reason:
        lines.append(notice.reason)
    return "\n".join(lines)
