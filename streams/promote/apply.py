"""Promotion and rollback, the I/O around the pure decisions of streams.promote.policy.

Order of effects: the model.config record is published first (it is what routers act on; if
the broker is down nothing has changed and the command fails saying so), then the history row
in model_config, the lifecycle steps in model_registry (training.registry.store.transition, the
one place statuses change), and one model.events message.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
from pathlib import Path

from kernel.warehouse import Warehouse
from kernel.warehouse import sql_str as q
from schemas.timefmt import rfc3339
from serving import history
from serving.config import encode

from .policy import Decision, decide_canary_start, decide_canary_stop, decide_promote, decide_rollback, version_ref


def who() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def gate_approved(store: Warehouse, task: str, version: str) -> bool | None:
    """The latest gate verdict of a version (None: never gated)."""
    rows = store.rows(f"SELECT approved FROM gate_verdicts FINAL WHERE task = {q(task)} AND model_version = "
                      f"{q(version)} ORDER BY decided_at DESC LIMIT 1")
    return bool(rows[0]["approved"]) if rows else None


def _chat(row: dict) -> dict | None:
    p = Path(row["adapter_uri"]) / "chat.json"
    return json.loads(p.read_text()) if p.is_file() else None


def decide(store: Warehouse, action: str, task: str, version: str | None = None, *, decided_by: str | None = None,
           reason: str = "", share: float | None = None) -> Decision:
    """``action``: promote | rollback | canary_start (``share`` of live requests, 0-1] |
    canary_stop | canary_abort."""
    from training.registry import store as reg

    history.ensure_table(store)
    cur = history.current(store, task)
    rows = {v: r for v in (cur.named() if cur else []) if (r := reg.get_model(store, task, v)) is not None}
    by, at = decided_by or who(), rfc3339()
    if action == "promote":
        row = reg.get_model(store, task, version)
        ref = version_ref(row, _chat(row)) if row else None
        return decide_promote(task, row, gate_approved(store, task, version) if row else None, cur, ref,
                              version=version, decided_by=by, reason=reason, decided_at=at, current_rows=rows)
    if action == "canary_start":
        row = reg.get_model(store, task, version)
        ref = version_ref(row, _chat(row)) if row else None
        return decide_canary_start(task, row, gate_approved(store, task, version) if row else None, cur, ref,
                                   share if share is not None else 0.1, version=version, decided_by=by,
                                   reason=reason, decided_at=at)
    if action in ("canary_stop", "canary_abort"):
        cand = cur.canary if cur else None
        row = reg.get_model(store, task, cand) if cand else None
        return decide_canary_stop(task, cur, row, version=version, abort=action == "canary_abort", decided_by=by,
                                  reason=reason, decided_at=at)
    return decide_rollback(task, cur, rows, decided_by=by, reason=reason, decided_at=at)


def event(d: Decision) -> dict:
    r = d.route
    eid = hashlib.sha256(f"{d.event_kind}|{r.task}|{d.version}|{r.revision}".encode()).hexdigest()[:32]
    return {"event_id": eid, "kind": d.event_kind, "task": r.task, "model_version": d.version,
            "ts": r.decided_at, "revision": r.revision, "previous_version": r.previous,
            "decided_by": r.decided_by, "reason": r.reason}


def record(store: Warehouse, d: Decision) -> None:
    """The bookkeeping after the record is published: history row, lifecycle steps."""
    from training.registry import store as reg

    history.append(store, d.route)
    for version, state in d.transitions:
        reg.transition(store, d.route.task, version, state)


async def apply(store: Warehouse, kafka, action: str, task: str, version: str | None = None, *,
                decided_by: str | None = None, reason: str = "", producer=None, share: float | None = None
                ) -> Decision:
    """Decide, publish the record, record history and lifecycle, publish the model event.
    ``producer``: a started AIOKafkaProducer to reuse (else one is opened for this call)."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    from schemas.messages import encode as encode_message
    from schemas.topics import MODEL_CONFIG, MODEL_EVENTS

    d = await asyncio.to_thread(decide, store, action, task, version, decided_by=decided_by, reason=reason,
                                share=share)
    own = producer is None
    if own:
        producer = AIOKafkaProducer(**kafka.aiokafka_kwargs(), acks="all", request_timeout_ms=10000)
        await producer.start()
    try:
        await producer.send_and_wait(MODEL_CONFIG.name, encode(d.route), key=task.encode())
        await asyncio.to_thread(record, store, d)
        await producer.send_and_wait(MODEL_EVENTS.name, encode_message(MODEL_EVENTS, event(d)), key=task.encode())
    finally:
        if own:
            await producer.stop()
    return d
