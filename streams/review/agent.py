"""The review agent: reads ``review.queue`` and ``review.verdicts`` as raw bytes, in batches,
with concurrency 1, and hands them to the ReviewService (decoding and validation happen there,
inside a try: nothing escapes the agent). It acks a batch only once its rows are durable.

Both topics feed one agent so that an item and a verdict on it are handled in order of arrival
within a batch (items first), and no two batches race on an item's state.
"""

from __future__ import annotations

import asyncio
import logging

from kernel.stage import WorkerContext
from schemas.topics import DEAD_LETTERS, REVIEW_QUEUE, REVIEW_VERDICTS, TEACHER_LOGS
from streams.review.service import Record, ReviewService

log = logging.getLogger("flywheel.review")


def install(ctx: WorkerContext) -> None:
    """Add the review agent (and its growth timer) to ctx.app; the service is ctx.services["review"]."""
    app, settings = ctx.app, ctx.settings
    service = ReviewService(ctx.tasks, ctx.store)
    ctx.services["review"] = service
    source = app.topic(REVIEW_QUEUE.name, REVIEW_VERDICTS.name, value_serializer="raw", key_serializer="raw")
    dead = app.topic(DEAD_LETTERS.name, value_serializer="raw", key_serializer="raw")
    teacher = app.topic(TEACHER_LOGS.name, value_serializer="raw", key_serializer="raw")
    growing: dict[str, asyncio.Task] = {}

    async def send_dead(key: bytes, value: bytes) -> None:
        await dead.send(key=key, value=value, force=True)

    async def send_pool(key: bytes, value: bytes) -> None:
        await teacher.send(key=key, value=value, force=True)

    async def flush() -> None:
        await app.producer.flush()

    def maybe_grow(task: str) -> None:
        if task in growing and not growing[task].done():
            return
        growing[task] = asyncio.ensure_future(asyncio.to_thread(_grow_if_due, service, task))

    @app.agent(source, concurrency=1, name="review")
    async def review(stream):
        async for events in stream.take_events(min(settings.sink_batch_rows, 2000), settings.sink_flush_seconds):
            try:
                records = [Record(e.message.value, e.message.topic, e.message.partition, e.message.offset,
                                  e.message.timestamp) for e in events]
                # items before verdicts: a verdict on an item of the same batch finds it
                records.sort(key=lambda r: r.topic != REVIEW_QUEUE.name)
                plan = await service.handle(records, send_dead, send_pool, flush)
                for task in plan.grow_tasks:
                    maybe_grow(task)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let an exception escape (Faust would ack and skip the batch)
                log.exception("the review agent failed on a batch; it is not acknowledged and is replayed "
                              "after a restart")
                await asyncio.sleep(1.0)

    @app.timer(interval=60.0)
    async def grow_timer() -> None:  # catches growth that a restart interrupted
        for name in ctx.tasks:
            maybe_grow(name)

    @app.timer(interval=30.0)
    async def report() -> None:
        log.info(service.status_line())


def _grow_if_due(service: ReviewService, task: str) -> None:
    from streams.review import store as rs
    from streams.review.grow import grow

    cfg = service.configs[task]
    try:
        if cfg.grow_after <= 0:
            return
        if rs.count_unrouted_gold(service.store, task, "canary_disagreement") < cfg.grow_after:
            return
        result = grow(service.store, service.tasks[task])
        log.info("gold set of %s grown automatically: %s", task, result.summary())
    except Exception:
        log.exception("automatic gold growth of %s failed; it is retried within a minute", task)
