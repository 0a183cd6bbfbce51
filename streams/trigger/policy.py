"""The retrain trigger: a pure policy and the request it makes.

Retrain a task when
  * an alert on one of its trigger metrics is pending (arrived since the last request) and at
    least ``min_new_examples`` kept examples exist since the last request's watermark, or
  * ``refresh_every`` new kept examples accumulated,
and never within ``cooldown`` of the last request. A manual request skips the policy.

The request id is a pure function of (task, reason kind, alert ids, watermark): the same
request made twice has the same id, so the training worker starts one run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import xxhash

from schemas.events import SCHEMA_VERSION
from schemas.timefmt import rfc3339
from streams.trigger.config import TriggerConfig


@dataclass(frozen=True)
class LastRequest:
    request_id: str
    requested_at: datetime
    watermark: str


@dataclass(frozen=True)
class PendingAlert:
    alert_id: str
    metric: str


@dataclass(frozen=True)
class Reason:
    kind: str  # alert | refresh | manual
    alert_ids: tuple[str, ...] = ()
    detail: str = ""

    def to_obj(self) -> dict:
        obj: dict = {"kind": self.kind}
        if self.alert_ids:
            obj["alert_ids"] = list(self.alert_ids)
        if self.detail:
            obj["detail"] = self.detail
        return obj


def decide(cfg: TriggerConfig, now: datetime, last: LastRequest | None, new_kept: int,
           pending: list[PendingAlert]) -> Reason | None:
    """Whether to ask for a retrain now, and why. Pure."""
    if not cfg.enabled:
        return None
    if last is not None and (now - last.requested_at).total_seconds() < cfg.cooldown_s:
        return None
    triggering = sorted({a.alert_id for a in pending if a.metric in cfg.metrics})
    if triggering and new_kept >= cfg.min_new_examples:
        metrics = sorted({a.metric for a in pending if a.alert_id in triggering})
        return Reason("alert", tuple(triggering),
                      f"drift on {', '.join(metrics)}; {new_kept} new kept examples")
    if new_kept >= cfg.refresh_every:
        return Reason("refresh", (), f"{new_kept} new kept examples >= refresh_every {cfg.refresh_every}")
    return None


def request_id(task: str, reason: Reason, watermark: str) -> str:
    h = xxhash.xxh3_128()
    for part in (task, reason.kind, ",".join(sorted(set(reason.alert_ids))), watermark):
        h.update(part.encode())
        h.update(b"\0")
    return f"rr-{task}-{h.hexdigest()[:20]}"


def build_request(task: str, reason: Reason, watermark: str, gold_version: int, now: datetime) -> dict:
    """The retrain.requests message (schemas/json/retrain.requests.schema.json)."""
    reason = Reason(reason.kind, tuple(sorted(set(reason.alert_ids))), reason.detail)
    return {
        "request_id": request_id(task, reason, watermark),
        "task": task,
        "reason": reason.to_obj(),
        "watermark": watermark,
        "gold_version": int(gold_version),
        "requested_at": rfc3339(now),
        "schema_version": SCHEMA_VERSION,
    }


@dataclass(frozen=True)
class PastRequest:
    request_id: str
    kind: str
    alert_ids: tuple[str, ...]
    requested_at: datetime


def _dur(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def explain_alert(cfg: TriggerConfig, alert_id: str, metric: str, detected_at: datetime,
                  requests: list[PastRequest], new_kept: int) -> str:
    """Why an alert did or did not start a retrain, in the trigger's own terms. Pure.

    ``requests``: the task's retrain requests (any order); ``new_kept``: kept examples since the
    newest request's watermark (what the trigger would count now)."""
    started = [r for r in requests if alert_id in r.alert_ids]
    if started:
        return f"started retrain {started[0].request_id}"
    if not cfg.enabled:
        return "no retrain: the trigger is off ([trigger] enabled = false)"
    if metric not in cfg.metrics:
        return f"no retrain: {metric} is not one of [trigger] metrics {list(cfg.metrics)}"
    before = [r for r in requests if r.requested_at <= detected_at]
    last = max(before, key=lambda r: r.requested_at) if before else None
    if last is not None and (detected_at - last.requested_at).total_seconds() < cfg.cooldown_s:
        return (f"no retrain: cooldown ({_dur(cfg.cooldown_s)}) after the {last.kind} request {last.request_id} "
                f"at {last.requested_at:%Y-%m-%d %H:%M:%S}")
    after = [r for r in requests if r.requested_at > detected_at]
    if after:
        first = min(after, key=lambda r: r.requested_at)
        return f"no retrain of its own: the {first.kind} request {first.request_id} came first"
    if new_kept < cfg.min_new_examples:
        return (f"waiting: {new_kept} new kept examples since the last request, "
                f"min_new_examples = {cfg.min_new_examples}")
    return "pending: the trigger acts on it at its next check"
