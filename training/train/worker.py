"""The training worker: consumes retrain.requests in a consumer group, one job at a time.

For each request: decide from its retrain_runs row (done -> skip; a live worker holds it ->
wait; never run or its worker died -> run), snapshot the dataset, train the student, register
the version, gate it on the gold set, publish the verdict on model.events, mark the run done,
and only then commit the offset. A worker killed mid-run leaves the offset uncommitted and a
run row whose heartbeat stops: the next worker of the group gets the request again and, once
the lease has expired, runs it again under a new model version.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from kernel import metrics
from kernel.lifecycle import ModelState
from kernel.tasks import TaskConfig, TaskConfigError
from kernel.warehouse import Warehouse, WarehouseError
from kernel.warehouse.remote import OwnerUnreachable
from schemas import messages
from schemas.events import InvalidMessage, load_message
from schemas.topics import DEAD_LETTERS, MODEL_EVENTS, RETRAIN_REQUESTS
from training.gate.config import gate_config
from training.gate.gating import GateError, event_for, gate, gold_for
from training.registry import store as st
from training.registry.artifacts import base_model_identity, reserve_version, seal, write_json, write_model_card
from training.students.config import StudentSetupError, artifacts_root, train_config
from training.students.load import load_predictor
from training.train import runs
from training.train.dataset import DatasetError, snapshot

log = logging.getLogger(__name__)

# Errors that no retry can fix: the run is recorded as failed and the request committed.
PERMANENT = (DatasetError, GateError, TaskConfigError, StudentSetupError, ValueError, FileNotFoundError)


@dataclass
class WorkerOptions:
    group: str = "flywheel-training"
    # None: from Settings (FLYWHEEL_TRAIN_LEASE_SECONDS, _HEARTBEAT_SECONDS, _SESSION_TIMEOUT_MS)
    lease_seconds: float | None = None
    heartbeat_seconds: float | None = None
    session_timeout_ms: int | None = None
    max_requests: int | None = None    # stop after handling this many messages (tests, batch runs)
    idle_exit_seconds: float | None = None  # stop when nothing arrives for this long
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")


@dataclass
class Outcome:
    request_id: str
    task: str
    status: str                       # done, failed, skipped
    model_version: str = ""
    verdict: Any = None
    message: str = ""
    timings: dict = field(default_factory=dict)
    learning: str = ""                # "learned: ..." or "did not learn: <evidence>" (learning.py)


class Heartbeat:
    """Keeps the run row's updated_at fresh (with progress) while the job runs."""

    def __init__(self, store: Warehouse, row: dict, every: float) -> None:
        self.store, self.row, self.every = store, row, every
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="run-heartbeat", daemon=True)

    def update(self, **fields) -> None:
        with self._lock:
            self.row.update(fields)

    def progress(self, step: int, total: int, info: dict) -> None:
        self.update(step=step, total_steps=total, progress=step / max(1, total),
                    message=f"training epoch {info.get('epoch')} loss {info.get('loss', 0):.4f}")

    def beat(self) -> None:
        with self._lock:
            row = dict(self.row)
        try:
            runs.put_run(self.store, row)
        except Exception as exc:  # a missed beat is not fatal; the lease is several beats long
            log.warning("heartbeat failed: %s", exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.beat()

    def __enter__(self):
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def fit_record(fit) -> dict:
    """The FitResult as lineage (without the per-example validation answers)."""
    return {k: v for k, v in fit.__dict__.items() if k != "val_predictions"}


def _now() -> str:
    return st.now_ms()


def process_request(store: Warehouse, settings, tasks: dict[str, TaskConfig], req: dict, attempt: int,
                    opts: WorkerOptions) -> Outcome:
    """Run one request end to end except publishing and the final 'done' (the caller does both)."""
    t0 = time.monotonic()
    task = tasks.get(req["task"])
    if task is None:
        raise TaskConfigError(settings.tasks_dir, "name", f"no task {req['task']!r} is declared; add "
                                                          f"{req['task']}.toml under {settings.tasks_dir}")
    tcfg, gcfg = train_config(task), gate_config(task)
    seq = st.max_seq(store, task.name) + 1
    version, seq, vdir = reserve_version(artifacts_root(settings), task.name, seq,
                                         f"{req['request_id']}|{attempt}|{opts.worker_id}")
    run = {"task": task.name, "request_id": req["request_id"], "status": "running", "attempt": attempt,
           "worker": opts.worker_id, "model_version": version, "model_seq": seq, "progress": 0.0, "step": 0,
           "total_steps": 0, "message": "snapshot", "watermark": req["watermark"],
           "gold_version": int(req["gold_version"]), "dataset_manifest": "", "timings": "{}",
           "requested_at": req["requested_at"], "started_at": _now(), "finished_at": None}
    timings: dict[str, float] = {}
    with Heartbeat(store, run, opts.heartbeat_seconds) as hb:
        gold_version, gold_rows = gold_for(store, task.name, int(req["gold_version"]) or None)
        t = time.monotonic()
        ds = snapshot(store, task.name, req["watermark"], gold_version, tcfg.validation_share)
        timings["snapshot_s"] = time.monotonic() - t
        hb.update(dataset_manifest=st.dumps(ds.manifest), message="training", gold_version=gold_version)
        hb.beat()
        log.info("run %s: %s, %d train / %d validation examples (dataset %s), gold v%d",
                 req["request_id"], version, len(ds.train), len(ds.validation),
                 ds.manifest["content_hash"][:12], gold_version)
        adapter = vdir / "adapter"
        t = time.monotonic()
        from training.students.select import train_student

        sel = train_student(tcfg, task.labels, ds.train, ds.validation, adapter, hb.progress)
        fit = sel.fit
        timings["train_s"] = time.monotonic() - t
        hp = sel.cfg.to_dict()
        selection = sel.to_dict()
        write_json(vdir / "train_config.json", {"student": sel.kind, "hyperparameters": hp, "selection": selection,
                                                "fit": fit_record(fit), "request": req, "attempt": attempt})
        write_json(vdir / "dataset_manifest.json", ds.manifest)
        ident = base_model_identity(sel.cfg.base_model)
        write_json(vdir / "base_model.json", ident)
        if not sel.learning.learned:
            log.warning("run %s: %s %s", req["request_id"], version, sel.learning.summary())
        row = {"task": task.name, "version": version, "seq": seq, "request_id": req["request_id"],
               "student": sel.kind, "base_model": sel.cfg.base_model, "base_model_identity": st.dumps(ident),
               "adapter_uri": str(adapter.resolve()), "dataset_manifest": st.dumps(ds.manifest),
               "dataset_hash": ds.manifest["content_hash"], "hyperparameters": st.dumps(hp),
               "gold_version": gold_version,
               "eval_results": st.dumps({"fit": fit_record(fit), "selection": selection}),
               "overall_score": None, "baseline_score": None, "status": ModelState.REGISTERED.value, "created_at": _now()}
        st.register(store, row)

        hb.update(message="gating", progress=1.0)
        t = time.monotonic()
        predict = load_predictor(row)
        t_inf = time.monotonic()
        preds = predict([r["input"] for r in gold_rows])
        timings["gold_inference_s"] = time.monotonic() - t_inf
        timings["gold_examples_per_s"] = len(gold_rows) / max(1e-9, timings["gold_inference_s"])
        answers = {r["id"]: p for r, p in zip(gold_rows, preds)}
        with open(vdir / f"gold_predictions_v{gold_version}.jsonl", "wb") as f:
            for r, p in zip(gold_rows, preds):
                f.write(orjson.dumps({"id": r["id"], "output": p}) + b"\n")
        verdict = gate(store, task, gcfg, version, answers, gold_version, gold_rows, load_predictor,
                       registered=True)
        timings["gate_s"] = time.monotonic() - t
        write_json(vdir / "eval.json", {"verdict": verdict.to_dict(), "fit": fit_record(fit),
                                        "learning": sel.learning.to_dict(), "selection": selection})
        write_model_card(vdir, version, task, hp, ident, ds.manifest, verdict)
        seal(vdir)
        timings["total_s"] = time.monotonic() - t0
        hb.update(timings=st.dumps(timings), message="publishing verdict")
    log.info("run %s: %s %s (overall %.4f vs baseline %.4f)", req["request_id"], version,
             "APPROVED" if verdict.approved else "REJECTED", verdict.overall, verdict.baseline_overall)
    for r in verdict.reasons:
        log.info("  reason: %s", r)
    return Outcome(req["request_id"], task.name, "done", version, verdict, "", timings, sel.learning.summary())


def run_message(approved: bool, reasons, learning: str = "") -> str:
    """The run's one-line verdict. "did not learn: <evidence>" (the answers carry no information
    about the input) leads the message, ahead of the gate's verdict; a student that learned but
    was rejected reads "rejected: <reasons> (learned: ...)"."""
    msg = "approved" if approved else "rejected: " + "; ".join(reasons)
    if learning.startswith("did not learn"):
        return f"{learning} -- {msg}"
    return f"{msg} ({learning})" if learning else msg


def finish_run(store: Warehouse, req: dict, outcome: Outcome, attempt: int, opts: WorkerOptions) -> None:
    row = runs.get_run(store, req["task"], req["request_id"]) or {}
    msg = outcome.message
    if outcome.verdict is not None:
        msg = run_message(outcome.verdict.approved, outcome.verdict.reasons, outcome.learning)
    row.update({"task": req["task"], "request_id": req["request_id"], "status": outcome.status,
                "attempt": attempt, "worker": opts.worker_id, "message": msg[:4000],
                "model_version": outcome.model_version or row.get("model_version", ""),
                "timings": st.dumps(outcome.timings) if outcome.timings else row.get("timings", "{}"),
                "watermark": req.get("watermark", ""), "requested_at": req.get("requested_at", ""),
                "finished_at": _now()})
    row.setdefault("started_at", _now())
    row["progress"] = 1.0 if outcome.status == "done" else row.get("progress", 0.0)
    runs.put_run(store, row)


def decode_request(value: bytes) -> dict:
    """A retrain request, decoded and validated by the shared path (InvalidMessage if not)."""
    return load_message(value, RETRAIN_REQUESTS.schema)


async def run_worker(settings, tasks: dict[str, TaskConfig], store: Warehouse,
                     opts: WorkerOptions | None = None) -> list[Outcome]:
    """Consume retrain.requests until stopped (or max_requests / idle_exit_seconds)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    opts = replace(opts or WorkerOptions())
    if opts.lease_seconds is None:
        opts.lease_seconds = settings.train_lease_seconds
    if opts.heartbeat_seconds is None:
        opts.heartbeat_seconds = settings.train_heartbeat_seconds
    if opts.session_timeout_ms is None:
        opts.session_timeout_ms = settings.train_session_timeout_ms
    consumer = AIOKafkaConsumer(
        RETRAIN_REQUESTS.name, **settings.kafka.aiokafka_kwargs(), group_id=opts.group,
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=1,
        session_timeout_ms=opts.session_timeout_ms, heartbeat_interval_ms=max(500, opts.session_timeout_ms // 4),
        max_poll_interval_ms=24 * 3600 * 1000, fetch_max_wait_ms=settings.fetch_max_wait_ms)
    producer = AIOKafkaProducer(**settings.kafka.aiokafka_kwargs(), acks="all")
    ops = metrics.start_operations(settings, what="training worker", port=settings.train_metrics_port,
                                   group=opts.group, topics=[RETRAIN_REQUESTS.name])
    await producer.start()
    await consumer.start()
    outcomes: list[Outcome] = []
    handled = 0
    last_seen = time.monotonic()
    log.info("training worker %s consuming %s in group %s", opts.worker_id, RETRAIN_REQUESTS.name, opts.group)
    try:
        while opts.max_requests is None or handled < opts.max_requests:
            batch = await consumer.getmany(timeout_ms=500, max_records=1)
            msgs = [m for ms in batch.values() for m in ms]
            if not msgs:
                if opts.idle_exit_seconds is not None and time.monotonic() - last_seen > opts.idle_exit_seconds:
                    break
                continue
            last_seen = time.monotonic()
            msg = msgs[0]
            tp = TopicPartition(msg.topic, msg.partition)
            metrics.EVENTS_IN.labels("train", msg.topic).inc()
            outcome = await _handle(msg, settings, tasks, store, opts, producer)
            _count(outcome)
            if outcome is None:  # transient: read the same message again
                consumer.seek(tp, msg.offset)
                await asyncio.sleep(2.0)
                continue
            await consumer.commit({tp: msg.offset + 1})
            outcomes.append(outcome)
            handled += 1
            last_seen = time.monotonic()
    finally:
        await consumer.stop()
        await producer.stop()
        ops.stop()
    return outcomes


def _count(outcome: Outcome | None) -> None:
    """flywheel_training_runs (and the run's time and verdict) for one handled request."""
    if outcome is None:
        metrics.TRAINING_RUNS.labels("", "retried").inc()
        return
    metrics.TRAINING_RUNS.labels(outcome.task, outcome.status).inc()
    metrics.EVENTS_OUT.labels("train", outcome.status).inc()
    if outcome.status == "done" and "total_s" in outcome.timings:
        metrics.TRAINING_RUN_SECONDS.labels(outcome.task).observe(outcome.timings["total_s"])
    if outcome.verdict is not None:
        metrics.GATE_VERDICTS.labels(outcome.task, "approved" if outcome.verdict.approved else "rejected").inc()


async def _handle(msg, settings, tasks, store, opts, producer) -> Outcome | None:
    try:
        req = decode_request(msg.value)
    except InvalidMessage as exc:
        log.warning("retrain request at offset %d is invalid (%s): sent to %s", msg.offset, exc, DEAD_LETTERS.name)
        key, value = messages.dead_letter(source_topic=msg.topic, partition=msg.partition, offset=msg.offset,
                                          reason=str(exc), original=msg.value)
        await producer.send_and_wait(DEAD_LETTERS.name, value, key=key)
        metrics.DEAD_LETTERS.labels(msg.topic).inc()
        return Outcome("", "", "skipped", message=f"invalid: {exc}")
    rid, task = req["request_id"], req["task"]
    try:
        while True:
            existing = runs.get_run(store, task, rid)
            decision = runs.decide_run(runs.run_state(existing), time.time(), opts.lease_seconds, opts.worker_id)
            if decision != "wait":
                break
            log.info("request %s is being run by %s; waiting for it to finish or its lease to expire",
                     rid, existing["worker"])
            await asyncio.sleep(min(5.0, opts.lease_seconds / 4))
        if decision == "skip":
            log.info("request %s already %s (%s): skipped", rid, existing["status"], existing["model_version"])
            return Outcome(rid, task, "skipped", existing["model_version"], message=existing["status"])
        attempt = int(existing["attempt"]) + 1 if existing else 1
        if existing and existing.get("model_version") and st.get_model(store, task, existing["model_version"]):
            # the dead attempt registered its version before dying: it will never be gated
            st.transition(store, task, existing["model_version"], ModelState.ABANDONED)
        log.info("request %s (%s, watermark %s): attempt %d", rid, task, req["watermark"], attempt)
        try:
            outcome = await asyncio.to_thread(process_request, store, settings, tasks, req, attempt, opts)
        except PERMANENT as exc:
            log.error("request %s failed: %s", rid, exc)
            outcome = Outcome(rid, task, "failed", message=f"{type(exc).__name__}: {exc}")
        if outcome.verdict is not None:
            ev = event_for(outcome.verdict, rid)
            await producer.send_and_wait(MODEL_EVENTS.name, orjson.dumps(ev), key=task.encode())
        finish_run(store, req, outcome, attempt, opts)
        return outcome
    except (WarehouseError, OwnerUnreachable, OSError, ConnectionError) as exc:
        metrics.STORE_ERRORS.labels("training run", metrics.fault_kind(exc)).inc()
        log.warning("request %s: transient error (%s); it will be retried", rid, exc)
        return None
