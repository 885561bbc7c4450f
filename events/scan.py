"""A whole-stream read in log order for the auditor's tools: every message with its chain link."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events.chain import CHAIN_HEADER, ChainedMessage


async def scan(
    js: JetStreamContext, stream: str, subjects: str = ">", batch: int = 1000, start: int = 1
) -> AsyncIterator[ChainedMessage]:
    """Every message of ``stream`` (matching ``subjects``) from sequence ``start`` on, in log order, through an
    ephemeral consumer."""
    info = await js.stream_info(stream)
    last = int(info.state.last_seq)
    if not info.state.messages or start > last:
        return
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.ALL if start <= 1 else DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start if start > 1 else None,
        ack_policy=AckPolicy.NONE,
        filter_subject=subjects,
        inactive_threshold=60.0,
        max_waiting=1,
    )
    sub = await js.pull_subscribe(subjects, stream=stream, config=config)
    try:
        seen = 0
        while seen < last:
            try:
                msgs = await sub.fetch(batch, timeout=2.0)
            except TimeoutError:
                return  # nothing more matches the filter up to the end of the stream
            for msg in msgs:
                meta = msg.metadata
                seen = meta.sequence.stream
                link = (msg.headers or {}).get(CHAIN_HEADER)
                yield ChainedMessage(seen, msg.subject, msg.data, link)
                if meta.num_pending == 0:
                    return
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
