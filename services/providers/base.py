"""What every provider adapter returns: leads ready to become ``LeadCaptured`` events."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from events.envelope import RawPayload, Source
from events.types import LeadCaptured


@dataclass(frozen=True, slots=True)
class InboundLead:
    """One lead as a source delivered it.

    ``source_ref`` is the source's own id for the submission (Meta ``leadgen_id``, Typeform ``token``,
    Webflow submission ``id``); the lead's aggregate id is derived from it, so a redelivery is a no-op.
    ``occurred_at`` is the business time the source gives (UTC), not the time the request reached us.
    """

    source: Source
    source_ref: str | None
    occurred_at: dt.datetime
    lead: LeadCaptured
    raw: RawPayload
