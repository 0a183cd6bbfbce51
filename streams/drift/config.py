"""Typed, validated [drift] and [trigger] sections of a task file.

    [drift]
    enabled = true                   # default
    reference_refresh = "5m"         # how often the training reference is re-read
    reference_max_examples = 100000  # newest kept examples the reference is built from

    [drift.off_schema_rate]          # one table per metric, every key optional
    detector = "adwin"               # adwin | page_hinkley | kswin (label_mix: chi2_jsd)
    delta = 0.0001
    direction = "up"                 # up | down | both: which moves raise an alert
    min_effect = 0.01                # |after - before| below this never alerts
    cooldown_events = 20000          # events of this metric after an alert with no new alert
    rearm_effect = 0.02              # hysteresis: while in drift, a further same-direction move
                                     # re-alerts only if this far beyond the in-drift level
                                     # (default 2 x min_effect; 0 = off, the cooldown only)
    rearm_events = 2000              # events a further move is measured over before re-alerting

    [trigger]
    metrics = ["off_schema_rate", "label_mix", "oov_rate", "agreement_rate"]
    min_new_examples = 200
    refresh_every = 5000
    cooldown = "1h"

Every problem raises TaskConfigError naming the task file, the key (``drift.<metric>.<key>``)
and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from kernel import fields
from kernel.tasks import TaskConfig, TaskConfigError
from streams.trigger.config import TriggerConfig, trigger_config

CURATION_METRICS = ("off_schema_rate", "low_conf_rate", "confidence_mean", "label_mix")
LIVE_METRICS = ("input_length", "oov_rate", "agreement_rate")
# of the version in canary, fed by canary.pairs (one value per pair): answers that differ from the
# serving version's (a failed candidate call counts as differing, as in the judge), failed or
# timed-out candidate calls, and -- on pairs that carry the teacher's answer -- candidate answers
# that differ from the teacher's
CANARY_METRICS = ("canary_disagreement_rate", "canary_error_rate", "canary_wrong_rate")
METRICS = CURATION_METRICS + LIVE_METRICS + CANARY_METRICS
RATE_METRICS = ("off_schema_rate", "low_conf_rate", "oov_rate", "agreement_rate") + CANARY_METRICS
DETECTORS = ("adwin", "page_hinkley", "kswin", "chi2_jsd")
ALLOWED = {m: ("adwin", "page_hinkley") for m in RATE_METRICS}
ALLOWED.update(confidence_mean=("page_hinkley", "adwin", "kswin"), input_length=("page_hinkley", "kswin"),
               label_mix=("chi2_jsd",))
DIRECTIONS = ("up", "down", "both")
REARM_FACTOR = 2.0  # default rearm_effect = 2 x min_effect: a 1%->5% ramp over 20k events alerts once


@dataclass(frozen=True)
class DetectorConfig:
    """One metric's detector. Units: adwin ``delta`` is a confidence; page_hinkley ``delta``
    and ``threshold`` are in standard deviations of the metric measured during ``warmup``;
    kswin ``alpha`` is the KS p-value; chi2_jsd ``alpha`` is the chi-square p-value and
    ``min_jsd`` the Jensen-Shannon divergence (bits) a window must also exceed."""

    metric: str
    detector: str
    enabled: bool = True
    direction: str = "both"
    min_effect: float = 0.0
    cooldown_events: int = 20_000
    warmup: int = 500             # events before any alert (page_hinkley: calibration)
    # hysteresis (not chi2_jsd, which has clear_windows): None = REARM_FACTOR x min_effect
    rearm_effect: float | None = None
    rearm_events: int = 2000      # events a further move's level is measured over
    # adwin
    delta: float = 1e-4
    clock: int = 32
    # page_hinkley (standardised units)
    threshold: float = 50.0
    # kswin
    alpha: float = 1e-5
    window_size: int = 300
    stat_size: int = 100
    sample_every: int = 10
    # chi2_jsd
    window: int = 1000
    min_jsd: float = 0.01
    clear_windows: int = 3
    smoothing: float = 0.5
    min_reference: int = 200

    @property
    def rearm(self) -> float:
        """The further move, in the metric's units, beyond the in-drift level that re-alerts."""
        return self.min_effect * REARM_FACTOR if self.rearm_effect is None else self.rearm_effect


_DEFAULTS = {
    "off_schema_rate": DetectorConfig("off_schema_rate", "adwin", direction="up", min_effect=0.01),
    "low_conf_rate": DetectorConfig("low_conf_rate", "adwin", direction="up", min_effect=0.01),
    "confidence_mean": DetectorConfig("confidence_mean", "page_hinkley", direction="both", delta=0.25,
                                      threshold=50.0, min_effect=0.01),
    "label_mix": DetectorConfig("label_mix", "chi2_jsd", alpha=1e-6),
    "input_length": DetectorConfig("input_length", "page_hinkley", direction="both", delta=0.25,
                                   threshold=50.0),
    "oov_rate": DetectorConfig("oov_rate", "adwin", direction="up", min_effect=0.01),
    "agreement_rate": DetectorConfig("agreement_rate", "adwin", direction="down", min_effect=0.01),
    # a canary sees a share of live traffic: a shorter warm-up and cooldown than the live metrics
    **{m: DetectorConfig(m, "adwin", direction="up", min_effect=0.02, warmup=200, cooldown_events=2000)
       for m in CANARY_METRICS},
}

# key -> (type, low, high); bounds inclusive
_KEYS: dict[str, tuple[type, float, float]] = {
    "min_effect": (float, 0.0, 1e12), "cooldown_events": (int, 0, 10**12), "warmup": (int, 0, 10**9),
    "delta": (float, 0.0, 1e6), "clock": (int, 1, 10**6), "threshold": (float, 1e-9, 1e12),
    "alpha": (float, 1e-300, 0.5), "window_size": (int, 20, 100_000), "stat_size": (int, 5, 50_000),
    "sample_every": (int, 1, 10**6), "window": (int, 50, 10**7), "min_jsd": (float, 0.0, 1.0),
    "clear_windows": (int, 1, 10**6), "smoothing": (float, 0.0, 1e6), "min_reference": (int, 1, 10**9),
    "rearm_effect": (float, 0.0, 1e12), "rearm_events": (int, 1, 10**9),
}


@dataclass(frozen=True)
class DriftConfig:
    task: str
    enabled: bool
    metrics: dict[str, DetectorConfig]
    reference_refresh_s: float = 300.0
    reference_max_examples: int = 100_000

    def active(self, metric: str) -> DetectorConfig | None:
        cfg = self.metrics.get(metric)
        return cfg if self.enabled and cfg is not None and cfg.enabled else None


def parse_duration(value: Any, file, key: str) -> float:
    return fields.duration(file, key, value)


def _typed(file, key: str, value: Any, kind: type, lo: float, hi: float):
    return fields.integer(file, key, value, lo, hi) if kind is int else fields.number(file, key, value, lo, hi)


def _metric(task: TaskConfig, metric: str, raw: Any) -> DetectorConfig:
    file, base = task.source, f"drift.{metric}"
    if not isinstance(raw, dict):
        raise TaskConfigError(file, base, f"must be a table: [drift.{metric}]")
    cfg = _DEFAULTS[metric]
    changes: dict[str, Any] = {}
    detector = raw.get("detector", cfg.detector)
    if detector not in ALLOWED[metric]:
        raise TaskConfigError(file, f"{base}.detector",
                              f"{detector!r} cannot watch {metric}; use one of {list(ALLOWED[metric])}")
    if detector != cfg.detector:
        # the other detector's own defaults, keeping this metric's direction and min_effect
        fresh = DetectorConfig(metric, detector, direction=cfg.direction, min_effect=cfg.min_effect)
        if detector == "page_hinkley":
            fresh = replace(fresh, delta=0.25, threshold=50.0)
        cfg = fresh
    for key, value in raw.items():
        full = f"{base}.{key}"
        if key == "detector":
            continue
        if key == "enabled":
            if not isinstance(value, bool):
                raise TaskConfigError(file, full, f"must be true or false, got {value!r}")
            changes[key] = value
        elif key == "direction":
            if value not in DIRECTIONS:
                raise TaskConfigError(file, full, f"must be one of {list(DIRECTIONS)}, got {value!r}")
            changes[key] = value
        elif key in _KEYS:
            changes[key] = _typed(file, full, value, *_KEYS[key])
        else:
            raise TaskConfigError(file, full, f"unknown key; valid keys are "
                                              f"{sorted(['detector', 'enabled', 'direction', *_KEYS])}")
    cfg = replace(cfg, **changes)
    if cfg.detector == "adwin" and not 0 < cfg.delta < 1:
        raise TaskConfigError(file, f"{base}.delta", f"ADWIN's delta is a confidence in (0, 1), got {cfg.delta}")
    if cfg.detector == "chi2_jsd":
        for key in ("rearm_effect", "rearm_events"):
            if key in raw:
                raise TaskConfigError(file, f"{base}.{key}", "label_mix has its own hysteresis: a window "
                                                             "re-arms after clear_windows quiet windows; set "
                                                             "clear_windows instead")
    if cfg.detector == "kswin" and cfg.stat_size >= cfg.window_size:
        raise TaskConfigError(file, f"{base}.stat_size", f"must be smaller than window_size ({cfg.window_size})")
    return cfg


def drift_config(task: TaskConfig) -> DriftConfig:
    raw = task.section("drift")
    file = task.source
    top = {"enabled", "reference_refresh", "reference_max_examples"}
    for key in raw:
        if key not in top and key not in METRICS:
            raise TaskConfigError(file, f"drift.{key}", f"unknown key; valid keys are {sorted(top)} and the "
                                                        f"metric tables {list(METRICS)}")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise TaskConfigError(file, "drift.enabled", f"must be true or false, got {enabled!r}")
    refresh = parse_duration(raw.get("reference_refresh", 300), file, "drift.reference_refresh")
    max_ex = _typed(file, "drift.reference_max_examples", raw.get("reference_max_examples", 100_000),
                    int, 1, 10**8)
    metrics = {}
    for m in METRICS:
        cfg = _metric(task, m, raw.get(m, {}))
        if m == "label_mix" and task.labels is None:
            cfg = replace(cfg, enabled=False)  # an extraction task has no label mix
        metrics[m] = cfg
    return DriftConfig(task.name, enabled, metrics, refresh, max_ex)


@dataclass(frozen=True)
class StageConfig:
    drift: dict[str, DriftConfig] = field(default_factory=dict)
    trigger: dict[str, TriggerConfig] = field(default_factory=dict)


def stage_config(tasks: dict[str, TaskConfig]) -> StageConfig:
    return StageConfig({n: drift_config(t) for n, t in tasks.items()},
                       {n: trigger_config(t) for n, t in tasks.items()})
