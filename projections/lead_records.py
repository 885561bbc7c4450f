"""Lead records folded from the log: what a CRM user finds a lead by and reads about it. Pure.

A record holds the lead's clear profile (opened with the lead's key by the engine, as for the scores), its channel
and marketing source, owner, status and score, when it was captured (business time), its last touch and open tasks,
and the links between duplicates. The score is the scores fold's own (:func:`projections.scores.apply`, under the
same rules), as of the lead's last event: one number, computed one way, for the record and the scores read model.

Duplicates: each live lead claims the keyed hashes of its normalised e-mail and phone (:func:`contact_keys`); a
lead whose capture (or fetched details, or correction) carries a hash another live lead holds is flagged
``duplicate_of`` that lead. A lead that is disqualified, erased or merged releases its hashes. The key of the hashes
is made at random once per database (every build folds with it, so a rebuild equals the live rows), so the
hashes mean nothing outside it. Erasure scrubs
every clear field, the hashes included.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from events.envelope import StoredEvent
from events.types import (
    LeadCaptured,
    LeadCorrected,
    LeadDetailsFetched,
    LeadErased,
    LeadMerged,
    TaskCompleted,
    TaskScheduled,
    TouchpointLogged,
)
from projections.folding import fold_into
from projections.scores import LeadScore
from projections.scores import apply as score_event
from projections.scoring import ERASED, ScoringRules

RecordStatus = Literal["open", "qualified", "disqualified", "erased", "merged"]
STATUSES: tuple[RecordStatus, ...] = ("open", "qualified", "disqualified", "erased", "merged")
_NAMES = ("first_name", "last_name", "full_name")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_MIN_PHONE_DIGITS = 7


def _given(value: str | None) -> str | None:
    return None if value is None or value == ERASED else value


class LeadRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One lead as lists and ``GET /v1/leads/{id}`` show it. ``scored`` is the scores fold's row of the lead
    (profile, touches, owner, qualification, score)."""

    lead_id: str
    scored: LeadScore
    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None
    channel: str
    captured_at: dt.datetime
    last_touch_at: dt.datetime | None = None
    open_tasks: tuple[str, ...] = ()
    corrected_fields: tuple[str, ...] = ()
    corrected_at: dt.datetime | None = None
    duplicate_of: str | None = None
    merged_into: str | None = None
    contact_keys: tuple[str, ...] = ()
    version: int

    @property
    def status(self) -> RecordStatus:
        if self.scored.erased:
            return "erased"
        if self.merged_into is not None:
            return "merged"
        return self.scored.status

    @property
    def live(self) -> bool:
        """Open or qualified: a lead others can be duplicates of."""
        return self.status in ("open", "qualified")

    @property
    def name(self) -> str | None:
        parts = [p for p in (self.first_name, self.last_name) if p]
        return self.full_name or (" ".join(parts) if parts else None)

    @property
    def last_activity_at(self) -> dt.datetime:
        """The last touch, or the capture: a lead nobody touched was last active when it came in."""
        return max(self.captured_at, self.last_touch_at or self.captured_at)

    @property
    def search_text(self) -> str:
        """What ``q`` searches, lower-cased: name, e-mail, company, phone, and the phone's digits alone."""
        p = self.scored.profile
        phone = p.phone if p.phone != "(sealed)" else None
        digits = re.sub(r"\D", "", phone or "")
        parts = (self.name, p.email if p.email and not p.email.startswith("@") else None, p.company, phone, digits)
        return " ".join(x for x in parts if x).lower()


@dataclass
class LeadTable:
    """Records by lead, the contact hashes live leads hold (hash -> lead id), and the build's hash key."""

    leads: dict[str, LeadRecord] = field(default_factory=dict)
    contacts: dict[str, str] = field(default_factory=dict)
    key: bytes = b""

    def copy(self) -> LeadTable:
        return LeadTable(dict(self.leads), dict(self.contacts), self.key)


def contact_keys(email: str | None, phone: str | None, key: bytes) -> tuple[str, ...]:
    """Keyed hashes of the normalised e-mail (trimmed, case-folded) and phone (its digits, at least 7)."""
    out = []
    email = _given(email)
    if email is not None and _EMAIL.fullmatch(email.strip()):
        out.append("e" + hmac.new(key, email.strip().casefold().encode(), hashlib.sha256).hexdigest()[:32])
    digits = re.sub(r"\D", "", _given(phone) or "")
    if len(digits) >= _MIN_PHONE_DIGITS:
        out.append("p" + hmac.new(key, digits.encode(), hashlib.sha256).hexdigest()[:32])
    return tuple(out)


def event_contact_keys(event: StoredEvent, key: bytes) -> tuple[str, ...]:
    """The contact hashes an event may bring (a capture, fetched details, a correction): what a batch looks up."""
    data = event.envelope.data
    if isinstance(data, LeadCaptured | LeadDetailsFetched | LeadCorrected):
        return contact_keys(data.email, data.phone, key)
    return ()


def _release(table: LeadTable, row: LeadRecord) -> LeadRecord:
    for k in row.contact_keys:
        if table.contacts.get(k) == row.lead_id:
            del table.contacts[k]
    return msgspec.structs.replace(row, contact_keys=())


def _claim(table: LeadTable, row: LeadRecord) -> LeadRecord:
    """The row holding its current contact hashes: each free one it claims, and a hash another live lead holds
    flags it as that lead's duplicate (the first such link stays)."""
    row = _release(table, row)
    if not row.live:
        return row
    keys = contact_keys(row.scored.profile.email, row.scored.profile.phone, table.key)
    duplicate_of = row.duplicate_of
    for k in keys:
        holder = table.contacts.setdefault(k, row.lead_id)
        if holder != row.lead_id and duplicate_of is None:
            duplicate_of = holder
    return msgspec.structs.replace(row, contact_keys=keys, duplicate_of=duplicate_of)


def _names(row: LeadRecord, data: LeadDetailsFetched | LeadCorrected, listed: Iterable[str]) -> LeadRecord:
    changes = {f: _given(getattr(data, f)) for f in _NAMES if f in listed}
    return msgspec.structs.replace(row, **changes) if changes else row


def apply(table: LeadTable, event: StoredEvent, rules: ScoringRules) -> None:
    """Fold one lead event (events at or below the record's version are ignored)."""
    env, seq = event.envelope, event.sequence
    if env.aggregate_type != "lead":
        return
    row = table.leads.get(env.aggregate_id)
    if row is not None and seq <= row.version:
        return
    data, at = env.data, env.occurred_at.astimezone(dt.UTC)
    scores = {} if row is None else {row.lead_id: row.scored}
    score_event(scores, event, rules)
    if isinstance(data, LeadCaptured):
        row = LeadRecord(
            lead_id=env.aggregate_id,
            scored=scores[env.aggregate_id],
            first_name=_given(data.first_name),
            last_name=_given(data.last_name),
            full_name=_given(data.full_name),
            channel=env.source,
            captured_at=at,
            version=seq,
        )
        row = _claim(table, row)
    elif row is None:
        return
    else:
        row = msgspec.structs.replace(row, scored=scores[row.lead_id], version=seq)
        if isinstance(data, TouchpointLogged):
            row = msgspec.structs.replace(row, last_touch_at=max(at, row.last_touch_at or at))
        elif isinstance(data, TaskScheduled) and data.task_id not in row.open_tasks:
            row = msgspec.structs.replace(row, open_tasks=(*row.open_tasks, data.task_id))
        elif isinstance(data, TaskCompleted):
            row = msgspec.structs.replace(row, open_tasks=tuple(t for t in row.open_tasks if t != data.task_id))
        elif isinstance(data, LeadDetailsFetched):
            row = _claim(table, _names(row, data, (f for f in _NAMES if getattr(data, f) is not None)))
        elif isinstance(data, LeadCorrected):
            fields = tuple(sorted({*row.corrected_fields, *data.fields}))
            row = _names(msgspec.structs.replace(row, corrected_fields=fields, corrected_at=at), data, data.fields)
            row = _claim(table, row)
        elif isinstance(data, LeadMerged):
            row = _release(table, msgspec.structs.replace(row, merged_into=data.into))
        elif isinstance(data, LeadErased):
            row = _release(table, msgspec.structs.replace(row, first_name=None, last_name=None, full_name=None))
        elif not row.live:
            row = _release(table, row)  # disqualified: no longer one others are duplicates of
    table.leads[row.lead_id] = row


def fold(events: Iterable[StoredEvent], rules: ScoringRules, table: LeadTable | None = None) -> LeadTable:
    return fold_into(LeadTable() if table is None else table, events, lambda t, e: apply(t, e, rules))
