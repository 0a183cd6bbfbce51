"""model.config records: which version of a task serves, and applying them (pure).

A record is the whole routing state of one task (keyed by task on the compacted topic
``model.config``), schemas/json/model.config.schema.json:

    {"task": "transactions", "revision": 4, "action": "promote",
     "serving_version": "transactions-v3-1a2b3c4d", "previous_version": "transactions-v2-...",
     "canary_version": null, "canary_share": 0.0,
     "versions": {"transactions-v3-1a2b3c4d": {"adapter_uri": "...", "student": "encoder_classifier",
                                                "base_model": "...", "system_prompt": null,
                                                "max_new_tokens": null}, ...},
     "config_id": "transactions:4", "decided_by": "alice@host", "reason": "...",
     "decided_at": "2026-11-21T10:00:00.000Z", "schema_version": 1}

``versions`` describes every version the record names, so a router needs nothing but the topic
to load and call them. ``revision`` grows by one per decision for a task; a router keeps the
record with the highest revision per task, so replays and a topic read from the beginning (the
embedded broker does not compact) converge on the same state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

SCHEMA = "model.config.schema.json"


@dataclass(frozen=True)
class VersionRef:
    version: str
    adapter_uri: str
    student: str
    base_model: str = ""
    system_prompt: str | None = None
    max_new_tokens: int | None = None

    def to_obj(self) -> dict[str, Any]:
        return {"adapter_uri": self.adapter_uri, "student": self.student, "base_model": self.base_model,
                "system_prompt": self.system_prompt, "max_new_tokens": self.max_new_tokens}

    @classmethod
    def from_obj(cls, version: str, obj: Mapping[str, Any]) -> "VersionRef":
        return cls(version, obj["adapter_uri"], obj["student"], obj.get("base_model") or "",
                   obj.get("system_prompt"), obj.get("max_new_tokens"))


@dataclass(frozen=True)
class Route:
    """The routing state of one task, as the latest applied record says."""
    task: str
    revision: int
    serving: str | None
    previous: str | None = None
    canary: str | None = None
    canary_share: float = 0.0
    versions: Mapping[str, VersionRef] = field(default_factory=dict)
    action: str = ""
    decided_by: str = ""
    reason: str = ""
    decided_at: str = ""

    def named(self) -> list[str]:
        """The versions this route keeps loaded: serving, canary, previous (in that order)."""
        return [v for v in (self.serving, self.canary, self.previous) if v]

    def to_record(self) -> dict[str, Any]:
        rec = {"config_id": f"{self.task}:{self.revision}", "task": self.task, "revision": self.revision,
               "serving_version": self.serving, "previous_version": self.previous,
               "canary_version": self.canary, "canary_share": self.canary_share,
               "versions": {v: self.versions[v].to_obj() for v in self.named()},
               "decided_by": self.decided_by or "unknown", "reason": self.reason, "decided_at": self.decided_at,
               "schema_version": 1}
        if self.action:
            rec["action"] = self.action
        return rec


class ConfigError(ValueError):
    """A model.config record that cannot be applied; the message says why."""


def route_from_record(obj: Mapping[str, Any]) -> Route:
    """A validated record (schema checked) to a Route; ConfigError if it names a version it does
    not describe."""
    versions = {v: VersionRef.from_obj(v, o) for v, o in (obj.get("versions") or {}).items()}
    route = Route(task=obj["task"], revision=int(obj["revision"]), serving=obj.get("serving_version"),
                  previous=obj.get("previous_version"), canary=obj.get("canary_version"),
                  canary_share=float(obj.get("canary_share") or 0.0), versions=versions,
                  action=obj.get("action", ""), decided_by=obj.get("decided_by", ""),
                  reason=obj.get("reason", ""), decided_at=obj.get("decided_at", ""))
    missing = [v for v in route.named() if v not in versions]
    if missing:
        raise ConfigError(f"model.config record for {route.task!r} revision {route.revision} names "
                          f"{missing} without describing them under 'versions'")
    return route


def decode_record(raw: bytes | None) -> Route:
    """Bytes from model.config to a Route, or ConfigError naming the problem."""
    from schemas.events import InvalidMessage, load_message

    try:
        obj = load_message(raw, SCHEMA)
    except InvalidMessage as exc:
        raise ConfigError(str(exc)) from None
    return route_from_record(obj)


def apply(routes: Mapping[str, Route], new: Route) -> tuple[dict[str, Route], bool]:
    """The routes after a record: a record whose revision is not above the task's current one is
    a replay or stale (ignored). Returns (routes, changed)."""
    cur = routes.get(new.task)
    if cur is not None and new.revision <= cur.revision:
        return dict(routes), False
    out = dict(routes)
    out[new.task] = new
    return out, True


def latest_per_task(records: list[Route]) -> dict[str, Route]:
    """What a router that reads the topic from the beginning ends up with."""
    routes: dict[str, Route] = {}
    for r in records:
        routes, _ = apply(routes, r)
    return routes


def encode(route: Route) -> bytes:
    """The validated model.config message of a route."""
    from schemas.messages import encode as encode_message
    from schemas.topics import MODEL_CONFIG

    return encode_message(MODEL_CONFIG, route.to_record())


def evictable(loaded: list[str], routes: Mapping[str, Route], cap: int) -> list[str]:
    """Adapters to unload so that at most ``cap`` stay loaded, never one a route names; the
    oldest-loaded go first (``loaded`` is in load order)."""
    keep = {v for r in routes.values() for v in r.named()}
    spare = [v for v in loaded if v not in keep]
    excess = len(loaded) - cap
    return spare[:max(0, excess)]
