"""The ``[review]`` section of a task.

    [review]
    min_submissions = 1          # submitted verdicts that complete an item (all must agree)
    grow_after = 25              # completed disagreement items that grow the gold set (0: never automatically)
    low_conf_gold_share = 0.5    # share of completed low-confidence items that go to gold (by id hash); the rest train
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from kernel import fields
from kernel.tasks import TaskConfig

_KEYS = ("min_submissions", "grow_after", "low_conf_gold_share")


@dataclass(frozen=True)
class ReviewConfig:
    min_submissions: int = 1
    grow_after: int = 25
    low_conf_gold_share: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def review_config(task: TaskConfig) -> ReviewConfig:
    raw = task.section("review")
    fields.unknown_keys(task.source, "review", raw, _KEYS)
    return ReviewConfig(
        min_submissions=fields.integer(task.source, "review.min_submissions", raw.get("min_submissions", 1), 1, 100),
        grow_after=fields.integer(task.source, "review.grow_after", raw.get("grow_after", 25), 0, 10**9),
        low_conf_gold_share=fields.number(task.source, "review.low_conf_gold_share",
                                          raw.get("low_conf_gold_share", 0.5), 0, 1),
    )
