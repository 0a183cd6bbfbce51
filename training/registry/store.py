"""Reading and writing the training tables through the Warehouse interface.

retrain_runs, model_registry, eval_results, gate_verdicts, gate_baselines (schemas/ddl/0004).
Every write is an insert into a ReplacingMergeTree keyed by a natural key, so retries are safe.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson

from kernel.lifecycle import ModelState, TransitionError, check_transition
from kernel.warehouse import Warehouse
from kernel.warehouse import sql_str as q
from schemas.timefmt import ch_time


def now_ms() -> str:
    return ch_time()


def now_us() -> str:
    return ch_time(digits=6)


def dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


def parse_ch_ts(value: str) -> float:
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc).timestamp()


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


def transition(store: Warehouse, task: str, version: str, to: ModelState | str, **fields) -> dict:
    """Move a registered version to lifecycle state ``to`` (checked by
    ``kernel.lifecycle.check_transition``; TransitionError names what is allowed), updating
    ``fields`` in the same row. The one function every command and stage changes a status with.
    Returns the updated row."""
    row = get_model(store, task, version)
    if row is None:
        raise TransitionError(f"no model version {version!r} for task {task!r} "
                              f"(see `flywheel models --task {task}`)")
    state = row["status"] if row["status"] == str(to) else check_transition(row["status"], to, version)
    row.update(fields)
    row["status"] = str(state)
    register(store, row)
    return row


def list_models(store: Warehouse, task: str) -> list[dict]:
    return store.rows(f"SELECT task, version, seq, status, student, base_model, gold_version, overall_score, "
                      f"baseline_score, dataset_hash, adapter_uri, request_id, created_at "
                      f"FROM model_registry FINAL WHERE task = {q(task)} ORDER BY seq, version")


def incumbent(store: Warehouse, task: str, exclude: str | None = None) -> dict | None:
    """The model that serves now: the latest serving version, else the latest approved, else the
    latest retired.
    ``exclude`` leaves one version out (a candidate is never its own baseline)."""
    other = f" AND version != {q(exclude)}" if exclude else ""
    # "promoted" was written by flywheel < 0.2; a retired version is the baseline of last resort
    # (re-gating the serving version compares it with the one it replaced)
    for status in (ModelState.SERVING, "promoted", ModelState.APPROVED, ModelState.RETIRED):
        rows = store.rows(f"SELECT * FROM model_registry FINAL WHERE task = {q(task)} AND status = {q(str(status))}"
                          f"{other} ORDER BY seq DESC, created_at DESC LIMIT 1")
        if rows:
            return rows[0]
    return None


def ensure_tables(store: Warehouse) -> int:
    """Create the training tables (schemas/ddl/0004_training.sql) if missing. Only this file:
    re-running the curation DDL would briefly drop a live materialised view."""
    from kernel.warehouse.migrate import ddl_files, statements

    n = 0
    for name, text in ddl_files():
        if name.endswith("_training.sql"):
            for stmt in statements(text, {}):
                store.command(stmt)
                n += 1
    return n


def registry_store(c):
    """The warehouse of a CLI context with the training tables in place (the caller closes it)."""
    from kernel.warehouse import open_warehouse

    store = open_warehouse(c.settings)
    ensure_tables(store)
    return store
