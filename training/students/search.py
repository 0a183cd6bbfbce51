"""A small hyperparameter search of one fine-tuned kind on the validation split (Optuna TPE).

Searched: the peak learning rate (log scale around the kind's default), the number of optimizer
steps, and the LoRA rank (encoder_classifier). The objective is validation accuracy, with the
validation loss as a tie-breaker. Trials start while the time budget lasts (a trial that started
finishes: the budget is checked before each one, against the time the last trial took).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path

log = logging.getLogger(__name__)

LR_RANGE = {"encoder_classifier": (5e-4, 1e-2), "encoder_full": (2e-5, 5e-4)}
RANKS = (4, 8, 16)


def search_kind(cfg, baseline, labels, train, val, workdir: Path, train_fn, progress, make_candidate):
    """Returns (record, best) where best is (Candidate, cfg, FitResult, dir) of the best trial or None."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kind = baseline.kind
    lo, hi = LR_RANGE[kind]
    base_steps = baseline.steps
    steps_lo = max(1, base_steps // 2)
    steps_hi = max(steps_lo + 1, base_steps * 2)
    step = 10 if steps_hi - steps_lo >= 40 else 1
    budget = cfg.search_budget_s
    t_start = time.monotonic()
    trials: list[dict] = []
    best = None
    sampler = optuna.samplers.TPESampler(seed=cfg.seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    last = baseline.train_seconds
    for n in range(cfg.search_trials):
        spent = time.monotonic() - t_start
        if spent + last > budget:
            log.info("search: budget %.0f s reached after %d trials", budget, n)
            break
        trial = study.ask()
        lr = trial.suggest_float("learning_rate", lo, hi, log=True)
        steps = trial.suggest_int("steps", steps_lo, steps_lo + (steps_hi - steps_lo) // step * step, step=step)
        tcfg = replace(cfg, steps=steps, **({"learning_rate": lr} if kind == "encoder_classifier"
                                            else {"full_learning_rate": lr}))
        if kind == "encoder_classifier":
            r = trial.suggest_categorical("lora_r", list(RANKS))
            tcfg = replace(tcfg, lora_r=r, lora_alpha=2 * r)
        tdir = workdir / f"trial-{n}"
        t = time.monotonic()
        fit = train_fn(kind, tcfg, labels, train, val, tdir, progress)
        last = time.monotonic() - t
        fit.train_seconds = fit.train_seconds or last
        c = make_candidate(kind, tcfg, fit, val, train, "search")
        value = c.val_accuracy - 1e-3 * (c.val_loss if math.isfinite(c.val_loss) else 10.0)
        study.tell(trial, value)
        trials.append({"trial": n, **trial.params, "val_accuracy": c.val_accuracy, "val_loss": c.val_loss,
                       "seconds": round(last, 2), "learning": c.learning["status"]})
        log.info("search trial %d %s: validation accuracy %.4f loss %.4f (%.0f s)", n, trial.params,
                 c.val_accuracy, c.val_loss, last)
        if best is None or c.key() > best[0].key():
            best = (c, tcfg, fit, tdir)
    record = {"kind": kind, "sampler": "optuna.TPESampler", "budget_s": budget, "trials_asked": cfg.search_trials,
              "trials_run": len(trials), "seconds": round(time.monotonic() - t_start, 2), "trials": trials,
              "baseline": {"val_accuracy": baseline.val_accuracy, "val_loss": baseline.val_loss,
                           **baseline.hyperparameters},
              "best": ({"val_accuracy": best[0].val_accuracy, "val_loss": best[0].val_loss,
                        **best[0].hyperparameters} if best else None),
              "improved": bool(best and best[0].key() > baseline.key())}
    return record, best
