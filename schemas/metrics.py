"""The names of the drift metrics, as the drift.alerts contract declares them (one source)."""

from __future__ import annotations

from schemas.events import schema_document

METRICS: tuple[str, ...] = tuple(schema_document("drift.alerts.schema.json")["properties"]["metric"]["enum"])
