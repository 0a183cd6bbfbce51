"""The canary tables (schemas/ddl/0011_canary.sql) through the Warehouse interface."""

from __future__ import annotations

from typing import Any

import orjson

from kernel.warehouse import Warehouse
from kernel.warehouse import sql_str as q
from schemas.timefmt import ch_time

from .judge import SliceCounts, Verdict


def ensure_tables(store: Warehouse) -> None:
    """Create the canary tables and view if missing (only this DDL file)."""
    from kernel.warehouse.migrate import ddl_files, statements

    for name, text in ddl_files():
        if name.endswith("_canary.sql"):
            for stmt in statements(text, {}):
                store.command(stmt)


def _text(x: Any) -> str | None:
    if x is None:
        return None
    return x if isinstance(x, str) else orjson.dumps(x, option=orjson.OPT_SORT_KEYS).decode()


def pair_row(p: dict, paired: int | None) -> dict:
    return {"task": p["task"], "candidate_version": p["candidate_version"], "request_id": p["request_id"],
            "incumbent_version": p["incumbent_version"], "slice": p["slice"], "input": p["input"],
            "incumbent_answer": _text(p["incumbent_answer"]) or "", "candidate_answer": _text(p["candidate_answer"]),
            "teacher_answer": _text(p.get("teacher_answer")),
            "agree": None if p["agree"] is None else int(p["agree"]), "paired": paired,
            "error": p.get("error", ""), "incumbent_latency_ms": p.get("incumbent_latency_ms", 0.0),
            "candidate_latency_ms": p.get("candidate_latency_ms", 0.0), "ts": ch_time()}


def insert_pairs(store: Warehouse, rows: list[dict]) -> None:
    if rows:
        store.insert("canary_pairs", rows)


def counts(store: Warehouse, task: str, candidate: str, incumbent: str | None = None) -> dict[str, SliceCounts]:
    """Per slice, the pairs of ``candidate`` (against ``incumbent`` if given), each request once."""
    inc = f" AND incumbent_version = {q(incumbent)}" if incumbent else ""
    rows = store.rows(
        f"SELECT slice, count() AS pairs, countIf(agree = 0 OR error != '') AS disagree, "
        f"countIf(error != '') AS errors, countIf(paired IS NOT NULL) AS teacher, "
        f"countIf(paired = 1) AS cand_better, countIf(paired = -1) AS cand_worse "
        f"FROM canary_pairs FINAL WHERE task = {q(task)} AND candidate_version = {q(candidate)}{inc} GROUP BY slice")
    return {r["slice"]: SliceCounts(int(r["pairs"]), int(r["disagree"]), int(r["errors"]), int(r["teacher"]),
                                    int(r["cand_better"]), int(r["cand_worse"])) for r in rows}


def started_at(store: Warehouse, task: str, candidate: str) -> float | None:
    """When ``candidate`` last entered canary for ``task`` (Unix seconds, model_config), or None."""
    rows = store.rows(f"SELECT toUnixTimestamp64Milli(max(decided_at)) AS t FROM model_config FINAL WHERE "
                      f"task = {q(task)} AND action = 'canary_start' AND canary_version = {q(candidate)}")
    t = rows[0]["t"] if rows else None
    return float(t) / 1000 if t else None


def record_decision(store: Warehouse, task: str, candidate: str, incumbent: str, v: Verdict, action: str) -> None:
    store.insert("canary_decisions", [{
        "task": task, "candidate_version": candidate, "incumbent_version": incumbent, "outcome": v.outcome,
        "reason": v.reason, "pairs": v.pairs, "evidence": orjson.dumps(v.evidence).decode(), "action": action,
        "decided_at": ch_time(digits=6)}])


def decisions(store: Warehouse, task: str, limit: int = 20) -> list[dict]:
    return store.rows(f"SELECT candidate_version, incumbent_version, outcome, reason, pairs, evidence, action, "
                      f"decided_at FROM canary_decisions FINAL WHERE task = {q(task)} "
                      f"ORDER BY decided_at DESC LIMIT {int(limit)}")


def windows(store: Warehouse, task: str, candidate: str, limit: int = 30) -> list[dict]:
    return store.rows(f"SELECT window_start, slice, pairs, disagree, errors, disagreement_rate, "
                      f"candidate_error_rate, candidate_p50_ms FROM canary_windows WHERE task = {q(task)} AND "
                      f"candidate_version = {q(candidate)} ORDER BY window_start DESC, slice LIMIT {int(limit)}")
