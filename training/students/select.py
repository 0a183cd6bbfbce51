"""Train the student kinds a task names, compare them on validation, keep the best.

    train_student(cfg, labels, train, val, out_dir) -> Selection

With ``student = "auto"`` every kind in ``candidates`` is trained on the same split; the winner
is the one with the highest validation accuracy, ties going to the lower validation loss and
then to the cheaper kind (the order of ``candidates``). A candidate that did not learn (see
learning.py) never wins while another one learned. With ``search_trials`` > 0 the winning
fine-tuned kind is then searched (Optuna TPE: learning rate, steps, LoRA rank) within
``search_budget_s``; a trial replaces the winner only if it scores better on validation.
The winner's files end up in ``out_dir``; every candidate and trial is recorded in the
Selection (written to the version's lineage by the worker).
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from training.students.config import DEFAULT_LR, DEFAULT_MAX_LENGTH, DEFAULT_TARGETS, TrainConfig
from training.students.learning import LearningCheck, check_learning
from training.students.loop import FitResult, ProgressFn

log = logging.getLogger(__name__)

TrainFn = Callable[[str, TrainConfig, Sequence[str] | None, list, list, Path, ProgressFn | None], FitResult]


@dataclass
class Candidate:
    kind: str
    val_accuracy: float
    val_loss: float
    train_seconds: float
    steps: int
    learning: dict
    hyperparameters: dict
    source: str = "comparison"        # or "search"

    def key(self) -> tuple:
        learned = self.learning.get("status") != "did not learn"
        loss = self.val_loss if math.isfinite(self.val_loss) else math.inf
        return (learned, self.val_accuracy, -loss)


@dataclass
class Selection:
    kind: str
    cfg: TrainConfig
    fit: FitResult
    learning: LearningCheck
    candidates: list[Candidate] = field(default_factory=list)
    search: dict | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "reason": self.reason, "learning": self.learning.to_dict(),
                "candidates": [asdict(c) for c in self.candidates], "search": self.search,
                "hyperparameters": self.cfg.to_dict()}


def kind_config(cfg: TrainConfig, kind: str) -> TrainConfig:
    """The config one kind trains with (a causal LM candidate gets its own base and defaults)."""
    if kind == "causal_lm" and cfg.student == "auto":
        return replace(cfg, student=kind, base_model=cfg.causal_base_model,
                       target_modules=DEFAULT_TARGETS["causal_lm"], learning_rate=DEFAULT_LR["causal_lm"],
                       max_length=DEFAULT_MAX_LENGTH["causal_lm"], quantization="none" if cfg.quantization == "auto"
                       else cfg.quantization)
    return replace(cfg, student=kind)


def train_kind(kind: str, cfg: TrainConfig, labels: Sequence[str] | None, train: list, val: list,
               out_dir: Path, progress: ProgressFn | None = None) -> FitResult:
    """Train one kind into out_dir; FitResult.val_predictions holds its validation answers
    (classification kinds, and causal_lm when compared with others)."""
    if kind == "embedding_head":
        from training.students.head import train_head

        return train_head(cfg, labels, train, val, out_dir, progress)
    if kind in ("encoder_classifier", "encoder_full"):
        from training.students.encoder import train_encoder

        return train_encoder(cfg, labels, train, val, out_dir, progress, full=kind == "encoder_full")
    from training.students.causal_lm import CausalPredictor, train_causal

    res = train_causal(cfg, train, val, out_dir, progress)
    if val and cfg.student == "causal_lm" and labels is not None:
        answers = CausalPredictor(out_dir, cfg.base_model, cfg.quantization).predict([r["input"] for r in val])
        res.val_predictions = answers
    return res


def _val_metrics(kind: str, fit: FitResult, val: list) -> tuple[float, float]:
    if fit.val_predictions and val:
        acc = sum(p == r["output"] for p, r in zip(fit.val_predictions, val)) / len(val)
    else:
        acc = 0.0
    best = fit.history[fit.best_epoch - 1] if fit.best_epoch and fit.history else {}
    loss = best.get("val_loss", math.inf) if kind != "causal_lm" else math.inf  # token loss: not comparable
    return acc, float(loss)


def _candidate(kind: str, cfg: TrainConfig, fit: FitResult, val: list, train: list, source: str) -> Candidate:
    acc, loss = _val_metrics(kind, fit, val)
    lc = check_learning([r["output"] for r in val], fit.val_predictions, Counter(r["output"] for r in train))
    hp = {"learning_rate": cfg.full_learning_rate if kind == "encoder_full" else cfg.learning_rate,
          "steps": fit.steps, "lora_r": cfg.lora_r if kind == "encoder_classifier" else None}
    if kind in ("encoder_classifier", "encoder_full"):     # what precision = "auto" resolved to here
        from training.students.encoder import use_bf16

        hp["precision"] = "bf16" if use_bf16(cfg.precision) else "fp32"
    return Candidate(kind, acc, loss, round(fit.train_seconds, 3), fit.steps, lc.to_dict(), hp, source)


def _reason(winner: Candidate, others: list[Candidate]) -> str:
    if not others:
        return f"{winner.kind} was the only kind trained (validation accuracy {winner.val_accuracy:.3f})"
    rest = ", ".join(f"{c.kind} {c.val_accuracy:.3f}" + (" (did not learn)" if c.learning.get("status") ==
                                                          "did not learn" else "") for c in others)
    tie = [c for c in others if abs(c.val_accuracy - winner.val_accuracy) < 1e-12]
    why = " (tied on accuracy; lower validation loss)" if tie else ""
    return (f"{winner.kind} won on validation accuracy {winner.val_accuracy:.3f}{why} against {rest}; "
            f"it trained in {winner.train_seconds:.0f} s")


def train_student(cfg: TrainConfig, labels: Sequence[str] | None, train: list, val: list, out_dir: Path,
                  progress: ProgressFn | None = None, *, train_fn: TrainFn = train_kind) -> Selection:
    """Train cfg.kinds(), pick the best on validation, optionally search it; winner saved in out_dir."""
    out_dir = Path(out_dir)
    work = Path(tempfile.mkdtemp(prefix="candidates-", dir=out_dir.parent if out_dir.parent.exists() else None))
    try:
        done: list[tuple[Candidate, TrainConfig, FitResult, Path]] = []
        for kind in cfg.kinds():
            kcfg = kind_config(cfg, kind)
            kdir = work / kind
            t = time.monotonic()
            fit = train_fn(kind, kcfg, labels, train, val, kdir, progress)
            fit.train_seconds = fit.train_seconds or time.monotonic() - t
            c = _candidate(kind, kcfg, fit, val, train, "comparison")
            log.info("candidate %s: validation accuracy %.4f, loss %.4f, %s, %.1f s", kind, c.val_accuracy,
                     c.val_loss, c.learning["status"], c.train_seconds)
            done.append((c, kcfg, fit, kdir))
        best = max(done, key=lambda d: d[0].key())          # max keeps the first of equals: candidate order
        search = None
        if cfg.search_trials and val and best[0].kind in ("encoder_classifier", "encoder_full"):
            from training.students.search import search_kind

            search, found = search_kind(best[1], best[0], labels, train, val, work / "search", train_fn,
                                        progress, _candidate)
            if found is not None and found[0].key() > best[0].key():
                best = found
                done.append(found)
        winner, wcfg, wfit, wdir = best
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.move(str(wdir), str(out_dir))
        others = [d[0] for d in done if d is not best and d[0].source == "comparison"]
        learning = LearningCheck(**{**winner.learning, "reasons": tuple(winner.learning["reasons"])})
        sel = Selection(winner.kind, wcfg, wfit, learning, [d[0] for d in done], search, _reason(winner, others))
        log.info("selected %s: %s", winner.kind, sel.reason)
        return sel
    finally:
        shutil.rmtree(work, ignore_errors=True)
