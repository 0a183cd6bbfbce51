"""The stream worker: a Faust app whose agents stay thin.

The curate agent reads ``teacher.logs`` as raw bytes in batches (``take_events``), hands them
to the pure ``Curator``, sends the few events that need a topic (dead letters, review items),
writes the batch to ClickHouse, and only then lets Faust ack the batch. Offsets are therefore
committed only after the outcome is durable; a crash replays at most the uncommitted batch,
and replays are idempotent (ReplacingMergeTree on the event id, content-derived insert tokens,
and the dedupe index recognising an id it already kept).

Other stages plug in through ``STAGE_MODULES``: each exposes ``install(ctx: WorkerContext)``
and may add agents, timers and ``ctx.curate_hooks`` (called with each durable batch).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Awaitable, Callable

import faust

from schemas.topics import DEAD_LETTERS, REVIEW_QUEUE, TEACHER_LOGS
from .curate import OUTCOMES, Curator, Decision, Message
from .gold import current_version, load_gold
from .retry import retry_forever
from .rows import batch_token, curation_event_row, dead_letter, example_row, review_item
from .settings import Settings
from .tasks import TaskConfig
from .warehouse import Warehouse, sql_str

log = logging.getLogger("flywheel.worker")

STAGE_MODULES: tuple[str, ...] = ("streams.drift.stage",)
CurateHook = Callable[[list[Decision]], Awaitable[None] | None]


@dataclass
class WorkerContext:
    settings: Settings
    tasks: dict[str, TaskConfig]
    store: Warehouse
    app: faust.App
    curate_hooks: list[CurateHook] = field(default_factory=list)


def tune_fetch_wait(ms: int) -> None:
    """Faust's aiokafka driver hard-codes fetch_max_wait_ms=1500; PERF-NOTES.md measured that,
    with Faust's idle internal topic co-subscribed, fetches for a busy topic queue behind that
    wait. Lower it on every worker consumer Faust creates. (bench/curate_bench.py compares it
    with the stock value; on the embedded Tansu build the two were within noise.)"""
    from faust.transport.drivers import aiokafka as drv

    original = getattr(drv.AIOKafkaConsumerThread._create_worker_consumer, "__wrapped__",
                       drv.AIOKafkaConsumerThread._create_worker_consumer)

    def create(self, transport):
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = ms
        return consumer

    create.__wrapped__ = original
    drv.AIOKafkaConsumerThread._create_worker_consumer = create


def load_state(curator: Curator, store: Warehouse, capacity: int) -> dict[str, int]:
    """Rebuild dedupe memory from the warehouse: the most recent kept examples, in arrival
    order, and the current gold set of each task. Returns the gold versions loaded."""
    gold_versions = {}
    for name in curator.tasks:
        rows = store.rows(
            "SELECT id, input FROM (SELECT id, input, curated_at, source_partition, source_offset "
            f"FROM examples FINAL WHERE task = {sql_str(name)} "
            f"ORDER BY curated_at DESC, source_partition DESC, source_offset DESC LIMIT {int(capacity)}) "
            "ORDER BY curated_at, source_partition, source_offset")
        curator.load_pool(name, [r["id"] for r in rows], [r["input"] for r in rows])
        gold_versions[name] = refresh_gold(curator, store, name, -1)
        log.info("task %s: %d kept examples and gold v%d loaded for dedupe", name, len(rows),
                 gold_versions[name])
    return gold_versions


def refresh_gold(curator: Curator, store: Warehouse, task: str, loaded: int) -> int:
    version = current_version(store, task)
    if version != loaded:
        _, rows = load_gold(store, task, version)
        curator.load_gold(task, [r["id"] for r in rows], [r["input"] for r in rows])
    return version


class CuratePipeline:
    """What the curate agent does with one batch. Never raises: failures are retried (the
    warehouse, the producer) or become dead letters (a message the curator cannot handle)."""

    def __init__(self, ctx: WorkerContext, curator: Curator, dead_topic, review_topic) -> None:
        self.ctx = ctx
        self.curator = curator
        self.dead_topic = dead_topic
        self.review_topic = review_topic
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.events = 0
        self.started = time.monotonic()
        self._inflight: asyncio.Future | None = None

    def decide(self, messages: list[Message]) -> list[Decision]:
        try:
            return self.curator.curate(messages)
        except Exception:  # a bug must not lose the batch: isolate the message that trips it
            log.exception("curating a batch failed; retrying message by message")
            out = []
            for m in messages:
                try:
                    out.extend(self.curator.curate([m]))
                except Exception as exc:
                    out.append(Decision("invalid", f"internal error: {exc!r}; "
                                                   f"{traceback.format_exc(limit=3)}", m))
            return out

    async def process(self, messages: list[Message]) -> None:
        """Decide a batch and make it durable (no pipelining; for callers without a stream)."""
        await self._finish(self.decide(messages), None, ())

    async def submit(self, stream, events) -> None:
        """Decide a batch now and write it in the background while the next batch is read.

        Each event gets an extra reference, so the ack that take_events gives it when this
        returns does not release it; the background writer acks it once the batch is durable.
        At most one batch is being written while the next is decided (bounded buffering: a
        slow store stalls consumption, it never grows memory)."""
        messages = []
        for ev in events:
            ev.message.incref()
            m = ev.message
            messages.append(Message(m.value, m.partition, m.offset, m.topic, m.timestamp))
        decisions = self.decide(messages)
        await self.drain()
        self._inflight = asyncio.ensure_future(self._finish(decisions, stream, events))

    async def drain(self) -> None:
        """Wait for the batch being written. Its failure stays here: its events are not acked,
        so their offsets are never committed and a restart replays them."""
        if self._inflight is not None:
            try:
                await self._inflight
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("writing a curated batch failed; it will be replayed after a restart")
            finally:
                self._inflight = None

    async def _finish(self, decisions: list[Decision], stream, events) -> None:
        now = datetime.now(timezone.utc)
        await self._retry("publish dead letters and review items", self._send, decisions, now)
        await self._retry("write the batch to ClickHouse", self._write, decisions, now)
        for ev in events:  # durable: now the offsets may be committed
            await stream.ack(ev)
        for d in decisions:
            self.counts[d.outcome] += 1
        self.events += len(decisions)
        for hook in self.ctx.curate_hooks:
            try:
                result = hook(decisions)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("a curate hook failed; the batch itself is stored")

    async def _send(self, decisions: list[Decision], now: datetime) -> None:
        sent = False
        for d in decisions:
            if d.outcome == "invalid":
                key, value = dead_letter(d, now)
                await self.dead_topic.send(key=key, value=value, force=True)
                sent = True
            elif d.outcome == "low_conf":
                key, value = review_item(d)
                await self.review_topic.send(key=key, value=value, force=True)
                sent = True
        if sent:
            await self.ctx.app.producer.flush()

    async def _write(self, decisions: list[Decision], now: datetime) -> None:
        curated_at = now
        events = [curation_event_row(d, curated_at) for d in decisions]
        # replayed kept events are written again too: the index may know an id whose first
        # write never landed (a batch that failed half way); ReplacingMergeTree collapses them
        kept = [example_row(d, curated_at) for d in decisions if d.outcome == "kept"]
        store = self.ctx.store
        if kept:
            await asyncio.to_thread(store.insert, "examples", kept,
                                    batch_token([r["id"] for r in kept], "examples"))
        await asyncio.to_thread(store.insert, "curation_events", events,
                                batch_token([r["id"] for r in events], "curation_events"))

    async def _retry(self, what: str, fn, *args) -> None:
        await retry_forever(what, fn, *args, log=log)

    def status_line(self) -> str:
        rate = self.events / max(time.monotonic() - self.started, 1e-9)
        parts = ", ".join(f"{k} {v}" for k, v in self.counts.items() if v)
        return f"curated {self.events} events ({rate:.0f}/s): {parts or 'none yet'}"


def build_app(settings: Settings, tasks: dict[str, TaskConfig], store: Warehouse,
              stage_modules: tuple[str, ...] = STAGE_MODULES) -> tuple[faust.App, WorkerContext]:
    tune_fetch_wait(settings.fetch_max_wait_ms)
    app = faust.App(
        settings.consumer_group,
        broker=";".join(f"kafka://{h}" for h in settings.kafka.servers.split(",")),
        broker_credentials=_credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        topic_replication_factor=1,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        # Tansu answers a group join after half the session timeout: Faust's 60 s default
        # meant a 30 s start-up. Inserts run off the event loop, so 10 s is ample.
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=max(settings.session_timeout_seconds / 5, 0.5),
        producer_acks=-1,
        logging_config=None,
    )
    ctx = WorkerContext(settings, tasks, store, app)
    curator = Curator(tasks, settings.dedupe_capacity)
    teacher = app.topic(TEACHER_LOGS.name, value_serializer="raw", key_serializer="raw")
    dead = app.topic(DEAD_LETTERS.name, value_serializer="raw", key_serializer="raw")
    review = app.topic(REVIEW_QUEUE.name, value_serializer="raw", key_serializer="raw")
    pipeline = CuratePipeline(ctx, curator, dead, review)
    ctx.pipeline = pipeline  # type: ignore[attr-defined]
    gold_loaded: dict[str, int] = {}

    gold_loaded.update(load_state(curator, store, settings.dedupe_capacity))

    @app.agent(teacher, concurrency=1, name="curate")
    async def curate(stream):
        async for events in stream.take_events(settings.sink_batch_rows, settings.sink_flush_seconds):
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

    for name in stage_modules:
        importlib.import_module(name).install(ctx)
    return app, ctx


def _credentials(settings: Settings):
    k = settings.kafka
    if not k.sasl_mechanism:
        return None
    return faust.SASLCredentials(username=k.sasl_username, password=k.sasl_password.get() if k.sasl_password else None,
                                 mechanism=k.sasl_mechanism)
