"""What the console reads from ClickHouse: one function per panel, each a few bounded queries
(no query scans more than one task's rows of one table; lists are LIMITed)."""

from __future__ import annotations

from typing import Any, Iterable

import orjson

from kernel.gold import version_sources
from kernel.warehouse import Warehouse
from kernel.warehouse import sql_str as q
from streams.review.store import status_counts

ITEM_COLUMNS = ("item_id, kind, slice, input, answers, confidence, reason, toString(arrived_at) AS arrived, "
                "n_submitted, n_discarded, open_reason, agreement")


def next_pending(store: Warehouse, task: str, reviewer: str, after: tuple[str, str] | None,
                 skip: Iterable[str] = ()) -> dict | None:
    """The oldest pending item after the cursor (arrived_at, item_id) that this reviewer has not
    given a verdict on, leaving out ``skip`` (verdicts sent but not yet applied)."""
    cond = [f"task = {q(task)}", "status = 'pending'"]
    if after:
        cond.append(f"(arrived_at, item_id) > (toDateTime64({q(after[0])}, 3, 'UTC'), {q(after[1])})")
    skip = list(skip)
    if skip:
        cond.append(f"item_id NOT IN ({', '.join(q(s) for s in skip)})")
    cond.append(f"item_id NOT IN (SELECT item_id FROM review_verdicts WHERE task = {q(task)} AND reviewer = {q(reviewer)})")
    return _first(store.rows(f"SELECT {ITEM_COLUMNS} FROM review_items FINAL WHERE {' AND '.join(cond)} "
                             "ORDER BY arrived_at, item_id LIMIT 1"), "answers")


def _first(rows: list[dict], json_column: str) -> dict | None:
    """The first row with its JSON text ``json_column`` decoded, or None when there is none."""
    if not rows:
        return None
    r = rows[0]
    r[json_column] = orjson.loads(r[json_column] or "{}")
    return r


def review_counts(store: Warehouse, task: str) -> dict[str, int]:
    return {"pending": 0, "submitted": 0, "discarded": 0, **status_counts(store, task)}


def has_table(store: Warehouse, name: str) -> bool:
    return bool(store.scalar(f"SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = {q(name)}"))


def curation_rates(store: Warehouse, task: str, windows: int = 120) -> list[dict]:
    return store.rows(
        "SELECT toString(window_start) AS window_start, total, off_schema_rate, low_conf_rate, kept_rate FROM "
        f"(SELECT * FROM curation_window_rates WHERE task = {q(task)} ORDER BY window_start DESC LIMIT {windows}) "
        "ORDER BY window_start")


def drift(store: Warehouse, task: str, windows: int = 120) -> tuple[dict[str, list[dict]], list[dict]]:
    rows = store.rows(
        "SELECT metric, toString(window_start) AS window_start, value, reference, alerts FROM "
        f"(SELECT metric, window_start, argMax(value, updated_at) AS value, argMax(reference, updated_at) AS reference, "
        f"max(alerts) AS alerts FROM drift_windows WHERE task = {q(task)} GROUP BY metric, window_start "
        f"ORDER BY window_start DESC LIMIT {windows * 8}) ORDER BY metric, window_start")
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["metric"], []).append(r)
    alerts = store.rows(f"SELECT metric, toString(detected_at) AS detected_at, value, reference, severity "
                        f"FROM drift_alerts FINAL WHERE task = {q(task)} ORDER BY detected_at DESC LIMIT 20")
    return by, alerts


def serving(store: Warehouse, task: str) -> dict[str, Any]:
    """The serving version: the latest model_config decision when promotion has recorded one,
    else the incumbent of the registry (latest serving/promoted, else approved)."""
    if has_table(store, "model_config"):
        rows = store.rows(f"SELECT revision, action, serving_version AS version, previous_version AS previous, "
                          f"canary_version AS canary, decided_by, toString(decided_at) AS decided_at "
                          f"FROM model_config FINAL WHERE task = {q(task)} ORDER BY revision DESC LIMIT 1")
        if rows and rows[0]["version"]:
            return {"from": "model_config", "row": rows[0]}
    rows = store.rows(f"SELECT version, status, toString(updated_at) AS updated_at, overall_score, gold_version "
                      f"FROM model_registry FINAL WHERE task = {q(task)} AND status IN ('serving', 'promoted', 'approved') "
                      "ORDER BY status IN ('serving', 'promoted') DESC, seq DESC LIMIT 1")
    return {"from": "model_registry", "row": rows[0] if rows else None}


def promotion_history(store: Warehouse, task: str, limit: int = 15) -> list[dict] | None:
    """The model_config history when the table exists (None otherwise), newest first."""
    if not has_table(store, "model_config"):
        return None
    return store.rows(f"SELECT revision, action, serving_version, previous_version, canary_version, canary_share, "
                      f"decided_by, reason, toString(decided_at) AS decided_at FROM model_config FINAL "
                      f"WHERE task = {q(task)} ORDER BY revision DESC LIMIT {int(limit)}")


def models(store: Warehouse, task: str, limit: int = 10) -> list[dict]:
    return store.rows(f"SELECT version, status, gold_version, overall_score, baseline_score, "
                      f"toString(created_at) AS created_at FROM model_registry FINAL WHERE task = {q(task)} "
                      f"ORDER BY seq DESC LIMIT {int(limit)}")


def last_gate(store: Warehouse, task: str) -> dict | None:
    rows = store.rows(f"SELECT model_version, gold_version, approved, overall, baseline_overall, baseline, verdict, "
                      f"toString(decided_at) AS decided_at FROM gate_verdicts FINAL WHERE task = {q(task)} "
                      "ORDER BY decided_at DESC LIMIT 1")
    return _first(rows, "verdict")


def gold(store: Warehouse, task: str) -> list[dict]:
    return version_sources(store, task)


def routing(store: Warehouse, task: str, limit: int = 8) -> tuple[dict[str, int], list[dict]]:
    counts = {f"{r['destination']} {r['outcome']}": int(r["n"]) for r in store.rows(
        f"SELECT destination, outcome, count() AS n FROM review_routing FINAL WHERE task = {q(task)} "
        "GROUP BY destination, outcome")}
    refused = store.rows(f"SELECT item_id, reason FROM review_routing FINAL WHERE task = {q(task)} "
                         f"AND outcome = 'refused' ORDER BY decided_at DESC LIMIT {int(limit)}")
    return counts, refused


def item_by_id(store: Warehouse, task: str, item_id: str) -> dict | None:
    return _first(store.rows(f"SELECT {ITEM_COLUMNS} FROM review_items FINAL WHERE task = {q(task)} "
                             f"AND item_id = {q(item_id)}"), "answers")
