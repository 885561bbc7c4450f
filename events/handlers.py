"""One handler per command: read what the decision needs, decide (``events/aggregates.py``), append through the
ledger. Every entry point calls these; none builds an event or reads an aggregate for a decision itself."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from events import aggregates as agg
from events import commands as cmd
from events import people_handlers as people
from events.envelope import AggregateType, Envelope
from events.ids import derived_id, uuid7
from events.ledger import Accepted, Context, Decide, Ledger
from events.types import (
    DealOpened,
    DealUpdated,
    Event,
    LeadCaptured,
    LeadCorrected,
    LeadDetailsFetched,
    LeadDisqualified,
    LeadErased,
    LeadQualified,
    PipelineDefined,
    TaskCompleted,
    UserCreated,
)


async def capture_leads(ledger: Ledger, ctx: Context, command: cmd.CaptureLeads) -> list[Accepted]:
    """Each lead's first event, answers in the order given (see :meth:`Ledger.capture_many`)."""
    return await ledger.capture_many(ctx, [(n.lead_id, n.lead, n.occurred_at, n.raw) for n in command.leads])


def _on_lead(decide: Callable[[agg.LeadState], Event]) -> Decide:
    return lambda history: decide(agg.fold_lead(history))


def _on_deal(decide: Callable[[agg.DealState], Event]) -> Decide:
    return lambda history: decide(agg.fold_deal(history))


def _on_alert(decide: Callable[[agg.AlertState], Event]) -> Decide:
    return lambda history: decide(agg.fold_alert(history))


async def _execute(
    ledger: Ledger,
    ctx: Context,
    command: cmd.Command,
    aggregate_type: AggregateType,
    aggregate_id: str,
    decide: Decide,
) -> Accepted:
    return await ledger.execute(ctx, aggregate_type, aggregate_id, decide, command.occurred_at, command.if_match)


async def assign_lead(ledger: Ledger, ctx: Context, command: cmd.AssignLead) -> Accepted:
    decide = _on_lead(lambda s: agg.assign_lead(s, command.owner))
    return await _execute(ledger, ctx, command, "lead", command.lead_id, decide)


async def _first_of_lead(ledger: Ledger, ctx: Context, lead_id: str) -> tuple[Envelope, Context]:
    """The lead's capture, and ``ctx`` continuing its correlation (a system decision follows from the capture)."""
    history = await ledger.history("lead", lead_id)
    if not history:
        raise agg.Rejected("lead_id", "no such lead", 404)
    captured = history[0].envelope
    return captured, dataclasses.replace(ctx, correlation_id=captured.correlation_id)


async def route_lead(ledger: Ledger, ctx: Context, command: cmd.RouteLead) -> Accepted:
    captured, ctx = await _first_of_lead(ledger, ctx, command.lead_id)
    ctx = dataclasses.replace(ctx, causation_id=captured.event_id)
    decide = _on_lead(lambda s: agg.route_lead(s, command.owner))
    # Owned from the first minute: the assignment's business time is the lead's capture.
    return await ledger.execute(
        ctx, "lead", command.lead_id, decide, captured.occurred_at, event_id=derived_id("routing", command.lead_id)
    )


async def record_lead_details(ledger: Ledger, ctx: Context, command: cmd.RecordLeadDetails) -> Accepted:
    captured, ctx = await _first_of_lead(ledger, ctx, command.lead_id)
    ctx = dataclasses.replace(ctx, causation_id=captured.event_id)
    decide = _on_lead(lambda s: agg.record_details(s, command.details))
    # Derived from the lead: a redelivery or a second fetcher appends nothing twice. The details are what the
    # person gave at capture, so their business time is the capture's.
    event_id = derived_id("details", command.lead_id)
    return await ledger.execute(ctx, "lead", command.lead_id, decide, captured.occurred_at, event_id=event_id)


async def qualify_lead(ledger: Ledger, ctx: Context, command: cmd.QualifyLead) -> Accepted:
    event = LeadQualified(reason=command.reason, score=command.score)
    return await _execute(ledger, ctx, command, "lead", command.lead_id, _on_lead(lambda s: agg.qualify_lead(s, event)))


async def qualify_on_score(ledger: Ledger, ctx: Context, command: cmd.QualifyOnScore) -> Accepted:
    _, ctx = await _first_of_lead(ledger, ctx, command.lead_id)
    event = LeadQualified(score=command.score, reason=command.reason)
    event_id = derived_id("scores", command.build, command.lead_id, str(command.crossed_sequence))
    decide = _on_lead(lambda s: agg.qualify_lead(s, event))
    return await ledger.execute(ctx, "lead", command.lead_id, decide, command.occurred_at, event_id=event_id)


async def disqualify_lead(ledger: Ledger, ctx: Context, command: cmd.DisqualifyLead) -> Accepted:
    event = LeadDisqualified(reason=command.reason)
    decide = _on_lead(lambda s: agg.disqualify_lead(s, event))
    return await _execute(ledger, ctx, command, "lead", command.lead_id, decide)


async def erase_lead(ledger: Ledger, ctx: Context, command: cmd.EraseLead) -> Accepted:
    """Destroy the lead's key, so the sealed fields in the log can never be read again, then record it."""
    if ledger.vault is None:
        raise agg.Rejected("lead_id", "personal data is not encrypted here: nothing to erase", 409)
    history = await ledger.history("lead", command.lead_id)
    if not history:
        raise agg.Rejected("lead_id", "no such lead", 404)
    captured = history[0].envelope.data
    # The key goes first: if the event then fails to append, the data is erased all the same, and a retry of
    # the request records it.
    await ledger.vault.erase(command.lead_id, captured.key_ref if isinstance(captured, LeadCaptured) else None)
    decide = _on_lead(lambda s: agg.erase_lead(s, LeadErased(reason=command.reason)))
    return await _execute(ledger, ctx, command, "lead", command.lead_id, decide)


def _activity(aggregate_type: AggregateType, history: list[Envelope]) -> agg.Activity:
    return agg.fold_lead(history) if aggregate_type == "lead" else agg.fold_deal(history)


async def log_touchpoint(ledger: Ledger, ctx: Context, command: cmd.LogTouchpoint) -> Accepted:
    def decide(history: list[Envelope]) -> Event:
        return agg.log_touchpoint(_activity(command.on, history), command.touchpoint)

    return await _execute(ledger, ctx, command, command.on, command.aggregate_id, decide)


async def schedule_task(ledger: Ledger, ctx: Context, command: cmd.ScheduleTask) -> Accepted:
    def decide(history: list[Envelope]) -> Event:
        return agg.schedule_task(_activity(command.on, history), command.task)

    return await _execute(ledger, ctx, command, command.on, command.aggregate_id, decide)


async def complete_task(ledger: Ledger, ctx: Context, command: cmd.CompleteTask) -> Accepted:
    event = TaskCompleted(task_id=command.task_id, outcome=command.outcome)

    def decide(history: list[Envelope]) -> Event:
        return agg.complete_task(_activity(command.on, history), event)

    return await _execute(ledger, ctx, command, command.on, command.aggregate_id, decide)


async def _pipeline(ledger: Ledger, pipeline_id: str) -> agg.PipelineState:
    return agg.fold_pipeline(h.envelope for h in await ledger.history("pipeline", pipeline_id))


async def open_deal(ledger: Ledger, ctx: Context, command: cmd.OpenDeal) -> Accepted:
    """With an idempotency key and no deal id, the deal id derives from the key: a retry opens no second deal."""
    deal_id = command.deal_id or (derived_id("deal", ctx.idempotency_key) if ctx.idempotency_key else uuid7())
    pipeline = await _pipeline(ledger, command.pipeline_id)
    lead_source = None
    if command.lead_id is not None:
        lead = agg.fold_lead(h.envelope for h in await ledger.history("lead", command.lead_id))
        if not lead.exists:
            raise agg.Rejected("lead_id", f"no lead {command.lead_id!r}", 422)
        lead_source = lead.source
    event = DealOpened(
        name=command.name,
        pipeline_id=command.pipeline_id,
        stage=command.stage or (pipeline.stages[0].id if pipeline.stages else ""),
        amount=command.amount,
        currency=command.currency,
        owner=command.owner,
        expected_close_date=command.expected_close_date,
        lead_id=command.lead_id,
        lead_source=lead_source,
    )
    decide = _on_deal(lambda s: agg.open_deal(s, pipeline, event))
    return await _execute(ledger, ctx, command, "deal", deal_id, decide)


async def move_stage(ledger: Ledger, ctx: Context, command: cmd.MoveStage) -> Accepted:
    deal = agg.fold_deal(h.envelope for h in await ledger.history("deal", command.deal_id))
    # The pipeline of an existing deal (empty if there is no deal: the decision says 404).
    pipeline = await _pipeline(ledger, deal.pipeline_id) if deal.exists else agg.PipelineState()
    decide = _on_deal(lambda s: agg.move_stage(s, pipeline, command.to_stage))
    return await _execute(ledger, ctx, command, "deal", command.deal_id, decide)


async def change_amount(ledger: Ledger, ctx: Context, command: cmd.ChangeAmount) -> Accepted:
    decide = _on_deal(lambda s: agg.change_amount(s, command.amount, command.currency))
    return await _execute(ledger, ctx, command, "deal", command.deal_id, decide)


async def win_deal(ledger: Ledger, ctx: Context, command: cmd.WinDeal) -> Accepted:
    decide = _on_deal(lambda s: agg.win_deal(s, command.amount))
    return await _execute(ledger, ctx, command, "deal", command.deal_id, decide)


async def lose_deal(ledger: Ledger, ctx: Context, command: cmd.LoseDeal) -> Accepted:
    decide = _on_deal(lambda s: agg.lose_deal(s, command.reason))
    return await _execute(ledger, ctx, command, "deal", command.deal_id, decide)


async def reassign_deal(ledger: Ledger, ctx: Context, command: cmd.ReassignDeal) -> Accepted:
    decide = _on_deal(lambda s: agg.reassign_deal(s, command.owner))
    return await _execute(ledger, ctx, command, "deal", command.deal_id, decide)


async def update_deal(ledger: Ledger, ctx: Context, command: cmd.UpdateDeal) -> Accepted:
    event = DealUpdated(
        changed=command.changed,
        name=command.name,
        expected_close_date=command.expected_close_date,
        next_step=command.next_step,
    )
    decide = _on_deal(lambda s: agg.update_deal(s, event))
    return await _execute(ledger, ctx, command, "deal", command.deal_id, decide)


async def reopen_deal(ledger: Ledger, ctx: Context, command: cmd.ReopenDeal) -> Accepted:
    deal = agg.fold_deal(h.envelope for h in await ledger.history("deal", command.deal_id))
    pipeline = await _pipeline(ledger, deal.pipeline_id) if deal.exists else agg.PipelineState()
    decide = _on_deal(lambda s: agg.reopen_deal(s, pipeline, command.stage))
    return await _execute(ledger, ctx, command, "deal", command.deal_id, decide)


async def define_pipeline(ledger: Ledger, ctx: Context, command: cmd.DefinePipeline) -> Accepted:
    event = agg.define_pipeline(PipelineDefined(name=command.name, stages=command.stages))
    return await _execute(ledger, ctx, command, "pipeline", command.pipeline_id, lambda _: event)


async def raise_alert(ledger: Ledger, ctx: Context, command: cmd.RaiseAlert) -> Accepted:
    event_id = derived_id("alert", "raised", command.alert_id)
    decide = _on_alert(lambda s: agg.raise_alert(s, command.alert))
    return await ledger.execute(ctx, "alert", command.alert_id, decide, command.occurred_at, event_id=event_id)


async def escalate_alert(ledger: Ledger, ctx: Context, command: cmd.EscalateAlert) -> Accepted:
    event_id = derived_id("alert", "escalated", command.alert_id)
    decide = _on_alert(lambda s: agg.escalate_alert(s, command.manager, command.rep))
    return await ledger.execute(ctx, "alert", command.alert_id, decide, command.occurred_at, event_id=event_id)


async def correct_lead(ledger: Ledger, ctx: Context, command: cmd.CorrectLead) -> Accepted:
    """Only the fields that change are listed: the lead's current values are opened with its key to compare. The
    ledger seals the new values with that key, as it seals any text about the lead."""
    current = None
    if ledger.vault is not None:
        history = [h.envelope for h in await ledger.history("lead", command.lead_id)]
        current = agg.lead_profile(
            await ledger.vault.unsealed(history, (LeadCaptured, LeadDetailsFetched, LeadCorrected))
        )
    decide = _on_lead(lambda s: agg.correct_lead(s, command.correction, current))
    return await _execute(ledger, ctx, command, "lead", command.lead_id, decide)


async def merge_leads(ledger: Ledger, ctx: Context, command: cmd.MergeLeads) -> Accepted:
    """One event, on the absorbed lead; the survivor is read to check it is live (its own history is untouched)."""
    survivor = agg.fold_lead(h.envelope for h in await ledger.history("lead", command.into))
    decide = _on_lead(lambda s: agg.merge_leads(s, survivor, command.lead_id, command.into))
    return await _execute(ledger, ctx, command, "lead", command.lead_id, decide)


def _on_user(decide: Callable[[agg.UserState], Event]) -> Decide:
    return lambda history: decide(agg.fold_user(history))


async def create_user(ledger: Ledger, ctx: Context, command: cmd.CreateUser) -> Accepted:
    decide = _on_user(lambda s: agg.create_user(s, UserCreated(role=command.role, team=command.team)))
    return await _execute(ledger, ctx, command, "user", command.username, decide)


async def change_user_role(ledger: Ledger, ctx: Context, command: cmd.ChangeUserRole) -> Accepted:
    decide = _on_user(lambda s: agg.change_role(s, command.role, command.team))
    return await _execute(ledger, ctx, command, "user", command.user_id, decide)


async def deactivate_user(ledger: Ledger, ctx: Context, command: cmd.DeactivateUser) -> Accepted:
    decide = _on_user(lambda s: agg.deactivate_user(s, command.reason))
    return await _execute(ledger, ctx, command, "user", command.user_id, decide)


async def reactivate_user(ledger: Ledger, ctx: Context, command: cmd.ReactivateUser) -> Accepted:
    return await _execute(ledger, ctx, command, "user", command.user_id, _on_user(agg.reactivate_user))


async def record_password_set(ledger: Ledger, ctx: Context, command: cmd.RecordPasswordSet) -> Accepted:
    decide = _on_user(lambda s: agg.set_password(s, command.by))
    return await _execute(ledger, ctx, command, "user", command.user_id, decide)


HANDLERS: dict[type[cmd.Command], Callable[[Ledger, Context, Any], Awaitable[Accepted]]] = {
    cmd.AssignLead: assign_lead,
    cmd.RouteLead: route_lead,
    cmd.RecordLeadDetails: record_lead_details,
    cmd.QualifyLead: qualify_lead,
    cmd.QualifyOnScore: qualify_on_score,
    cmd.DisqualifyLead: disqualify_lead,
    cmd.EraseLead: erase_lead,
    cmd.LogTouchpoint: log_touchpoint,
    cmd.ScheduleTask: schedule_task,
    cmd.CompleteTask: complete_task,
    cmd.OpenDeal: open_deal,
    cmd.MoveStage: move_stage,
    cmd.ChangeAmount: change_amount,
    cmd.WinDeal: win_deal,
    cmd.LoseDeal: lose_deal,
    cmd.DefinePipeline: define_pipeline,
    cmd.RaiseAlert: raise_alert,
    cmd.EscalateAlert: escalate_alert,
    cmd.CorrectLead: correct_lead,
    cmd.MergeLeads: merge_leads,
    cmd.CreateUser: create_user,
    cmd.ChangeUserRole: change_user_role,
    cmd.DeactivateUser: deactivate_user,
    cmd.ReactivateUser: reactivate_user,
    cmd.RecordPasswordSet: record_password_set,
    cmd.CreateOrganisation: people.create_organisation,
    cmd.CreateContact: people.create_contact,
    cmd.LinkContact: people.link_contact,
    cmd.UnlinkContact: people.unlink_contact,
    cmd.EraseContact: people.erase_contact,
    cmd.ReassignDeal: reassign_deal,
    cmd.UpdateDeal: update_deal,
    cmd.ReopenDeal: reopen_deal,
}
"""Every command that answers with one event, by type; ``CaptureLeads`` answers per lead (:func:`capture_leads`)."""


async def handle(ledger: Ledger, ctx: Context, command: cmd.Command) -> Accepted:
    """Run ``command`` through its one handler."""
    return await HANDLERS[type(command)](ledger, ctx, command)
