"""The model_config history table (schemas/ddl/0010_serving.sql): every promotion decision.

Only kernel imports here, so the registry's `flywheel models` can show the history too."""

from __future__ import annotations

from typing import Any

import orjson

from kernel.warehouse import Warehouse
from kernel.warehouse import sql_str as q
from schemas.timefmt import ch_time

from .config import Route, route_from_record


def ensure_table(store: Warehouse) -> None:
    """Create model_config if missing (only this DDL file: it holds no views)."""
    from kernel.warehouse.migrate import ddl_files, statements

    for name, text in ddl_files():
        if name.endswith("_serving.sql"):
            for stmt in statements(text, {}):
                store.command(stmt)


def current(store: Warehouse, task: str) -> Route | None:
    """The task's latest decision (highest revision), or None."""
    rows = store.rows(f"SELECT record FROM model_config FINAL WHERE task = {q(task)} ORDER BY revision DESC LIMIT 1")
    return route_from_record(orjson.loads(rows[0]["record"])) if rows else None


def append(store: Warehouse, route: Route) -> None:
    rec = route.to_record()
    store.insert("model_config", [{
        "task": route.task, "revision": route.revision, "action": route.action,
        "serving_version": route.serving, "previous_version": route.previous, "canary_version": route.canary,
        "canary_share": route.canary_share, "decided_by": route.decided_by, "reason": route.reason,
        "record": orjson.dumps(rec).decode(), "decided_at": ch_time(digits=6)}])


def history(store: Warehouse, task: str, limit: int = 50) -> list[dict[str, Any]]:
    return store.rows(f"SELECT revision, action, serving_version, previous_version, canary_version, canary_share, "
                      f"decided_by, reason, decided_at FROM model_config FINAL WHERE task = {q(task)} "
                      f"ORDER BY revision DESC LIMIT {int(limit)}")
