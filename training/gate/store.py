"""The gate's tables: pinned baselines (``gate_baselines``), per-slice scores
(``eval_results``) and verdicts (``gate_verdicts``)."""

from __future__ import annotations

import orjson

from kernel.warehouse import Warehouse
from kernel.warehouse import sql_str as q
from training.gate.policy import OVERALL, Scores, Verdict
from training.registry.store import dumps, now_us


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


