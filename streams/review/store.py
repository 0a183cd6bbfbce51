"""The review tables (schemas/ddl/0009_review.sql) through the Warehouse interface."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping

import orjson

from kernel.tasks import label_of
from kernel.warehouse import Warehouse
from kernel.warehouse import sql_str as q
from schemas.timefmt import ch_time, parse_ch_time, rfc3339
from streams.review.policy import PENDING, ItemState, Verdict, shown_answers

Key = tuple[str, str]  # (task, item_id)


def _keys_sql(keys: Iterable[Key]) -> str:
    return ", ".join(f"({q(t)}, {q(i)})" for t, i in keys)


def item_row(obj: Mapping[str, Any], arrived_at: datetime) -> dict[str, Any]:
    """A new review_items row (pending) from a schema-valid review.queue object."""
    answers = {k: (v if isinstance(v, str) else label_of(v)) for k, v in shown_answers(obj).items()}
    return {
        "task": obj["task"], "item_id": obj["id"], "kind": obj["kind"], "slice": obj.get("slice") or "",
        "input": obj["input"], "answers": orjson.dumps(answers).decode(), "confidence": obj.get("confidence"),
        "reason": obj["reason"], "source": orjson.dumps(obj.get("source") or {}).decode(),
        "meta": orjson.dumps(obj.get("meta") or {}).decode(), "arrived_at": ch_time(arrived_at),
        "status": PENDING, "open_reason": "", "answer": None, "n_submitted": 0, "n_discarded": 0,
        "agreement": None, "reviewers": [], "route": "", "completed_at": None, "updated_at": ch_time(digits=6),
    }


def with_state(row: Mapping[str, Any], state: ItemState, route: str, now: datetime) -> dict[str, Any]:
    out = dict(row)
    out.update(status=state.status, open_reason=state.open_reason, answer=state.answer,
               n_submitted=state.n_submitted, n_discarded=state.n_discarded, agreement=state.agreement,
               reviewers=list(state.reviewers), route=route if state.status == "submitted" else "",
               completed_at=(row.get("completed_at") or ch_time(now)) if state.complete else None,
               updated_at=ch_time(now, digits=6))
    return out


def state_of(row: Mapping[str, Any]) -> tuple:
    """The fields a verdict can change, to tell whether a row needs rewriting."""
    agreement = row.get("agreement")
    return (row["status"], row.get("open_reason") or "", row.get("answer"), int(row["n_submitted"]),
            int(row["n_discarded"]), None if agreement is None else round(float(agreement), 4),
            tuple(row.get("reviewers") or ()), row.get("route") or "")


def verdict_row(v: Verdict, received_at: datetime) -> dict[str, Any]:
    return {"task": v.task, "item_id": v.item_id, "verdict_id": v.verdict_id, "reviewer": v.reviewer,
            "action": v.action, "answer": v.answer, "note": v.note, "adjudicate": int(v.adjudicate),
            "decided_at": v.decided_at, "received_at": ch_time(received_at, digits=6)}


def _rows_by_key(store: Warehouse, table: str, keys: Iterable[Key]) -> dict[Key, dict]:
    keys = list(keys)
    if not keys:
        return {}
    rows = store.rows(f"SELECT * FROM {table} FINAL WHERE (task, item_id) IN ({_keys_sql(keys)})")
    return {(r["task"], r["item_id"]): r for r in rows}


def load_items(store: Warehouse, keys: Iterable[Key]) -> dict[Key, dict]:
    return _rows_by_key(store, "review_items", keys)


def load_verdicts(store: Warehouse, keys: Iterable[Key]) -> dict[Key, list[Verdict]]:
    keys = list(keys)
    out: dict[Key, list[Verdict]] = {}
    if not keys:
        return out
    rows = store.rows(
        "SELECT task, item_id, verdict_id, reviewer, action, answer, note, adjudicate, decided_at "
        f"FROM review_verdicts FINAL WHERE (task, item_id) IN ({_keys_sql(keys)})")
    for r in rows:
        out.setdefault((r["task"], r["item_id"]), []).append(Verdict(
            verdict_id=r["verdict_id"], item_id=r["item_id"], task=r["task"], reviewer=r["reviewer"],
            action=r["action"], answer=r["answer"], note=r["note"], adjudicate=bool(r["adjudicate"]),
            decided_at=rfc3339(parse_ch_time(r["decided_at"]))))
    return out


def load_routing(store: Warehouse, keys: Iterable[Key]) -> dict[Key, dict]:
    return _rows_by_key(store, "review_routing", keys)


def routing_row(task: str, item_id: str, destination: str, outcome: str, gold_version: int = 0,
                reason: str = "", matched_id: str = "") -> dict[str, Any]:
    return {"task": task, "item_id": item_id, "destination": destination, "outcome": outcome,
            "gold_version": gold_version, "reason": reason, "matched_id": matched_id,
            "decided_at": ch_time(digits=6)}


def unrouted_gold(store: Warehouse, task: str) -> list[dict]:
    """Completed items bound for gold that no growth has taken or refused yet."""
    return store.rows(
        "SELECT item_id, kind, slice, input, answers, answer, meta FROM review_items FINAL "
        f"WHERE task = {q(task)} AND status = 'submitted' AND route = 'gold' AND item_id NOT IN "
        f"(SELECT item_id FROM review_routing FINAL WHERE task = {q(task)}) ORDER BY completed_at, item_id")


def count_unrouted_gold(store: Warehouse, task: str, kind: str | None = None) -> int:
    which = f" AND kind = {q(kind)}" if kind else ""
    return int(store.scalar(
        f"SELECT count() FROM review_items FINAL WHERE task = {q(task)} AND status = 'submitted' "
        f"AND route = 'gold'{which} AND item_id NOT IN "
        f"(SELECT item_id FROM review_routing FINAL WHERE task = {q(task)})") or 0)


def status_counts(store: Warehouse, task: str) -> dict[str, int]:
    rows = store.rows(f"SELECT status, count() AS n FROM review_items FINAL WHERE task = {q(task)} GROUP BY status")
    return {r["status"]: int(r["n"]) for r in rows}
