"""The projection engine: feed one projection (one shard of it) from a durable pull consumer into PostgreSQL.

Loop: fetch a batch, decode, drop what the checkpoint already covers, apply the batch and move the
checkpoint in ONE transaction, commit, then ack (AckPolicy.ALL: acking the batch's last message acks the
batch). The database is the authority on progress: on start and after any trouble the consumer is checked
against the checkpoint and recreated from checkpoint + 1 when they disagree, so a crash between commit and
ack, a lost delivery or a deleted consumer costs a re-read, never a lost or doubled event.

Poison (an undecodable message, or an event the projection raises on) goes to the dead-letter stream with
the reason in headers and is skipped; it is published before the commit that moves past it, with a
``Nats-Msg-Id`` so a retry does not duplicate it. NATS and PostgreSQL outages are retried with backoff.

The named parts live beside it: :mod:`workers.consumer` (consumer sync, prefetch), :mod:`workers.checkpoints`,
:mod:`workers.takeover`, :mod:`workers.lag` (lag, stall detection) and :mod:`workers.dead_letters`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import nats.errors
import psycopg
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from psycopg.pq import TransactionStatus

from events.codec import DecodeError, decode
from events.config import NatsSettings, connect
from events.envelope import StoredEvent
from events.personal import Vault
from events.store import StoreUnavailable
from events.streams import StreamsNotReady, require_streams
from events.types import LeadErased
from projections.contract import Projection, Selector, Shard, checkpoint_name, consumer_filter, consumer_name
from projections.versions import BuildConflict, BuildRules, label_of, register
from workers.checkpoints import ensure_schema, move_checkpoint, read_checkpoint
from workers.consumer import Prefetch, ShardConsumer
from workers.dead_letters import DeadLetters, Poison, is_poison
from workers.lag import StallWatch, measure_lag
from workers.takeover import Moved, TakeOver

log = structlog.get_logger("dealstream.engine")

_CACHED_KEYS = 100_000
"""Lead keys a worker keeps opened (about 100 bytes each): a projection's batches name the same leads again."""


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Tuning of the loop; what it builds (the version, a labelled rebuild) belongs to the projection."""

    batch_size: int = 1000
    fetch_timeout: float = 1.0
    # Longer than the slowest batch (the event-by-event slow path): a redelivery mid-batch is wasted work.
    ack_wait: float = 60.0
    lag_interval: float = 30.0
    backoff_initial: float = 0.2
    backoff_max: float = 10.0
    # "live": take over from a lower version, follow a same-version rebuild that took over.
    # "rebuild": take over from the same version once caught up (dealstream rebuild).
    # "shadow": never take over nor follow (dealstream verify).
    mode: Literal["live", "rebuild", "shadow"] = "live"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch size must be at least 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EngineSettings:
        """``DEALSTREAM_ENGINE_BATCH``, ``_FETCH_TIMEOUT``, ``_ACK_WAIT``, ``_LAG_INTERVAL`` of ``env`` (read by
        :class:`workers.settings.Settings`)."""
        d = cls()
        return cls(
            batch_size=int(env.get("DEALSTREAM_ENGINE_BATCH", d.batch_size)),
            fetch_timeout=float(env.get("DEALSTREAM_ENGINE_FETCH_TIMEOUT", d.fetch_timeout)),
            ack_wait=float(env.get("DEALSTREAM_ENGINE_ACK_WAIT", d.ack_wait)),
            lag_interval=float(env.get("DEALSTREAM_ENGINE_LAG_INTERVAL", d.lag_interval)),
        )


class _Reset(Exception):
    """The consumer and the checkpoint disagree (a gap in deliveries, lost ownership): re-sync, no backoff."""


class _BatchFailed(Exception):
    """The projection raised on the batch for a reason that may be one event's fault: take the slow path."""


class ProjectionEngine:
    """Runs one shard of one projection until ``stop`` is set; survives NATS and PostgreSQL outages.

    ``rules``: what the build is made from, recorded with it and checked against what it was made from before
    anything is written (None: not stated, nothing checked). ``follows_rebuilds``: whether, in live mode, it
    moves to a rebuild of its version once that serves; by default only the version's own (unlabelled) build
    does, since a labelled build is someone's copy and must stay in its own tables."""

    def __init__(
        self,
        projection: Projection,
        nats_settings: NatsSettings,
        database_url: str,
        shard: Shard | None = None,
        settings: EngineSettings | None = None,
        rules: BuildRules | None = None,
        follows_rebuilds: bool | None = None,
    ) -> None:
        self.projection = projection
        self.rules = rules
        self.nats_settings = nats_settings
        self.naming = nats_settings.naming
        self.database_url = database_url
        self.shard = shard or Shard()
        self.settings = settings or EngineSettings()
        if getattr(projection, "reads_personal", ()) and "lead" not in (*projection.partitioned, *projection.broadcast):
            # Its cached keys are forgotten on the lead's erasure: it must hear of it.
            raise ValueError(f"{projection.name}: a projection that reads personal data must read lead events")
        self.checkpoint_key = checkpoint_name(projection)
        self.durable = consumer_name(self.naming, projection, self.shard)
        self.filter = consumer_filter(self.naming, projection)
        self.selects = Selector(projection, self.shard)
        self.log = log.bind(projection=self.checkpoint_key, partition=self.shard.key)
        self.consumer = ShardConsumer(
            self.naming.events_stream, self.durable, self.filter, self.settings.batch_size, self.settings.ack_wait
        )
        follows = label_of(projection.build) == "" if follows_rebuilds is None else follows_rebuilds
        self.take_over = TakeOver(projection, self.shard, self.settings.mode, rules, follows)
        self.stall = StallWatch()
        self.dead_letters = DeadLetters(
            self.naming, projection.name, self.checkpoint_key, nats_settings.publish_timeout
        )
        self._pg: psycopg.AsyncConnection[Any] | None = None
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._vault: Vault | None = None
        self._vault_js: JetStreamContext | None = None
        self._checkpoint = 0
        self._next_consumer_seq = 1
        self._in_sync = False
        self.refused: str | None = None
        self.applied = 0
        self.batches = 0

    @property
    def serving(self) -> bool:
        """Whether this engine's build serves readers."""
        return self.take_over.serving

    @property
    def superseded_by(self) -> str | None:
        return self.take_over.superseded_by

    @property
    def moved_to(self) -> str | None:
        return self.take_over.moved_to

    @property
    def not_following(self) -> str | None:
        return self.take_over.not_following

    @property
    def dead_lettered(self) -> int:
        return self.dead_letters.sent

    # --- lifecycle -----------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` is set (the current batch is finished, committed and acked first)."""
        stop = stop or asyncio.Event()
        backoff = self.settings.backoff_initial
        self.log.info("engine.start", filter=self.filter, durable=self.durable)
        resets = 0
        try:
            while not stop.is_set():
                progress = self.batches
                try:
                    await self._connect(stop)
                    if stop.is_set():
                        break
                    if not self._in_sync:
                        await self._sync_consumer()
                    await self._consume(stop)
                except Moved:
                    break
                except StreamsNotReady:
                    raise  # not an outage: the process refuses to run until the administrator fixes the streams
                except BuildConflict as exc:
                    # Not a passing trouble: retrying would write into a build that is not this process's.
                    self.refused = str(exc)
                    self.log.error("engine.refused", reason=self.refused)
                    break
                except _Reset as exc:
                    self.log.warning("engine.resync", reason=str(exc))
                    self._in_sync = False
                    resets = 0 if self.batches != progress else resets + 1
                    if resets < 2:
                        continue  # a first re-sync is immediate; repeated ones back off below
                except Exception as exc:
                    if self._retryable(exc):
                        self.log.warning("engine.retry", error=f"{type(exc).__name__}: {exc}", backoff=backoff)
                    else:
                        # A bug or a state nobody planned for: keep trying, loudly, rather than exit and leave
                        # the board silently stale.
                        self.log.error(
                            "engine.error", error=f"{type(exc).__name__}: {exc}", backoff=backoff, exc_info=True
                        )
                    self._in_sync = False
                    await self._drop_broken()
                if self.batches != progress:
                    backoff = self.settings.backoff_initial
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, self.settings.backoff_max)
        finally:
            await self._close()
            self.log.info(
                "engine.stop", checkpoint=self._checkpoint, applied=self.applied, dead_lettered=self.dead_lettered
            )

    @staticmethod
    def _retryable(exc: Exception) -> bool:
        return isinstance(exc, psycopg.Error | nats.errors.Error | OSError | TimeoutError | StoreUnavailable)

    async def _connect(self, stop: asyncio.Event) -> None:
        if self._nc is None or self._nc.is_closed:
            nc, js = await connect(self.nats_settings, f"dealstream-{self.durable}")
            try:
                # Checked, never changed: only the administrator changes the log (`dealstream streams`).
                await require_streams(js, self.naming, self.nats_settings.streams)
            except BaseException:
                with contextlib.suppress(Exception):
                    await nc.close()
                raise
            self._nc, self._js = nc, js
        if self._pg is None or self._pg.closed:
            self._in_sync = False
            self._pg = await self._open_database(stop)

    async def _open_database(self, stop: asyncio.Event) -> psycopg.AsyncConnection[Any] | None:
        """A connection that owns this shard (its advisory lock held), or None if stopped while waiting for it.

        Only a connection that got all the way is kept: a half-set-up one must never pass for the owner."""
        pg = await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True, connect_timeout=5, application_name=self.durable[:63]
        )
        try:
            await pg.execute("SET TIME ZONE 'UTC'")
            await ensure_schema(pg, self.projection, self.shard, self.rules)
            # One owner per (schema, projection, shard): a second process with the same partition waits here
            # as a standby instead of splitting the consumer's messages with the first.
            while True:
                cur = await pg.execute(
                    "SELECT pg_try_advisory_lock(hashtext(current_schema() || %s), hashtext(%s))",
                    (self.checkpoint_key, self.shard.key),
                )
                row = await cur.fetchone()
                if row and row[0]:
                    break
                self.log.info("engine.standby", reason="another process owns this partition")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
                if stop.is_set():
                    await pg.close()
                    return None
            p = self.projection
            await register(pg, p.name, p.build, p.version)
        except BaseException:
            with contextlib.suppress(Exception):
                await pg.close()
            raise
        return pg

    async def _drop_broken(self) -> None:
        # A PostgreSQL connection in an unknown state is replaced: the checkpoint is re-read from the new one.
        pg = self._pg
        if pg is not None and (pg.closed or pg.broken or pg.info.transaction_status != TransactionStatus.IDLE):
            with contextlib.suppress(Exception):
                await pg.close()
            self._pg = None

    async def _close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = self._js = None
        if self._pg is not None:
            with contextlib.suppress(Exception):
                await self._pg.close()
            self._pg = None

    # --- consumer ------------------------------------------------------------------------------------------

    async def _sync_consumer(self) -> None:
        """Bind to the durable consumer if it stands exactly at the checkpoint, else recreate it from there."""
        assert self._js is not None and self._pg is not None
        self._checkpoint = await read_checkpoint(self._pg, self.checkpoint_key, self.shard.key)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        self._sub, self._next_consumer_seq = await self.consumer.sync(self._js, self._checkpoint, self.log)
        self.stall.reset()
        self._in_sync = True

    # --- the loop ------------------------------------------------------------------------------------------

    async def _consume(self, stop: asyncio.Event) -> None:
        assert self._sub is not None and self._nc is not None
        prefetch = Prefetch(self._sub, self.settings.batch_size, self.settings.fetch_timeout)
        next_lag = time.monotonic()
        reconnects = self._nc.stats["reconnects"]
        try:
            while not stop.is_set():
                if self._nc.stats["reconnects"] != reconnects:
                    # Deliveries in flight during the outage are lost to us; re-sync rather than wait for ack_wait.
                    raise _Reset("reconnected to NATS")
                if time.monotonic() >= next_lag:
                    next_lag = time.monotonic() + self.settings.lag_interval
                    await self._log_lag()
                try:
                    msgs = await prefetch.next()
                except TimeoutError:  # nats-py raises both its own TimeoutError and asyncio's: no messages
                    # Nothing waiting: this shard is caught up, the moment a new build may take over.
                    await self._maybe_take_over()
                    continue
                # Fetch the next batch while PostgreSQL works on this one: the batch's time in the database is
                # mostly waiting, and nats-py's per-message work fills it. Batches are still applied in order.
                prefetch.ahead()
                await self.process(msgs)
                if len(msgs) < self.settings.batch_size:  # a short batch: the backlog is drained
                    await self._maybe_take_over()
        finally:
            if await prefetch.cancel():
                # Whatever it received stays unacked: the next sync sees that and restarts from the checkpoint.
                self._in_sync = False

    async def _maybe_take_over(self) -> None:
        assert self._pg is not None
        await self.take_over.check(self._pg, self._checkpoint, self.log)

    async def _log_lag(self) -> None:
        assert self._js is not None and self._pg is not None
        try:
            lag = await measure_lag(self._js, self._pg, self.naming, self.projection, self.shard)
        except Exception as exc:  # the lag report must never stop the projection
            self.log.warning("engine.lag.failed", error=f"{type(exc).__name__}: {exc}")
            return
        self.log.info("engine.lag", **msgspec.structs.asdict(lag))
        if self.stall.stalled(lag):
            # Events wait past the checkpoint and nothing moved for a whole interval: the consumer is stuck
            # (e.g. max_ack_pending filled by deliveries we never received).
            raise _Reset(f"no progress past {lag.checkpoint} for {self.settings.lag_interval}s")

    async def process(self, msgs: Sequence[Msg]) -> None:
        """Apply one fetched batch: decode, fold, dead-letter poison, checkpoint, commit, ack."""
        assert self._pg is not None
        if not msgs:
            return
        events: list[StoredEvent] = []
        poison: list[Poison] = []
        for msg in msgs:
            meta = msg.metadata
            if meta.sequence.consumer != self._next_consumer_seq:
                # Something was delivered that we never saw (a reconnect, an expired pull): don't guess.
                raise _Reset(f"consumer sequence {meta.sequence.consumer}, expected {self._next_consumer_seq}")
            self._next_consumer_seq += 1
            seq = meta.sequence.stream
            if seq <= self._checkpoint or not self.selects(msg.subject):
                continue
            try:
                events.append(StoredEvent(sequence=seq, subject=msg.subject, envelope=decode(msg.data)))
            except DecodeError as exc:
                poison.append(Poison(seq, msg.subject, msg.data, f"decode: {exc.reason}"))
        events = await self._opened(events)
        last = msgs[-1].metadata.sequence.stream
        if last > self._checkpoint:
            pg = self._pg
            try:
                async with pg.transaction():
                    try:
                        await self.projection.apply_batch(pg, events)
                    except Exception as exc:
                        if not is_poison(exc):
                            raise
                        raise _BatchFailed(f"{type(exc).__name__}: {exc}") from exc
                    await self._finish(pg, poison, last)
            except _BatchFailed as failed:
                self.log.warning("engine.batch.failed", error=str(failed), size=len(events))
                # The original bytes go to the dead letters, not a re-encoding of what we understood of them.
                data = {m.metadata.sequence.stream: m.data for m in msgs}
                await self._slow_path(pg, events, poison, last, data)
            self._checkpoint = last
            self.applied += len(events)
            self.batches += 1
        # Ack after the commit: a crash in between replays the batch, which the checkpoint then skips. Wait
        # for the server to take the ack: an ack still in flight when the next pull arrives counts against
        # max_ack_pending, and the pull then lingers half-filled until it expires.
        await msgs[-1].ack_sync(timeout=self.nats_settings.publish_timeout)

    async def _opened(self, events: list[StoredEvent]) -> list[StoredEvent]:
        """For a projection that reads personal data: the batch with its sealed fields opened (an erased lead's
        read ``[erased]``, in any rebuild too)."""
        kinds: tuple[type[Any], ...] = getattr(self.projection, "reads_personal", ())
        if not events or not kinds:
            return events
        assert self._js is not None
        if self._vault is None or self._vault_js is not self._js:
            self._vault, self._vault_js = Vault(self._js, self.naming, cached_keys=_CACHED_KEYS), self._js
        opened = await self._vault.unsealed([e.envelope for e in events], kinds)
        # Keys are cached across batches: a lead's erasure, folded in log order, drops its key. Every event
        # sealed with it came before the erasure (none is accepted after), so the cache opens nothing new.
        for event in events:
            if isinstance(event.envelope.data, LeadErased):
                self._vault.forget(event.envelope.aggregate_id)
        return [msgspec.structs.replace(e, envelope=o) for e, o in zip(events, opened, strict=True)]

    async def _slow_path(
        self,
        pg: psycopg.AsyncConnection[Any],
        events: Sequence[StoredEvent],
        poison: list[Poison],
        last: int,
        data: Mapping[int, bytes],
    ) -> None:
        """Retry the batch event by event, each in a savepoint; what still fails is poison."""
        poison = list(poison)
        async with pg.transaction():
            for event in events:
                try:
                    async with pg.transaction():
                        await self.projection.apply_batch(pg, [event])
                except Exception as exc:
                    if not is_poison(exc):
                        raise
                    poison.append(
                        Poison(
                            event.sequence, event.subject, data[event.sequence], f"apply: {type(exc).__name__}: {exc}"
                        )
                    )
            await self._finish(pg, poison, last)

    async def _finish(self, pg: psycopg.AsyncConnection[Any], poison: list[Poison], last: int) -> None:
        """Inside the batch's transaction: dead-letter poison (before the commit that skips it), move the checkpoint."""
        if poison:
            assert self._js is not None
            await self.dead_letters.publish(self._js, sorted(poison, key=lambda p: p.sequence), self.log)
        if not await move_checkpoint(pg, self.checkpoint_key, self.shard.key, self._checkpoint, last):
            # Someone else moved this checkpoint: we no longer own the partition's position.
            raise _Reset("checkpoint moved under us")
