"""Installs the drift stage into the stream worker (see streams.worker.app.WORKER_STAGES).

* a curate hook: each durable curate batch feeds off_schema_rate, low_conf_rate,
  confidence_mean and label_mix;
* an agent on ``live.requests`` (raw bytes, batches, concurrency 1): input_length, oov_rate,
  agreement_rate; invalid messages become dead letters;
* an agent on ``canary.pairs`` (raw bytes, batches, concurrency 1): canary_disagreement_rate,
  canary_error_rate and canary_wrong_rate of the version in canary against the serving one (the
  same detectors, alert gate, windows and alerts as every other metric; a new pair of versions
  restarts them); invalid pairs become dead letters;
* after every batch: new alerts go to ``drift.alerts`` and ``drift_alerts``, then the state of
  the tasks the batch touched is snapshotted to ``drift_state`` -- all before the batch's
  offsets are committed;
* timers: drift_windows flushed every 2 s, the trigger evaluated every 5 s (and at once after
  an alert on a trigger metric), the training reference re-read every ``reference_refresh``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone

from kernel import metrics
from kernel.retry import retry_forever
from kernel.stage import WorkerContext
from kernel.tasks import TaskConfig, label_of
from schemas import messages
from schemas.events import InvalidMessage, SchemaError, load_message, parse_ts
from schemas.timefmt import ch_time
from schemas.topics import CANARY_PAIRS, DEAD_LETTERS, DRIFT_ALERTS, LIVE_REQUESTS, RETRAIN_REQUESTS
from streams.curate.policy import Decision, Message
from streams.curate.rows import dead_letter
from streams.drift import store as dstore
from streams.drift.config import CURATION_METRICS, StageConfig, stage_config
from streams.drift.state import TaskDrift, canary_values
from streams.trigger import store as tstore

log = logging.getLogger("flywheel.drift")

WINDOW_FLUSH_S = 2.0
TRIGGER_EVERY_S = 5.0


LiveInvalid = InvalidMessage


def decode_live(raw: bytes | None, tasks) -> dict:
    """Bytes to a validated live request of a known task, or LiveInvalid naming the problem."""
    obj = load_message(raw, "live.requests.schema.json")
    try:
        ts = parse_ts(obj["ts"])
    except SchemaError as exc:
        raise LiveInvalid(f"schema: {exc}") from None
    if obj["task"] not in tasks:
        raise LiveInvalid(f"unknown task {obj['task']!r}; declared tasks: {sorted(tasks)}")
    obj["_ts"] = ts.timestamp()
    return obj


def decode_pair(raw: bytes | None, tasks) -> tuple[str, tuple]:
    """Bytes to (task, observe_canary_batch item) for a valid canary.pairs message of a known
    task, or LiveInvalid naming the problem."""
    obj = load_message(raw, CANARY_PAIRS.schema)
    try:
        ts = parse_ts(obj["ts"]).timestamp()
    except SchemaError as exc:
        raise LiveInvalid(f"schema: {exc}") from None
    if obj["task"] not in tasks:
        raise LiveInvalid(f"unknown task {obj['task']!r}; declared tasks: {sorted(tasks)}")
    disagree, error, wrong = canary_values(obj)
    return obj["task"], (f"{obj['candidate_version']}:{obj['request_id']}", obj["incumbent_version"],
                         obj["candidate_version"], disagree, error, wrong, ts)


def decode_live_item(raw: bytes | None, tasks) -> tuple[str, tuple]:
    """Bytes to (task, observe_live_batch item) for a valid live request, or LiveInvalid."""
    obj = decode_live(raw, tasks)
    teacher = obj.get("teacher_output")
    agree = None if teacher is None else label_of(obj["output"]) == label_of(teacher)
    return obj["task"], (obj["id"], obj["input"], agree, obj["_ts"])


class DriftStage:
    """The drift stage's state and its batch operations; the Faust glue is in ``install``."""

    def __init__(self, tasks: dict[str, TaskConfig], config: StageConfig, store, window_seconds: int = 60,
                 seen_capacity: int = 32768) -> None:
        self.tasks = tasks
        self.config = config
        self.store = store
        self.window_seconds = window_seconds
        self.seen_capacity = seen_capacity
        self.drift: dict[str, TaskDrift] = {}
        self.versions: dict[str, int] = {}
        self.reference_at: dict[str, float] = {}
        self.reference_n: dict[str, int] = {}
        self.publish_alert = None     # async (alert dict) -> None
        self.publish_request = None   # async (request dict) -> None
        self.publish_dead = None      # async (key, value) -> None
        self.lock = asyncio.Lock()
        self.notes: list[tuple[int, str]] = []  # start-up messages, logged once logging is set up
        self.events = 0
        self.busy_s = 0.0

    # -- start-up ------------------------------------------------------------------------------
    def restore(self) -> None:
        """Detector state from drift_state (the newest snapshot of each task), else fresh."""
        for name, task in self.tasks.items():
            cfg = self.config.drift[name]
            td = None
            snap = dstore.load_state(self.store, name)
            if snap is not None:
                version, blob = snap
                self.versions[name] = version
                try:
                    td = TaskDrift.loads(blob, task, cfg, self.window_seconds, self.seen_capacity)
                    self.notes.append((logging.INFO, f"drift {name}: detector state v{version} restored ("
                                       + ", ".join(f"{m} n={mon.n}" for m, mon in td.monitors.items()) + ")"))
                    for note in td.restore_notes:
                        self.notes.append((logging.WARNING, f"drift {name}: state snapshot v{version}: {note}"))
                except Exception as exc:  # unreadable (another format, a river upgrade): start fresh, say so
                    self.notes.append((logging.WARNING, f"drift {name}: state snapshot v{version} unusable "
                                                        f"({exc}); starting fresh detectors (they re-learn the "
                                                        "stream: alerts need their warm-up again)"))
            else:
                self.notes.append((logging.INFO, f"drift {name}: no saved detector state; fresh detectors"))
            self.drift[name] = td or TaskDrift(task, cfg, self.window_seconds, self.seen_capacity)
            self.refresh_reference(name)

    def refresh_reference(self, name: str) -> None:
        cfg = self.config.drift[name]
        labels, vocab, n = dstore.reference(self.store, name, cfg.reference_max_examples)
        min_ref = cfg.metrics["oov_rate"].min_reference
        self.drift[name].set_reference(labels, vocab if n >= min_ref else None)
        self.reference_at[name] = time.monotonic()
        if self.reference_n.get(name) != n:  # said once per change, not at every re-read
            self.notes.append((logging.INFO, f"drift {name}: training reference {n} examples, "
                                             f"{len(labels)} labels, {len(vocab)} tokens"))
        self.reference_n[name] = n

    # -- batches ---------------------------------------------------------------------------------
    async def on_curated(self, decisions: list[Decision]) -> None:
        """The curate hook: called with every durable batch, before its offsets are committed."""
        t0 = time.perf_counter()
        now = datetime.now(timezone.utc)
        per_task: dict[str, list] = {}
        for d in decisions:
            log_ = d.log
            if log_ is None or log_.task not in self.drift or d.outcome == "conflict":
                continue  # a conflict is a re-sent id: the first content was observed already
            per_task.setdefault(log_.task, []).append(
                (log_.id, d.outcome, log_.confidence, d.label, log_.ts.timestamp()))
        alerts: list[dict] = []
        for name, items in per_task.items():
            alerts += self.drift[name].observe_curation_batch(items, now)
        touched = set(per_task)
        self.events += len(decisions)
        self.busy_s += time.perf_counter() - t0
        await self.commit(touched, alerts)

    async def process_live(self, messages: list[Message]) -> None:
        """A batch of live.requests: input_length, oov_rate and agreement_rate."""
        await self._process(messages, LIVE_REQUESTS.name, decode_live_item, TaskDrift.observe_live_batch)

    async def process_pairs(self, messages: list[Message]) -> None:
        """A batch of canary.pairs: the canary metrics of the serving/candidate versions."""
        await self._process(messages, CANARY_PAIRS.name, decode_pair, TaskDrift.observe_canary_batch)

    async def _process(self, messages: list[Message], topic: str, decode, observe) -> None:
        """Decode each message to (task, item) (an invalid one becomes a dead letter), feed each
        task's items to ``observe(TaskDrift, items, now)``, then publish the dead letters and commit."""
        t0 = time.perf_counter()
        now = datetime.now(timezone.utc)
        dead: list[tuple[bytes, bytes]] = []
        per_task: dict[str, list] = {}
        for m in messages:
            try:
                task, item = decode(m.value, self.tasks)
            except LiveInvalid as exc:
                dead.append(dead_letter(Decision("invalid", str(exc), m), now))
                continue
            per_task.setdefault(task, []).append(item)
        alerts: list[dict] = []
        for name, items in per_task.items():
            alerts += observe(self.drift[name], items, now)
        self.events += len(messages)
        self.busy_s += time.perf_counter() - t0
        if dead and self.publish_dead is not None:
            await _retry(f"publish {topic} dead letters", self._send_dead, dead)
            metrics.DEAD_LETTERS.labels(topic).inc(len(dead))
        await self.commit(set(per_task), alerts)

    async def _send_dead(self, dead):
        for key, value in dead:
            await self.publish_dead(key, value)

    async def commit(self, touched: set[str], alerts: list[dict]) -> None:
        """Publish and store unpublished alerts, snapshot the touched tasks, trigger on alerts."""
        async with self.lock:
            if any(self.drift[t].unpublished for t in self.drift):
                try:
                    await self.publish_alerts()
                except Exception as exc:  # kept in the state: retried with the next batch or timer
                    log.error("could not publish drift alerts (%s); they stay pending", exc)
            if touched:
                await _retry("snapshot drift state", self.snapshot, touched)
        for a in alerts:
            log.warning("drift alert %s: %s %s moved %.4g -> %.4g (%s, %s)", a["alert_id"], a["task"],
                        a["metric"], a["reference"], a["value"], a["detector"], a["severity"])
        trigger_tasks = {a["task"] for a in alerts if a["metric"] in self.config.trigger[a["task"]].metrics}
        for t in trigger_tasks:
            try:
                await self.evaluate_trigger(t)
            except tstore.NoExamples:
                pass
            except Exception:
                log.exception("evaluating the retrain trigger of %s failed; the timer retries", t)

    async def publish_alerts(self) -> None:
        for td in self.drift.values():
            if not td.unpublished:
                continue
            batch = list(td.unpublished)
            if self.publish_alert is not None:
                for a in batch:
                    await self.publish_alert(a)
            await asyncio.to_thread(dstore.insert_alerts, self.store, batch)
            td.unpublished = td.unpublished[len(batch):]
            for a in batch:
                metrics.DRIFT_ALERTS.labels(a["task"], a["metric"]).inc()

    async def snapshot(self, names) -> None:
        states = []
        for name in sorted(names):
            version = max(self.versions.get(name, 0) + 1, time.time_ns())
            self.versions[name] = version
            states.append((name, version, self.drift[name].dumps()))
        await asyncio.to_thread(dstore.save_states, self.store, states)

    # -- timers ------------------------------------------------------------------------------------
    async def flush_windows(self) -> int:
        now = ch_time(datetime.now(timezone.utc)) + "000"
        rows = []
        for td in self.drift.values():
            rows += td.window_rows(now)
        if rows:
            try:
                await asyncio.to_thread(dstore.insert_windows, self.store, rows)
            except Exception:
                for td in self.drift.values():  # write them again next time
                    for wins in td.windows.values():
                        for acc in wins.values():
                            acc.dirty = True
                raise
        return len(rows)

    async def evaluate_trigger(self, name: str, now: datetime | None = None) -> dict | None:
        cfg = self.config.trigger[name]
        if not cfg.enabled:
            return None
        now = now or datetime.now(timezone.utc)
        msg = await asyncio.to_thread(tstore.plan_request, self.store, cfg, name, now)
        if msg is None:
            return None

        async def call(fn, *args):
            return await asyncio.to_thread(fn, self.store, *args)

        async def publish(m):
            if self.publish_request is not None:
                await self.publish_request(m)

        if await tstore.issue_request(call, publish, msg):
            log.warning("retrain requested for %s: %s (%s), watermark %s, gold v%d", name, msg["request_id"],
                        msg["reason"].get("detail", msg["reason"]["kind"]), msg["watermark"], msg["gold_version"])
            return msg
        return None

    async def maybe_refresh_references(self) -> None:
        for name in self.drift:
            cfg = self.config.drift[name]
            small = self.reference_n.get(name, 0) < cfg.metrics["oov_rate"].min_reference  # retry every tick
            if small or time.monotonic() - self.reference_at.get(name, 0) >= cfg.reference_refresh_s:
                await asyncio.to_thread(self.refresh_reference, name)

    def log_notes(self) -> None:
        """Log the start-up and reference notes gathered so far, once."""
        for level, note in self.notes:
            log.log(level, note)
        self.notes.clear()

    def status_line(self) -> str:
        per = self.busy_s / self.events * 1e6 if self.events else 0.0
        alerts = sum(m.alerts for td in self.drift.values() for m in td.monitors.values())
        return f"drift: {self.events} events ({per:.1f} µs/event in detectors), {alerts} alerts since start"


async def _retry(what: str, fn, *args) -> None:
    await retry_forever(what, fn, *args, log=log)


def install(ctx: WorkerContext) -> None:
    """Add the drift agents, timers and curate hook to ctx.app."""
    config = stage_config(ctx.tasks)  # a bad [drift]/[trigger] fails start-up, naming the key
    stage = DriftStage(ctx.tasks, config, ctx.store, ctx.settings.window_seconds)
    stage.restore()
    ctx.services["drift"] = stage
    app = ctx.app
    alerts_topic = app.topic(DRIFT_ALERTS.name, value_serializer="raw", key_serializer="raw")
    requests_topic = app.topic(RETRAIN_REQUESTS.name, value_serializer="raw", key_serializer="raw")
    dead_topic = app.topic(DEAD_LETTERS.name, value_serializer="raw", key_serializer="raw")

    async def publish_alert(a: dict) -> None:
        await alerts_topic.send(key=a["task"].encode(), value=messages.encode(DRIFT_ALERTS, a), force=True)
        await app.producer.flush()

    async def publish_request(m: dict) -> None:
        await requests_topic.send(key=m["task"].encode(), value=messages.encode(RETRAIN_REQUESTS, m), force=True)
        await app.producer.flush()

    async def publish_dead(key: bytes, value: bytes) -> None:
        await dead_topic.send(key=key, value=value, force=True)
        await app.producer.flush()

    stage.publish_alert, stage.publish_request, stage.publish_dead = publish_alert, publish_request, publish_dead
    ctx.curate_hooks.append(stage.on_curated)
    settings = ctx.settings

    def batch_agent(topic: str, name: str, process) -> None:
        """An agent on ``topic`` (raw bytes, batches, concurrency 1) feeding ``process``; nothing escapes it."""
        async def agent(stream):
            async for events in stream.take_events(settings.sink_batch_rows, settings.sink_flush_seconds):
                metrics.EVENTS_IN.labels("drift", topic).inc(len(events))
                try:
                    await process([Message(m.value, m.partition, m.offset, m.topic, m.timestamp)
                                   for m in (ev.message for ev in events)])
                except Exception:  # never escape: Faust would ack and skip silently
                    log.exception("drift: a %s batch failed; its statistics may be incomplete", topic)

        app.agent(app.topic(topic, value_serializer="raw", key_serializer="raw"), concurrency=1, name=name)(agent)

    batch_agent(LIVE_REQUESTS.name, "drift-live", stage.process_live)
    batch_agent(CANARY_PAIRS.name, "drift-canary-pairs", stage.process_pairs)

    @app.timer(interval=WINDOW_FLUSH_S)
    async def drift_windows() -> None:
        try:
            await stage.flush_windows()
            async with stage.lock:
                if any(td.unpublished for td in stage.drift.values()):
                    await stage.publish_alerts()
        except Exception as exc:
            log.warning("drift: flushing windows or alerts failed (%s); retried in %.0fs", exc, WINDOW_FLUSH_S)

    @app.timer(interval=TRIGGER_EVERY_S)
    async def drift_trigger() -> None:
        for name in stage.drift:
            try:
                await stage.evaluate_trigger(name)
            except tstore.NoExamples:
                pass
            except Exception as exc:
                log.warning("drift: the retrain trigger of %s failed (%s); retried in %.0fs", name, exc,
                            TRIGGER_EVERY_S)
        try:
            await stage.maybe_refresh_references()
        except Exception as exc:
            log.warning("drift: refreshing the training reference failed (%s)", exc)

    @app.task
    async def drift_started() -> None:
        stage.log_notes()

    @app.timer(interval=30.0)
    async def drift_report() -> None:
        stage.log_notes()
        log.info(stage.status_line())


__all__ = ["install", "DriftStage", "decode_live", "decode_pair", "CURATION_METRICS"]
