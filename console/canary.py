"""The overview's canary panel: what the task's current canary has seen so far, built from the
canary tables (streams/canary) by pure functions.

The judge decides with anytime-valid tests (betting martingales); it stores per slice whether
the rate is confidently within its bound (``fine``), not an interval. For a person the panel
also shows a 95% Wilson score interval of each disagreement rate: for display only, it is what
a single look at the counts supports, not what the judge acts on.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

import orjson

from console.queries import has_table
from kernel.tasks import TaskConfig
from kernel.warehouse import Warehouse
from kernel.warehouse import sql_str as q

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion k/n (None when n == 0). Unlike k/n ± z·se it
    stays inside [0, 1] and is not empty at k = 0 or k = n."""
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must be between 0 and n={n}")
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def progress(value: float, target: float) -> float:
    """Share of a target reached, 0..1."""
    if target <= 0:
        return 1.0
    return max(0.0, min(1.0, value / target))


def slice_rows(counts: Mapping[str, Any], evidence: Mapping[str, Any] | None) -> list[dict]:
    """One row per slice (task-wide first, as '*'): pairs, disagreements, rate, Wilson interval,
    and the judge's view of the slice from its latest evidence when it has one."""
    ev = (evidence or {}).get("slices", {}) if evidence else {}
    total = {"pairs": 0, "disagree": 0, "errors": 0}
    rows = []
    for name in sorted(counts):
        c = counts[name]
        pairs, dis, err = int(c["pairs"]), int(c["disagree"]), int(c["errors"])
        total["pairs"] += pairs
        total["disagree"] += dis
        total["errors"] += err
        rows.append(_row(name, pairs, dis, err, ev.get(name)))
    return [_row("*", total["pairs"], total["disagree"], total["errors"], ev.get("*"))] + rows


def _row(name: str, pairs: int, dis: int, err: int, ev: Mapping[str, Any] | None) -> dict:
    ci = wilson(dis, pairs)
    judged = None
    if ev:
        judged = "within bound" if ev.get("fine") else ("too few pairs" if ev.get("small") else "not yet proven")
    return {"slice": name, "pairs": pairs, "disagree": dis, "errors": err,
            "rate": dis / pairs if pairs else None, "lo": ci[0] if ci else None, "hi": ci[1] if ci else None,
            "bound": ev.get("bound") if ev else None, "judged": judged}


def panel(store: Warehouse, task: TaskConfig, now: float | None = None) -> dict | None:
    """The canary panel of a task: the current canary (or the last one, marked ended), None when
    the task never had one."""
    from serving import history
    from streams.canary.config import canary_config

    if not has_table(store, "canary_pairs"):
        return None
    route = history.current(store, task.name) if has_table(store, "model_config") else None
    candidate = route.canary if route and route.canary else None
    incumbent = route.serving if candidate and route else None
    active = candidate is not None
    if candidate is None:
        last = store.rows(f"SELECT candidate_version, incumbent_version FROM canary_decisions FINAL "
                          f"WHERE task = {q(task.name)} ORDER BY decided_at DESC LIMIT 1")
        if not last:
            last = store.rows(f"SELECT candidate_version, incumbent_version FROM canary_pairs "
                              f"WHERE task = {q(task.name)} ORDER BY ts DESC LIMIT 1")
        if not last:
            return None
        candidate, incumbent = last[0]["candidate_version"], last[0]["incumbent_version"]
    cfg = canary_config(task)
    inc = f" AND incumbent_version = {q(incumbent)}" if incumbent else ""
    counts = {r["slice"]: r for r in store.rows(
        f"SELECT slice, count() AS pairs, countIf(agree = 0 OR error != '') AS disagree, "
        f"countIf(error != '') AS errors FROM canary_pairs FINAL WHERE task = {q(task.name)} AND "
        f"candidate_version = {q(candidate)}{inc} GROUP BY slice")}
    dec = store.rows(f"SELECT outcome, reason, pairs, evidence, action, toString(decided_at) AS decided_at "
                     f"FROM canary_decisions FINAL WHERE task = {q(task.name)} AND candidate_version = "
                     f"{q(candidate)} ORDER BY decided_at DESC LIMIT 1")
    decision = dec[0] if dec else None
    evidence = None
    if decision:
        try:
            evidence = orjson.loads(decision["evidence"] or "{}")
        except orjson.JSONDecodeError:
            evidence = None
    started = store.scalar(f"SELECT toUnixTimestamp64Milli(max(decided_at)) FROM model_config FINAL WHERE task = "
                           f"{q(task.name)} AND action = 'canary_start' AND canary_version = {q(candidate)}"
                           ) if has_table(store, "model_config") else None
    started_s = float(started) / 1000 if started else None
    elapsed = ((now or time.time()) - started_s) if started_s and active else (
        float(evidence.get("elapsed_s", 0)) if evidence else 0.0)
    rows = slice_rows(counts, evidence)
    windows = store.rows(
        f"SELECT toString(window_start) AS w, sum(pairs) AS pairs, sum(disagree) AS disagree FROM canary_windows "
        f"WHERE task = {q(task.name)} AND candidate_version = {q(candidate)} GROUP BY window_start "
        f"ORDER BY window_start DESC LIMIT 60")[::-1]
    return {"candidate": candidate, "incumbent": incumbent, "active": active,
            "share": route.canary_share if active and route else None, "config": cfg, "rows": rows,
            "total": rows[0], "decision": decision, "elapsed_s": elapsed,
            "pairs_progress": progress(rows[0]["pairs"], cfg.min_pairs),
            "duration_progress": progress(elapsed, cfg.min_duration), "windows": windows}
