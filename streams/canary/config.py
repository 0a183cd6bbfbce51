"""The ``[canary]`` section of a task."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from kernel import fields
from kernel.tasks import TaskConfig

KEYS = ("pct", "min_pairs", "min_duration", "max_disagreement", "slice_tolerance", "alpha", "auto_promote",
        "auto_rollback")


@dataclass(frozen=True)
class CanaryConfig:
    pct: float = 10.0               # percent of live requests the candidate also answers
    min_pairs: int = 500            # fewer answered pairs: inconclusive, never a pass
    min_duration: float = 3600.0    # seconds in canary before a promote can be decided
    max_disagreement: float = 0.05  # the tolerated rate of answers that differ (task-wide)
    slice_tolerance: float = 0.05   # a slice may exceed max_disagreement by this much; paired net harm allowed
    alpha: float = 0.05             # probability of a false decision of either kind, over all looks and slices
    auto_promote: bool = False      # gate approval starts the canary; the judge's promote is carried out
    auto_rollback: bool = True      # the judge's abort is carried out (candidate rejected, incumbent stays)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def canary_config(task: TaskConfig) -> CanaryConfig:
    raw = task.section("canary")
    src = task.source
    fields.unknown_keys(src, "canary", raw, KEYS)
    d = CanaryConfig()
    return CanaryConfig(
        pct=fields.number(src, "canary.pct", raw.get("pct", d.pct), 0, 100, lo_open=True),
        min_pairs=fields.integer(src, "canary.min_pairs", raw.get("min_pairs", d.min_pairs), 1, 10**9),
        min_duration=fields.duration(src, "canary.min_duration", raw.get("min_duration", d.min_duration)),
        max_disagreement=fields.number(src, "canary.max_disagreement", raw.get("max_disagreement", d.max_disagreement),
                                       0, 1, lo_open=True),
        slice_tolerance=fields.number(src, "canary.slice_tolerance", raw.get("slice_tolerance", d.slice_tolerance),
                                      0, 1),
        alpha=fields.number(src, "canary.alpha", raw.get("alpha", d.alpha), 0, 0.5, lo_open=True),
        auto_promote=fields.boolean(src, "canary.auto_promote", raw.get("auto_promote", d.auto_promote)),
        auto_rollback=fields.boolean(src, "canary.auto_rollback", raw.get("auto_rollback", d.auto_rollback)),
    )
