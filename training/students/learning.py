"""Did the student learn? A pure check on its validation answers, run before the gate.

A student that "did not learn" is one whose answers carry no information about the input:
  - its predictions sit on one label (share of the most predicted label >= ``collapse_share``
    while the validation labels are not that concentrated), or
  - its validation accuracy is no better than always answering the training set's most frequent
    label (the majority-class baseline), within ``margin``.
Such a run is reported as "did not learn" with the evidence, which is a different finding from a
student that learned but scores below the gate's baseline (more data, other settings or another
kind may help the second; the first points at the training recipe).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

LEARNED = "learned"
DID_NOT_LEARN = "did not learn"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class LearningCheck:
    status: str                       # "learned", "did not learn", or "unknown" (no validation rows)
    val_accuracy: float
    majority_label: str
    majority_baseline: float          # accuracy of always answering majority_label on validation
    top_prediction: str
    top_prediction_share: float       # share of validation answers that are top_prediction
    val_top_label_share: float        # share of the most frequent label among the validation labels
    n_validation: int
    predicted_labels: int             # distinct labels among the answers
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def learned(self) -> bool:
        return self.status != DID_NOT_LEARN

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d

    def summary(self) -> str:
        if self.status == DID_NOT_LEARN:
            return "did not learn: " + "; ".join(self.reasons)
        if self.status == UNKNOWN:
            return "learning not checked: no validation examples"
        return (f"learned: validation accuracy {self.val_accuracy:.3f} vs majority-class baseline "
                f"{self.majority_baseline:.3f}; {self.predicted_labels} labels predicted")


def check_learning(val_labels: Sequence[str], val_predictions: Sequence[str],
                   train_label_counts: Mapping[str, int], *, collapse_share: float = 0.9,
                   margin: float = 0.02) -> LearningCheck:
    """Pure: the learning check from validation labels and answers and the training label counts."""
    n = len(val_labels)
    majority = max(sorted(train_label_counts), key=lambda l: train_label_counts[l]) if train_label_counts else ""
    if n == 0 or len(val_predictions) != n:
        return LearningCheck(UNKNOWN, 0.0, majority, 0.0, "", 0.0, 0.0, n, 0)
    acc = sum(p == y for p, y in zip(val_predictions, val_labels)) / n
    base = sum(y == majority for y in val_labels) / n
    pc = Counter(val_predictions)
    top, top_n = max(sorted(pc.items()), key=lambda kv: kv[1])
    top_share = top_n / n
    val_top_share = max(Counter(val_labels).values()) / n
    reasons = []
    if top_share >= collapse_share and val_top_share < collapse_share:
        reasons.append(f"{top_share:.0%} of validation answers are '{top}' (the most frequent validation label "
                       f"is {val_top_share:.0%} of them)")
    if acc <= base + margin and base < 1.0:
        reasons.append(f"validation accuracy {acc:.3f} is at the majority-class baseline {base:.3f} "
                       f"(always answering '{majority}')")
    return LearningCheck(DID_NOT_LEARN if reasons else LEARNED, acc, majority, base, top, top_share, val_top_share,
                         n, len(pc), tuple(reasons))
