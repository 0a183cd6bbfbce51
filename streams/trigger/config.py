"""The ``[trigger]`` section of a task: when drift and new data ask for a retrain."""

from __future__ import annotations

from dataclasses import dataclass

from kernel import fields
from kernel.tasks import TaskConfig, TaskConfigError
from schemas.metrics import METRICS


@dataclass(frozen=True)
class TriggerConfig:
    task: str
    enabled: bool = True
    metrics: tuple[str, ...] = ("off_schema_rate", "label_mix", "oov_rate", "agreement_rate")
    min_new_examples: int = 200
    refresh_every: int = 5000
    cooldown_s: float = 3600.0


def trigger_config(task: TaskConfig) -> TriggerConfig:
    raw = task.section("trigger")
    file = task.source
    fields.unknown_keys(file, "trigger", raw, {"enabled", "metrics", "min_new_examples", "refresh_every", "cooldown"})
    cfg = TriggerConfig(task.name)
    enabled = fields.boolean(file, "trigger.enabled", raw.get("enabled", True))
    metrics = raw.get("metrics", list(cfg.metrics))
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise TaskConfigError(file, "trigger.metrics", f"must be a list of metric names from {list(METRICS)}")
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise TaskConfigError(file, "trigger.metrics", f"unknown metric {bad[0]!r}; use names from {list(METRICS)}")
    min_new = fields.integer(file, "trigger.min_new_examples", raw.get("min_new_examples", cfg.min_new_examples),
                             0, 10**9)
    refresh = fields.integer(file, "trigger.refresh_every", raw.get("refresh_every", cfg.refresh_every), 1, 10**12)
    cooldown = fields.duration(file, "trigger.cooldown", raw.get("cooldown", "1h"))
    return TriggerConfig(task.name, enabled, tuple(metrics), min_new, refresh, cooldown)
