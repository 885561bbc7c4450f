"""The laws every projection fold obeys, one suite parametrised over every fold (board, velocity, scores,
routing, SLA, compliance, tasks).

What the engine and the batch template (:mod:`projections.batch`) rely on:

- a log folded twice equals the log folded once (a replay changes nothing);
- any split of the log into batches, each possibly redelivering events already applied, folds to the rows of
  one pass (at-least-once delivery in log order, each batch folded from the stored rows);
- a batch folded over only the rows it touches, its changed rows written back, gives those rows too (what
  ``load_touched`` loads is all the fold reads);
- the shards of the projection (its own ``partitioned`` and ``broadcast`` types, picked by the engine's
  :class:`projections.contract.Selector`) fold to disjoint rows whose union is the whole.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.envelope import AggregateType, Source, StoredEvent
from events.subjects import partition_of
from events.types import (
    AlertEscalated,
    DealLost,
    DealOpened,
    DealStageChanged,
    DealWon,
    Event,
    LeadAssigned,
    LeadCaptured,
    LeadDisqualified,
    LeadErased,
    LeadQualified,
    PipelineDefined,
    StageDefinition,
    TaskCompleted,
    TaskScheduled,
    TouchpointLogged,
)
from projections import board, compliance, routes, scores, sla, tasks, velocity
from projections.board_store import BoardProjection
from projections.compliance_store import ComplianceProjection
from projections.contract import Projection, Selector, Shard
from projections.routing_store import RoutingProjection
from projections.scores_store import ScoresProjection
from projections.sla_store import SlaProjection
from projections.tasks_store import TasksProjection
from projections.velocity_store import VelocityProjection
from tests.builders import envelope
from tests.unit.test_board_properties import deal_edit
from tests.unit.test_board_properties import logs as board_logs
from tests.unit.test_compliance_fold import RULES as COMPLIANCE_RULES
from tests.unit.test_routing import RULES as ROUTING_RULES
from tests.unit.test_scores import RULES as SCORING_RULES
from tests.unit.test_sla import RULES as SLA_RULES
from tests.unit.test_sla import raised
from tests.unit.test_velocity_properties import logs as velocity_logs

T0 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)
LEADS = [f"lead{i}" for i in range(5)]
DEALS = [f"deal{i}" for i in range(4)]
PIPELINES = ["p1", "p2"]
STAGES = ["new", "qualified", "proposal"]


def stored(
    seq: int, data: Event, aggregate_id: str, at: dt.datetime, kind: AggregateType, source: Source = "api"
) -> StoredEvent:
    env = envelope(data, aggregate_type=kind, aggregate_id=aggregate_id, occurred_at=at)
    if source != "api":
        env = msgspec.structs.replace(env, source=source)
    return StoredEvent(sequence=seq, subject=f"t.evt.{kind}.0.{aggregate_id}", envelope=env)


def touchpoint(draw: st.DrawFn) -> TouchpointLogged:
    return TouchpointLogged(
        touchpoint_id=f"tp{draw(st.integers(0, 99))}",
        kind=draw(st.sampled_from(["call", "email", "meeting", "note", "sms"])),
        direction=draw(st.sampled_from(["outbound", "inbound", "internal"])),
        outcome=draw(st.sampled_from([None, "spoke", "voicemail"])),
    )


def lead_event(draw: st.DrawFn) -> Event:
    kind = draw(st.sampled_from(["capture", "capture", "touch", "touch", "assign", "qualify", "disqualify", "erase"]))
    if kind == "capture":
        return LeadCaptured(
            email="x@y.io",
            job_title=draw(st.sampled_from([None, "Head of IT", "Intern"])),
            country=draw(st.sampled_from([None, "DE", "PL"])),
        )
    if kind == "touch":
        return touchpoint(draw)
    if kind == "assign":
        return LeadAssigned(
            owner=draw(st.sampled_from(["ana", "bob"])), reason=draw(st.sampled_from(["manual", "rule"]))
        )
    if kind == "qualify":
        return LeadQualified()
    return LeadDisqualified(reason="no") if kind == "disqualify" else LeadErased()


def deal_event(draw: st.DrawFn) -> Event:
    kind = draw(st.sampled_from(["open", "open", "touch", "move", "task", "done", "won", "lost", "edit"]))
    stage = draw(st.sampled_from(STAGES))
    if kind == "edit":
        return draw(deal_edit(stage))
    task_id = f"t{draw(st.integers(0, 2))}"
    if kind == "open":
        return DealOpened(
            name="Acme",
            pipeline_id=draw(st.sampled_from(PIPELINES)),
            stage=stage,
            amount=Decimal(draw(st.integers(0, 999))),
            currency="EUR",
            owner=draw(st.sampled_from([None, "ana"])),
        )
    if kind == "touch":
        return touchpoint(draw)
    if kind == "move":
        return DealStageChanged(from_stage="x", to_stage=stage)
    if kind == "task":
        return TaskScheduled(task_id=task_id, due_at=T0 + draw(st.integers(0, 6000)) * MINUTE)
    if kind == "done":
        return TaskCompleted(task_id=task_id)
    if kind == "won":
        return DealWon(stage=stage, amount=Decimal(1), currency="EUR")
    return DealLost(stage=stage, reason="price")


def alert_event(draw: st.DrawFn, timer: sla.Timer) -> Event:
    return AlertEscalated(manager="maria", rep=timer.rep) if draw(st.booleans()) else raised(timer)


@st.composite
def sla_logs(draw: st.DrawFn) -> list[StoredEvent]:
    """Leads and deals with touches, tasks and closes, pipelines with rotting days, and alerts on the timers the
    log so far has started (what the SLA worker appends); sources that pick different policies."""
    events: list[StoredEvent] = []
    seq = 0
    for _ in range(draw(st.integers(0, 40))):
        seq += draw(st.integers(1, 3))
        at = T0 + draw(st.integers(0, 3000)) * MINUTE
        roll = draw(st.integers(0, 9))
        timers = list(sla.fold(events, SLA_RULES).timers.values()) if roll == 0 else []
        if timers:
            timer = draw(st.sampled_from(timers))
            events.append(stored(seq, alert_event(draw, timer), timer.timer_id, at, "alert"))
        elif roll == 1:
            rotting = st.none() | st.integers(1, 5)
            data: Event = PipelineDefined(
                name="P",
                stages=[
                    StageDefinition(id=s, name=s.title(), probability=0.5, rotting_days=draw(rotting)) for s in STAGES
                ],
            )
            events.append(stored(seq, data, draw(st.sampled_from(PIPELINES)), at, "pipeline"))
        elif roll <= 5:
            source: Source = draw(st.sampled_from(["api", "meta", "web_form"]))
            events.append(stored(seq, lead_event(draw), draw(st.sampled_from(LEADS)), at, "lead", source))
        else:
            events.append(stored(seq, deal_event(draw), draw(st.sampled_from(DEALS)), at, "deal"))
    return events


@st.composite
def lead_logs(draw: st.DrawFn) -> list[StoredEvent]:
    """Lead events only, business times in any order: what the scores fold reads."""
    events: list[StoredEvent] = []
    seq = 0
    for _ in range(draw(st.integers(0, 40))):
        seq += draw(st.integers(1, 3))
        at = T0 + draw(st.integers(0, 30 * 24 * 60)) * MINUTE
        source: Source = draw(st.sampled_from(["api", "meta"]))
        events.append(stored(seq, lead_event(draw), draw(st.sampled_from(LEADS)), at, "lead", source))
    return events


Tables = Mapping[str, dict[Any, Any]]


@dataclass(frozen=True)
class FoldCase:
    """One fold under the laws: its projection (for the shard split), logs, empty state and fold; ``tables``
    names the row maps of a state (the live dicts), ``touched`` is what ``load_touched`` loads from a store."""

    name: str
    projection: Projection
    logs: st.SearchStrategy[list[StoredEvent]]
    new: Callable[[], Any]
    apply: Callable[[Any, StoredEvent], object]
    tables: Callable[[Any], Tables]
    touched: Callable[[Any, Sequence[StoredEvent]], Any]

    def fold(self, events: Sequence[StoredEvent], state: Any = None) -> Any:
        state = self.new() if state is None else state
        for event in events:
            self.apply(state, event)
        return state


def ids_of(events: Sequence[StoredEvent], *kinds: str) -> set[str]:
    return {e.envelope.aggregate_id for e in events if e.envelope.aggregate_type in kinds}


def board_touched(store: board.BoardState, events: Sequence[StoredEvent]) -> board.BoardState:
    deals, pipelines = ids_of(events, "deal"), ids_of(events, "pipeline")
    return board.BoardState(
        deals={k: v for k, v in store.deals.items() if k in deals},
        pipelines={k: v for k, v in store.pipelines.items() if k in pipelines},
    )


def velocity_touched(store: velocity.VelocityState, events: Sequence[StoredEvent]) -> velocity.VelocityState:
    deals, leads, pipelines = ids_of(events, "deal"), ids_of(events, "lead"), ids_of(events, "pipeline")
    return velocity.VelocityState(
        deals={k: v for k, v in store.deals.items() if k in deals},
        leads={k: v for k, v in store.leads.items() if k in leads},
        pipelines={k: v for k, v in store.pipelines.items() if k in pipelines},
    )


def scores_touched(store: dict[str, scores.LeadScore], events: Sequence[StoredEvent]) -> dict[str, scores.LeadScore]:
    leads = ids_of(events, "lead")
    return {k: v for k, v in store.items() if k in leads}


def routes_touched(store: routes.RoutingTable, events: Sequence[StoredEvent]) -> routes.RoutingTable:
    leads = ids_of(events, "lead")
    return routes.RoutingTable(leads={k: v for k, v in store.leads.items() if k in leads}, turns=dict(store.turns))


def fit_score(data: LeadCaptured, source: str) -> float:
    return 80.0 if data.job_title == "Head of IT" else 10.0


def sla_touched(store: sla.SlaState, events: Sequence[StoredEvent]) -> sla.SlaState:
    """As :func:`projections.sla_store.load_state`: the touched subjects with their open timers, the timers
    the batch's alerts name, and every pipeline."""
    touched = {(e.envelope.aggregate_type, e.envelope.aggregate_id) for e in events}
    subjects = [k for k in store.subjects if k in touched]
    alerts = ids_of(events, "alert")
    timers = {
        k: t
        for k, t in store.timers.items()
        if k in alerts or ((t.subject_type, t.subject_id) in subjects and t.state in ("pending", "raised"))
    }
    return sla.SlaState(
        subjects={k: store.subjects[k] for k in subjects},
        timers=sla.Timers(timers),
        pipelines=dict(store.pipelines),
        pipeline_versions=dict(store.pipeline_versions),
    )


def compliance_touched(store: compliance.ComplianceState, events: Sequence[StoredEvent]) -> compliance.ComplianceState:
    leads = ids_of(events, "lead")
    return compliance.ComplianceState({k: v for k, v in store.leads.items() if k in leads})


def tasks_touched(store: tasks.TasksState, events: Sequence[StoredEvent]) -> tasks.TasksState:
    """As :meth:`projections.tasks_store.TasksProjection.load_touched`: the touched subjects and their tasks."""
    touched = {(e.envelope.aggregate_type, e.envelope.aggregate_id) for e in events}
    return tasks.TasksState(
        subjects={k: v for k, v in store.subjects.items() if k in touched},
        tasks={k: v for k, v in store.tasks.items() if k[:2] in touched},
    )


CASES = [
    FoldCase(
        name="board",
        projection=BoardProjection(),
        logs=board_logs(),
        new=board.BoardState,
        apply=board.apply,
        tables=lambda s: {"deals": s.deals, "pipelines": s.pipelines},
        touched=board_touched,
    ),
    FoldCase(
        name="velocity",
        projection=VelocityProjection(),
        logs=velocity_logs(),
        new=velocity.VelocityState,
        apply=velocity.apply,
        tables=lambda s: {"deals": s.deals, "leads": s.leads, "pipelines": s.pipelines},
        touched=velocity_touched,
    ),
    FoldCase(
        name="scores",
        projection=ScoresProjection(SCORING_RULES),
        logs=lead_logs(),
        new=dict,
        apply=lambda state, event: scores.apply(state, event, SCORING_RULES),
        tables=lambda s: {"leads": s},
        touched=scores_touched,
    ),
    FoldCase(
        name="routing",
        projection=RoutingProjection(ROUTING_RULES, fit_score),
        logs=lead_logs(),
        new=routes.RoutingTable,
        apply=lambda state, event: routes.apply(state, event, ROUTING_RULES, fit_score),
        tables=lambda s: {"leads": s.leads, "turns": s.turns},
        touched=routes_touched,
    ),
    FoldCase(
        name="sla",
        projection=SlaProjection(SLA_RULES),
        logs=sla_logs(),
        new=sla.SlaState,
        apply=lambda state, event: sla.apply(state, event, SLA_RULES),
        tables=lambda s: {
            "subjects": s.subjects,
            "timers": s.timers,
            "pipelines": s.pipelines,
            "pipeline_versions": s.pipeline_versions,
        },
        touched=sla_touched,
    ),
    FoldCase(
        name="compliance",
        projection=ComplianceProjection(COMPLIANCE_RULES),
        logs=lead_logs(),
        new=compliance.ComplianceState,
        apply=lambda state, event: compliance.apply(state, event, COMPLIANCE_RULES),
        tables=lambda s: {"leads": s.leads},
        touched=compliance_touched,
    ),
    FoldCase(
        name="tasks",
        projection=TasksProjection(),
        logs=sla_logs(),
        new=tasks.TasksState,
        apply=tasks.apply,
        tables=lambda s: {"subjects": s.subjects, "tasks": s.tasks},
        touched=tasks_touched,
    ),
]
EVERY_FOLD = pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])


def write_back(case: FoldCase, store: Any, before: Any, after: Any) -> None:
    """Upsert into ``store`` what the batch changed, as ``write_changes`` does (item by item: ``Timers``
    indexes each one)."""
    targets = case.tables(store)
    old = case.tables(before)
    for name, rows in case.tables(after).items():
        for key, row in rows.items():
            if row != old[name].get(key):
                targets[name][key] = row


def batches(events: list[StoredEvent], data: st.DataObject) -> list[list[StoredEvent]]:
    """Consecutive batches in log order, each of which may start again from any earlier event."""
    out: list[list[StoredEvent]] = []
    position = 0
    while position < len(events):
        start = data.draw(st.integers(0, position), label="redelivered from")
        end = data.draw(st.integers(position + 1, len(events)), label="batch end")
        out.append(events[start:end])
        position = end
    return out


@EVERY_FOLD
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_folding_a_log_twice_equals_folding_it_once(case: FoldCase, data: st.DataObject) -> None:
    events = data.draw(case.logs, label="log")
    once = case.fold(events)
    assert case.fold(events, once.copy()) == once


@EVERY_FOLD
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_any_batching_with_redeliveries_folds_to_one_pass(case: FoldCase, data: st.DataObject) -> None:
    events = data.draw(case.logs, label="log")
    state = case.new()
    for batch in batches(events, data):
        state = case.fold(batch, state.copy())  # each batch from the stored rows, as apply_batch does
    assert state == case.fold(events)


@EVERY_FOLD
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_a_batch_folded_over_only_the_rows_it_touches_writes_the_same_rows(case: FoldCase, data: st.DataObject) -> None:
    events = data.draw(case.logs, label="log")
    store = case.new()
    for batch in batches(events, data):
        state = case.touched(store, batch)
        before = state.copy()
        case.fold(batch, state)
        write_back(case, store, before, state)
    assert store == case.fold(events)


@EVERY_FOLD
@settings(max_examples=100, deadline=None)
@given(data=st.data(), count=st.integers(1, 4))
def test_the_shards_fold_to_disjoint_rows_whose_union_is_the_whole(
    case: FoldCase, data: st.DataObject, count: int
) -> None:
    events = data.draw(case.logs, label="log")
    every_shard_holds = shared_tables(case)
    merged = case.new()
    for k in range(count):
        takes = Selector(case.projection, Shard(k, count))
        part = case.fold([e for e in events if takes(subject_of(e))])
        for name, rows in case.tables(part).items():
            target = case.tables(merged)[name]
            assert name in every_shard_holds or not (target.keys() & rows.keys()), f"{name}: a row of two shards"
            for key, row in rows.items():
                target[key] = row
    assert merged == case.fold(events)


def subject_of(event: StoredEvent) -> str:
    """The event's subject in the log, with its real partition (the shared builders put every event in 0)."""
    env = event.envelope
    return f"t.evt.{env.aggregate_type}.{partition_of(env.aggregate_id)}.{env.aggregate_id}"


def shared_tables(case: FoldCase) -> set[str]:
    """Tables every shard holds in full: those of a broadcast type (SLA: the pipelines' rotting days)."""
    if not case.projection.partitioned:
        return set(case.tables(case.new()))  # one shard's projection (routing: the turns are shared)
    return {"pipelines", "pipeline_versions"} if "pipeline" in case.projection.broadcast else set()
