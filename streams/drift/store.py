"""The drift stage's warehouse I/O: state snapshots, windows, alerts, references, requests.

Blocking calls (the worker runs them with ``asyncio.to_thread``)."""

from __future__ import annotations

import base64
from collections import Counter
from datetime import datetime, timezone

import orjson

from kernel.warehouse import Warehouse
from kernel.warehouse import sql_str as q
from schemas.timefmt import ch_time
from streams.drift.state import tokens
from streams.trigger.store import last_request


# -- detector state ----------------------------------------------------------------------------
# ``state`` holds the JSON snapshot (TaskDrift.dumps()) as text; rows of the older pickle format
# hold base64 of the pickle (base64 never starts with "{"). Both load as the snapshot's bytes.
def load_state(store: Warehouse, task: str) -> tuple[int, bytes] | None:
    rows = store.rows(f"SELECT version, state FROM drift_state WHERE task = {q(task)} "
                      "ORDER BY version DESC LIMIT 1")
    if not rows:
        return None
    state = rows[0]["state"]
    if isinstance(state, bytes):
        state = state.decode()
    blob = state.encode() if state.startswith("{") else base64.b64decode(state)
    return int(rows[0]["version"]), blob


def save_states(store: Warehouse, states: list[tuple[str, int, bytes]]) -> None:
    now = ch_time(datetime.now(timezone.utc))
    store.insert("drift_state", ({"task": t, "version": v, "saved_at": now, "state": b.decode()}
                                 for t, v, b in states))


# -- windows and alerts -------------------------------------------------------------------------
def insert_windows(store: Warehouse, rows: list[dict]) -> None:
    if rows:
        store.insert("drift_windows", rows)


def alert_row(alert: dict) -> dict:
    return {
        "alert_id": alert["alert_id"], "task": alert["task"], "metric": alert["metric"],
        "detector": alert["detector"],
        "detected_at": ch_time(datetime.fromisoformat(alert["detected_at"].replace("Z", "+00:00"))),
        "value": alert["value"], "reference": alert["reference"], "severity": alert["severity"],
        "evidence": orjson.dumps(alert["evidence"]).decode(),
    }


def insert_alerts(store: Warehouse, alerts: list[dict]) -> None:
    if alerts:
        store.insert("drift_alerts", [alert_row(a) for a in alerts])


# -- the training reference --------------------------------------------------------------------
def reference(store: Warehouse, task: str, max_examples: int) -> tuple[dict[str, int], frozenset[str], int]:
    """Label counts and token vocabulary of the training pool: the kept examples up to the last
    retrain request's watermark (what the current model could be trained on), or all kept
    examples before the first request; the newest ``max_examples`` of them."""
    last = last_request(store, task)
    cond = f"task = {q(task)}"
    if last is not None and last.watermark:
        cond += f" AND curated_at <= toDateTime64({q(last.watermark)}, 3, 'UTC')"
    rows = store.rows(f"SELECT output, input FROM examples FINAL WHERE {cond} "
                      f"ORDER BY curated_at DESC LIMIT {int(max_examples)}")
    labels = Counter(r["output"] for r in rows)
    vocab: set[str] = set()
    for r in rows:
        vocab.update(tokens(r["input"]))
    return dict(labels), frozenset(vocab), len(rows)
