"""The trigger's warehouse I/O: the last request, new kept examples, pending alerts, and
publishing a request once (blocking calls; the worker runs them with ``asyncio.to_thread``)."""

from __future__ import annotations

from datetime import datetime
from typing import Awaitable, Callable

import orjson

from kernel.gold import current_version
from kernel.warehouse import Warehouse
from kernel.warehouse import sql_str as q
from schemas.timefmt import ch_time, parse_ch_time
from streams.trigger.config import TriggerConfig
from streams.trigger.policy import LastRequest, PendingAlert, Reason, build_request, decide


def last_request(store: Warehouse, task: str) -> LastRequest | None:
    rows = store.rows(f"SELECT request_id, toString(requested_at) AS requested_at, watermark "
                      f"FROM retrain_requests FINAL WHERE task = {q(task)} "
                      "ORDER BY requested_at DESC, request_id DESC LIMIT 1")
    if not rows:
        return None
    r = rows[0]
    return LastRequest(r["request_id"], parse_ch_time(r["requested_at"]), r["watermark"])


def kept_since(store: Warehouse, task: str, watermark: str | None) -> tuple[int, str | None]:
    """(kept examples curated after ``watermark``, the newest curated_at of the task)."""
    after = f"curated_at > toDateTime64({q(watermark)}, 3, 'UTC')" if watermark else "1"
    row = store.rows(f"SELECT uniqExactIf(id, {after}) AS n, toString(max(curated_at)) AS wm, count() AS total "
                     f"FROM examples WHERE task = {q(task)}")[0]
    return int(row["n"]), (row["wm"] if int(row["total"]) else None)


def pending_alerts(store: Warehouse, task: str, since: datetime | None) -> list[PendingAlert]:
    cond = f" AND detected_at > toDateTime64({q(ch_time(since))}, 3, 'UTC')" if since else ""
    rows = store.rows(f"SELECT alert_id, metric FROM drift_alerts FINAL WHERE task = {q(task)}{cond} "
                      "ORDER BY detected_at, alert_id")
    return [PendingAlert(r["alert_id"], r["metric"]) for r in rows]


def request_exists(store: Warehouse, request_id: str) -> bool:
    return bool(store.scalar(f"SELECT count() FROM retrain_requests WHERE request_id = {q(request_id)}"))


def request_row(msg: dict) -> dict:
    return {
        "request_id": msg["request_id"], "task": msg["task"], "reason_kind": msg["reason"]["kind"],
        "alert_ids": msg["reason"].get("alert_ids", []), "detail": msg["reason"].get("detail", ""),
        "watermark": msg["watermark"], "gold_version": msg["gold_version"],
        "requested_at": ch_time(datetime.fromisoformat(msg["requested_at"].replace("Z", "+00:00"))),
        "message": orjson.dumps(msg).decode(),
    }


class NoExamples(RuntimeError):
    pass


def plan_request(store: Warehouse, cfg: TriggerConfig | None, task: str, now: datetime,
                 manual: str | None = None) -> dict | None:
    """Read what the policy needs, apply it (or take the manual reason), build the request.
    None when the policy says no."""
    last = last_request(store, task)
    new_kept, newest = kept_since(store, task, last.watermark if last else None)
    if manual is not None:
        reason: Reason | None = Reason("manual", (), manual)
    else:
        pending = pending_alerts(store, task, last.requested_at if last else None)
        reason = decide(cfg, now, last, new_kept, pending)
    if reason is None:
        return None
    watermark = newest if new_kept or last is None else last.watermark
    if not watermark:
        raise NoExamples(f"task {task!r} has no kept examples yet: there is nothing to train on")
    return build_request(task, reason, watermark, current_version(store, task), now)


async def issue_request(store_call: Callable, publish: Callable[[dict], Awaitable[None]], msg: dict) -> bool:
    """Publish a request and record it, once: False if its id was made before. Publish first:
    a crash between the two re-publishes the same id later, which the consumer ignores."""
    if await store_call(request_exists, msg["request_id"]):
        return False
    await publish(msg)
    await store_call(lambda s, rows: s.insert("retrain_requests", rows), [request_row(msg)])
    return True
