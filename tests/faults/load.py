"""The load every fault test drives through the HTTP API while it breaks something.

Actors run sales stories side by side: capture a lead, log a call with it, open a deal from it, move the deal
through the stages (``If-Match``: the version its last answer gave), log a call on the deal. Every request
carries its own ``Idempotency-Key``; a 503 or 504, a connection error or a timeout is retried with the SAME key and
body until the API acknowledges it, so each logical request ends acknowledged exactly once or the run fails.
Every other answer is recorded as refused: the fault tests expect none.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.faults.processes import KEY

STAGES = ("new", "qualified", "proposal", "negotiation")
PIPELINE = {
    "name": "Sales",
    "stages": [
        {"id": "new", "name": "New", "probability": 0.1, "rotting_days": 7},
        {"id": "qualified", "name": "Qualified", "probability": 0.3, "rotting_days": 10},
        {"id": "proposal", "name": "Proposal", "probability": 0.6, "rotting_days": 14},
        {"id": "negotiation", "name": "Negotiation", "probability": 0.8},
    ],
}


@dataclass(frozen=True)
class Request:
    """One logical request, sent as often as it takes, always with the same key and body."""

    key: str
    method: str
    path: str
    body: dict[str, Any]
    if_match: int | None = None

    def headers(self) -> dict[str, str]:
        headers = {"Idempotency-Key": self.key}
        if self.if_match is not None:
            headers["If-Match"] = f'"{self.if_match}"'
        return headers


@dataclass(frozen=True)
class Ack:
    """A 2xx answer: what the API says it put in the log."""

    request: Request
    aggregate_type: str
    aggregate_id: str
    event_id: str
    type: str
    sequence: int
    version: int
    duplicate: bool
    attempts: int
    """How many times it was sent: more than 1 means the fault hit this request."""


@dataclass(frozen=True)
class Refused:
    request: Request
    status: int
    body: str


@dataclass
class LoadReport:
    acks: list[Ack] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    """Every attempt's outcome: a status code, or the name of the transport error."""

    @property
    def retried(self) -> list[Ack]:
        return [a for a in self.acks if a.attempts > 1]

    def summary(self) -> str:
        return f"{len(self.acks)} acknowledged ({len(self.retried)} after retries), outcomes {dict(self.outcomes)}"


class GaveUp(AssertionError):
    """A request was not acknowledged within the driver's bound: the system did not come back."""


class LoadDriver:
    """Runs ``actors`` stories at a time against ``base_url`` until stopped; see the module's docstring."""

    def __init__(
        self,
        base_url: str,
        actors: int = 6,
        pause: float = 0.01,
        timeout: float = 5.0,
        give_up_after: float = 90.0,
        seed: int = 1,
    ) -> None:
        self.base_url = base_url
        self.actors = actors
        self.pause = pause
        self.give_up_after = give_up_after
        self.run_id = uuid.uuid4().hex[:8]
        self.report = LoadReport()
        self._seed = seed
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout, headers={"Authorization": f"Bearer {KEY}"})
        self._progress = asyncio.Condition()
        self._stories = [0] * actors
        self._stopped = False
        self.in_flight = 0

    async def __aenter__(self) -> LoadDriver:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._client.aclose()

    async def send(self, request: Request) -> Ack | None:
        """Send until acknowledged (the Ack) or refused (None, recorded); retries keep the key and the body."""
        deadline = asyncio.get_running_loop().time() + self.give_up_after
        attempts = 0
        delay = 0.05
        while True:
            attempts += 1
            self.in_flight += 1
            try:
                answer = await self._client.request(
                    request.method, request.path, json=request.body, headers=request.headers()
                )
            except httpx.TransportError as exc:
                self.report.outcomes[type(exc).__name__] += 1
            else:
                self.report.outcomes[str(answer.status_code)] += 1
                if 200 <= answer.status_code < 300:
                    return await self._acknowledged(request, answer.json(), attempts)
                if answer.status_code not in (503, 504):  # 504: maybe written; the same key finds out
                    self.report.refused.append(Refused(request, answer.status_code, answer.text))
                    return None
            finally:
                self.in_flight -= 1
            if asyncio.get_running_loop().time() > deadline:
                raise GaveUp(f"{request.method} {request.path} (key {request.key}) unanswered after {attempts} tries")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _acknowledged(self, request: Request, body: dict[str, Any], attempts: int) -> Ack:
        ack = Ack(
            request=request,
            aggregate_type=body["aggregate_type"],
            aggregate_id=body["aggregate_id"],
            event_id=body["event_id"],
            type=body["type"],
            sequence=body["sequence"],
            version=body["version"],
            duplicate=body["duplicate"],
            attempts=attempts,
        )
        async with self._progress:
            self.report.acks.append(ack)
            self._progress.notify_all()
        return ack

    async def acknowledged(self, count: int, within: float = 60.0) -> None:
        """Until ``count`` requests in all have been acknowledged."""
        async with asyncio.timeout(within), self._progress:
            await self._progress.wait_for(lambda: len(self.report.acks) >= count or self._stopped)
        if len(self.report.acks) < count:
            raise AssertionError(f"the load stopped at {len(self.report.acks)} acknowledged requests, before {count}")

    async def more(self, count: int, within: float = 60.0) -> None:
        """Until ``count`` more requests than now have been acknowledged."""
        await self.acknowledged(len(self.report.acks) + count, within)

    async def define_pipeline(self) -> Ack | None:
        return await self.send(Request(f"{self.run_id}-pipeline", "PUT", "/v1/pipelines/sales", PIPELINE))

    def start(self, stop: asyncio.Event) -> asyncio.Task[LoadReport]:
        """Stories until ``stop`` is set, in a task; a request under way is carried to its answer first."""
        self._stopped = False
        return asyncio.create_task(self._run(stop))

    async def _run(self, stop: asyncio.Event) -> LoadReport:
        try:
            await self.define_pipeline()
            # A task group: one actor that gives up takes the others down with it, none is left running.
            async with asyncio.TaskGroup() as group:
                for n in range(self.actors):
                    group.create_task(self._actor(n, stop))
        finally:
            async with self._progress:
                self._stopped = True
                self._progress.notify_all()
        return self.report

    async def replay(self, acks: list[Ack]) -> list[tuple[Ack, Ack | None]]:
        """Each acknowledged request sent once more exactly as before: (first answer, new answer)."""
        return [(ack, await self.send(ack.request)) for ack in list(acks)]

    async def _actor(self, actor: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # Numbered across runs: a second run must not resend the first run's keys.
            story = self._stories[actor]
            self._stories[actor] += 1
            await self._story(actor, story, random.Random(f"{self._seed}-{actor}-{story}"), stop)

    async def _story(self, actor: int, story: int, rng: random.Random, stop: asyncio.Event) -> None:
        prefix = f"{self.run_id}-{actor}-{story}"
        steps = 0

        async def step(name: str, method: str, path: str, body: dict[str, Any], if_match: int | None = None) -> Ack:
            nonlocal steps
            steps += 1
            ack = await self.send(Request(f"{prefix}-{steps}-{name}", method, path, body, if_match))
            if ack is None or stop.is_set():
                raise _StoryOver
            await asyncio.sleep(self.pause)
            return ack

        capture: dict[str, Any] = {
            "email": f"{prefix}@example.com",
            "first_name": "Ada",
            "company": f"Company {actor}",
        }
        if rng.random() < 0.5:
            # Half the captures name the source's own id, the other half rely on the Idempotency-Key.
            capture["source_ref"] = f"form-{prefix}"
        try:
            lead = await step("capture", "POST", "/v1/leads", capture)
            await step("lead-call", "POST", f"/v1/leads/{lead.aggregate_id}/touchpoints", _call(rng))
            deal = await step(
                "open",
                "POST",
                "/v1/deals",
                {
                    "name": f"Deal {prefix}",
                    "pipeline_id": "sales",
                    "amount": str(rng.randrange(100, 50_000)),
                    "currency": "EUR",
                    "owner": rng.choice(["ana", "bo"]),
                    "lead_id": lead.aggregate_id,
                },
            )
            version = deal.version
            for stage in STAGES[1 : rng.randrange(2, len(STAGES) + 1)]:
                path = f"/v1/deals/{deal.aggregate_id}/stage"
                moved = await step("stage", "POST", path, {"to_stage": stage}, version)
                version = moved.version
            await step("deal-call", "POST", f"/v1/deals/{deal.aggregate_id}/touchpoints", _call(rng))
        except _StoryOver:
            return


class _StoryOver(Exception):
    """Stopped, or a step was refused: the story cannot go on."""


def _call(rng: random.Random) -> dict[str, Any]:
    return {
        "kind": rng.choice(["call", "email", "meeting"]),
        "direction": rng.choice(["inbound", "outbound"]),
        "duration_seconds": rng.randrange(0, 3600),
    }
