"""A shard's durable pull consumer: kept exactly at the checkpoint, and read one batch ahead."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import NotFoundError


class ShardConsumer:
    """The durable consumer of one shard: bound when it stands exactly at the checkpoint, else made anew there."""

    def __init__(self, stream: str, durable: str, filter_subject: str, batch_size: int, ack_wait: float) -> None:
        self.stream = stream
        self.durable = durable
        self.filter = filter_subject
        self.batch_size = batch_size
        self.ack_wait = ack_wait

    def config(self, checkpoint: int) -> ConsumerConfig:
        return ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=checkpoint + 1,
            ack_policy=AckPolicy.ALL,
            ack_wait=self.ack_wait,
            # Two batches: the one being applied and the one prefetched meanwhile.
            max_ack_pending=2 * self.batch_size,
            max_deliver=-1,
            filter_subject=self.filter,
        )

    def agrees(self, info: ConsumerInfo, checkpoint: int) -> bool:
        config = info.config
        filters = config.filter_subjects or ([config.filter_subject] if config.filter_subject else [])
        delivered = info.delivered.stream_seq if info.delivered else None
        acked = info.ack_floor.stream_seq if info.ack_floor else None
        return (
            filters == [self.filter]
            and config.ack_policy == AckPolicy.ALL
            and config.max_ack_pending == 2 * self.batch_size
            and not info.num_ack_pending
            and not info.num_redelivered
            and delivered == acked == checkpoint
        )

    async def sync(
        self, js: JetStreamContext, checkpoint: int, log: Any
    ) -> tuple[JetStreamContext.PullSubscription, int]:
        """A subscription standing at ``checkpoint``, and the consumer sequence of its next delivery."""
        try:
            info: ConsumerInfo | None = await js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            info = None
        if info is not None and self.agrees(info, checkpoint):
            next_consumer_seq = (info.delivered.consumer_seq or 0 if info.delivered else 0) + 1
            log.info("engine.consumer.bound", checkpoint=checkpoint)
        else:
            if info is not None:
                with contextlib.suppress(NotFoundError):
                    await js.delete_consumer(self.stream, self.durable)
            await js.add_consumer(self.stream, config=self.config(checkpoint))
            next_consumer_seq = 1
            log.info("engine.consumer.created", start_sequence=checkpoint + 1, replaced=info is not None)
        return await js.pull_subscribe_bind(durable=self.durable, stream=self.stream), next_consumer_seq


class Prefetch:
    """Fetches the next batch while the current one is applied; batches still come in order."""

    def __init__(self, sub: JetStreamContext.PullSubscription, batch_size: int, timeout: float) -> None:
        self.sub = sub
        self.batch_size = batch_size
        self.timeout = timeout
        self._ahead: asyncio.Task[list[Msg]] | None = None

    async def next(self) -> list[Msg]:
        """The batch fetched ahead, or a fresh fetch; raises TimeoutError when nothing waits."""
        fetching = self._ahead or asyncio.create_task(self.sub.fetch(self.batch_size, timeout=self.timeout))
        self._ahead = None
        return await fetching

    def ahead(self) -> None:
        self._ahead = asyncio.create_task(self.sub.fetch(self.batch_size, timeout=self.timeout))

    async def cancel(self) -> bool:
        """Drop a fetch ahead; True if there was one (whatever it received stays unacked)."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return False
        ahead.cancel()
        with contextlib.suppress(BaseException):
            await ahead
        return True
