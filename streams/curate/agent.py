"""The curate agent: reads ``teacher.logs`` as raw bytes in batches and hands them to the
pipeline (decoding and validation happen there, inside a try: nothing escapes the agent)."""

from __future__ import annotations

import logging

from kernel.stage import WorkerContext
from schemas.topics import DEAD_LETTERS, REVIEW_QUEUE, TEACHER_LOGS
from streams.curate.pipeline import CuratePipeline, load_state, refresh_gold
from streams.curate.policy import Curator

log = logging.getLogger("flywheel.curate")


def install(ctx: WorkerContext) -> None:
    """Add the curate agent and its timers to ctx.app; the pipeline is ctx.services["curate"]."""
    app, settings, tasks, store = ctx.app, ctx.settings, ctx.tasks, ctx.store
    curator = Curator(tasks, settings.dedupe_capacity)
    teacher = app.topic(TEACHER_LOGS.name, value_serializer="raw", key_serializer="raw")
    dead = app.topic(DEAD_LETTERS.name, value_serializer="raw", key_serializer="raw")
    review = app.topic(REVIEW_QUEUE.name, value_serializer="raw", key_serializer="raw")
    pipeline = CuratePipeline(ctx, curator, dead, review)
    ctx.services["curate"] = pipeline
    gold_loaded: dict[str, int] = dict(load_state(curator, store, settings.dedupe_capacity))

    @app.agent(teacher, concurrency=1, name="curate")
    async def curate(stream):
        # noack_take: nothing is acked until the pipeline has made the batch durable
        async for events in stream.noack_take(settings.sink_batch_rows, settings.sink_flush_seconds):
            await pipeline.submit(stream, events)

    @app.timer(interval=10.0)
    async def refresh_gold_sets() -> None:
        for name in tasks:
            try:
                gold_loaded[name] = refresh_gold(curator, store, name, gold_loaded.get(name, -1))
            except Exception as exc:  # a timer must not die: try again in 10 s
                log.warning("could not refresh the gold set of %s: %s", name, exc)

    @app.timer(interval=30.0)
    async def report() -> None:
        log.info(pipeline.status_line())
