"""Reading and writing the training tables through the Warehouse interface.

retrain_runs, model_registry, eval_results, gate_verdicts, gate_baselines (schemas/ddl/0004).
Every write is an insert into a ReplacingMergeTree keyed by a natural key, so retries are safe.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from streams.warehouse import Warehouse

from streams.warehouse import sql_str as q
from .gate import OVERALL, Scores, Verdict


def now_ms() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def now_us() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc).timestamp()


# ---------------------------------------------------------------- runs

@dataclass(frozen=True)
class RunState:
    status: str
    attempt: int
    worker: str
    updated_at: float  # epoch seconds of the last heartbeat
    model_version: str


def decide_run(existing: RunState | None, now: float, lease_seconds: float, worker: str = "") -> str:
    """What a worker does with a delivered request, given its run row.

    "start": never run; "skip": already done or failed (an outcome is recorded: commit);
    "retry": a run whose worker stopped heartbeating (killed); "wait": another live worker
    holds it (re-check later, do not commit). A running row of this very worker (an attempt
    that raised a transient error) is retried at once.
    """
    if existing is None:
        return "start"
    if existing.status in ("done", "failed"):
        return "skip"
    if existing.worker == worker or now - existing.updated_at > lease_seconds:
        return "retry"
    return "wait"


def get_run(store: Warehouse, task: str, request_id: str) -> dict | None:
    rows = store.rows(f"SELECT * FROM retrain_runs FINAL WHERE task = {q(task)} AND request_id = {q(request_id)}")
    return rows[0] if rows else None


def run_state(row: dict | None) -> RunState | None:
    if row is None:
        return None
    return RunState(row["status"], int(row["attempt"]), row["worker"], _ts(row["updated_at"]), row["model_version"])


def put_run(store: Warehouse, row: dict) -> None:
    store.insert("retrain_runs", [{**row, "updated_at": now_us()}])


def list_runs(store: Warehouse, task: str | None = None) -> list[dict]:
    where = f"WHERE task = {q(task)}" if task else ""
    return store.rows(f"SELECT * FROM retrain_runs FINAL {where} ORDER BY started_at")


# ---------------------------------------------------------------- registry

def max_seq(store: Warehouse, task: str) -> int:
    a = store.scalar(f"SELECT max(seq) FROM model_registry WHERE task = {q(task)}") or 0
    b = store.scalar(f"SELECT max(model_seq) FROM retrain_runs WHERE task = {q(task)}") or 0
    return max(int(a), int(b))


def register(store: Warehouse, row: dict) -> None:
    store.insert("model_registry", [{**row, "updated_at": now_us()}])


def get_model(store: Warehouse, task: str, version: str) -> dict | None:
    rows = store.rows(f"SELECT * FROM model_registry FINAL WHERE task = {q(task)} AND version = {q(version)}")
    return rows[0] if rows else None


def set_model_status(store: Warehouse, task: str, version: str, status: str, **fields) -> None:
    row = get_model(store, task, version)
    if row is None:
        return
    row.update(fields)
    row["status"] = status
    register(store, row)


def list_models(store: Warehouse, task: str) -> list[dict]:
    return store.rows(f"SELECT task, version, seq, status, student, base_model, gold_version, overall_score, "
                      f"baseline_score, dataset_hash, adapter_uri, request_id, created_at "
                      f"FROM model_registry FINAL WHERE task = {q(task)} ORDER BY seq, version")


def incumbent(store: Warehouse, task: str, exclude: str | None = None) -> dict | None:
    """The model that serves now: the latest promoted version, else the latest approved.
    ``exclude`` leaves one version out (a candidate is never its own baseline)."""
    other = f" AND version != {q(exclude)}" if exclude else ""
    for status in ("promoted", "approved"):
        rows = store.rows(f"SELECT * FROM model_registry FINAL WHERE task = {q(task)} AND status = {q(status)}"
                          f"{other} ORDER BY seq DESC, created_at DESC LIMIT 1")
        if rows:
            return rows[0]
    return None


# ---------------------------------------------------------------- gate

def pinned_baseline(store: Warehouse, task: str, gold_version: int,
                    name: str | None = None) -> tuple[str, Scores, str] | None:
    """The baseline pinned first for this gold version (and this baseline name, when given:
    "teacher" or "incumbent:<version>", so a new incumbent is scored and pinned in its turn)."""
    which = f" AND baseline = {q(name)}" if name is not None else ""
    rows = store.rows(f"SELECT baseline, scores, note FROM gate_baselines WHERE task = {q(task)} "
                      f"AND gold_version = {int(gold_version)}{which} ORDER BY pinned_at LIMIT 1")
    if not rows:
        return None
    return rows[0]["baseline"], Scores.from_dict(orjson.loads(rows[0]["scores"])), rows[0]["note"]


def pin_baseline(store: Warehouse, task: str, gold_version: int, name: str, scores: Scores,
                 note: str = "") -> tuple[str, Scores, str]:
    """Store the baseline once; whoever pinned first wins (returns the pinned one)."""
    existing = pinned_baseline(store, task, gold_version, name)
    if existing is not None:
        return existing
    store.insert("gate_baselines", [{
        "task": task, "gold_version": gold_version, "baseline": name, "overall": scores.overall,
        "n": scores.n, "scores": dumps(scores.to_dict()), "note": note, "pinned_at": now_us()}])
    return pinned_baseline(store, task, gold_version, name)  # type: ignore[return-value]


def record_verdict(store: Warehouse, v: Verdict) -> None:
    at = now_us()
    rows = [{"task": v.task, "model_version": v.model_version, "gold_version": v.gold_version,
             "slice": OVERALL, "n": v.n, "score": v.overall, "baseline_score": v.baseline_overall,
             "baseline": v.baseline, "status": "ok" if v.overall + 1e-9 >= v.baseline_overall else "regressed",
             "evaluated_at": at}]
    rows += [{"task": v.task, "model_version": v.model_version, "gold_version": v.gold_version,
              "slice": s.slice, "n": s.n, "score": s.score, "baseline_score": s.baseline,
              "baseline": v.baseline, "status": s.status, "evaluated_at": at} for s in v.slices]
    store.insert("eval_results", rows)
    store.insert("gate_verdicts", [{
        "task": v.task, "model_version": v.model_version, "gold_version": v.gold_version,
        "approved": int(v.approved), "overall": v.overall, "baseline_overall": v.baseline_overall,
        "baseline": v.baseline, "reasons": list(v.reasons), "warnings": list(v.warnings),
        "verdict": dumps(v.to_dict()), "decided_at": at}])


def wait_until(pred, timeout: float, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = pred()
        if out:
            return out
        time.sleep(every)
    return None


def ensure_tables(store: Warehouse) -> int:
    """Create the training tables (schemas/ddl/0004_training.sql) if missing. Only this file:
    re-running the curation DDL would briefly drop a live materialised view."""
    from streams.warehouse.migrate import ddl_files, statements

    n = 0
    for name, text in ddl_files():
        if name.endswith("_training.sql"):
            for stmt in statements(text, {}):
                store.command(stmt)
                n += 1
    return n
