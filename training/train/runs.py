"""Training runs: one row per retrain request in ``retrain_runs`` (ReplacingMergeTree), so a
request delivered twice runs once and a killed worker's run is retried by another."""

from __future__ import annotations

from dataclasses import dataclass

from kernel.warehouse import Warehouse
from kernel.warehouse import sql_str as q
from training.registry.store import now_us, parse_ch_ts


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
    return RunState(row["status"], int(row["attempt"]), row["worker"], parse_ch_ts(row["updated_at"]), row["model_version"])


def put_run(store: Warehouse, row: dict) -> None:
    store.insert("retrain_runs", [{**row, "updated_at": now_us()}])


def list_runs(store: Warehouse, task: str | None = None) -> list[dict]:
    where = f"WHERE task = {q(task)}" if task else ""
    return store.rows(f"SELECT * FROM retrain_runs FINAL {where} ORDER BY started_at")


