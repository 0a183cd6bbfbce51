"""One training loop for both students: AdamW, linear warm-up/decay, evaluation each epoch,
early stopping on the validation metric, and the best checkpoint (not the last) kept."""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, dict], None]


class Progress:
    """A progress bar on a terminal, log lines otherwise; also forwards to a callback."""

    def __init__(self, total: int, desc: str, callback: ProgressFn | None = None,
                 every_seconds: float = 10.0) -> None:
        self.total, self.callback, self.every = total, callback, every_seconds
        self.step = 0
        self._last_log = 0.0
        self._bar = None
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm
                self._bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)
            except ImportError:  # pragma: no cover
                pass
        self.desc = desc

    def update(self, info: dict) -> None:
        self.step += 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in info.items()})
        else:
            now = time.monotonic()
            if now - self._last_log >= self.every or self.step == self.total:
                self._last_log = now
                extras = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
                log.info("%s step %d/%d %s", self.desc, self.step, self.total, extras)
        if self.callback:
            self.callback(self.step, self.total, info)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@dataclass
class FitResult:
    best_epoch: int
    best_metric: float
    epochs_run: int
    steps: int
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    examples_per_second: float = 0.0


def shuffled_batches(n: int, batch_size: int, seed: int) -> Callable[[int], list[list[int]]]:
    """make_batches for fit(): index batches over n examples, in order for epoch 0 (so the
    step count is known up front), then reshuffled each epoch from one seeded generator."""
    rng = random.Random(seed)

    def make_batches(epoch: int) -> list[list[int]]:
        order = list(range(n))
        if epoch:
            rng.shuffle(order)
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]

    return make_batches


def better(metric: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return metric > best + 1e-12 if mode == "max" else metric < best - 1e-12


def fit(model, make_batches: Callable[[int], list], step_loss: Callable[[Any], Any],
        evaluate: Callable[[], dict] | None, *, epochs: int, learning_rate: float, weight_decay: float,
        warmup_share: float, patience: int, metric: str, mode: str, desc: str,
        progress: ProgressFn | None = None, n_examples: int = 0) -> FitResult:
    """Train ``model`` in place; on return it holds the weights of the best epoch."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    per_epoch = len(make_batches(0))
    total = max(1, per_epoch * epochs)
    warm = int(total * warmup_share)

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / max(1, warm)
        return max(0.0, (total - step) / max(1, total - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    bar = Progress(total, desc, progress)
    best, best_state, best_epoch, bad = None, None, 0, 0
    history: list[dict] = []
    t0 = time.monotonic()
    step = 0
    epochs_run = 0
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            epoch_loss = 0.0
            batches = make_batches(epoch)
            for batch in batches:
                loss = step_loss(batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                lv = float(loss.detach())
                epoch_loss += lv
                bar.update({"epoch": epoch, "loss": lv})
            epochs_run = epoch
            row = {"epoch": epoch, "train_loss": epoch_loss / max(1, len(batches))}
            if evaluate is not None:
                model.eval()
                with torch.no_grad():
                    row.update(evaluate())
            history.append(row)
            log.info("%s epoch %d: %s", desc, epoch, row)
            value = row.get(metric, -row["train_loss"] if mode == "max" else row["train_loss"])
            if isinstance(value, float) and math.isnan(value):
                value = -math.inf if mode == "max" else math.inf
            if better(value, best, mode):
                best, best_epoch, bad = value, epoch, 0
                best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            else:
                bad += 1
                if evaluate is not None and bad > patience:
                    log.info("%s: early stop after epoch %d (best epoch %d)", desc, epoch, best_epoch)
                    break
    finally:
        bar.close()
    if best_state is not None:
        named = dict(model.named_parameters())
        with torch.no_grad():
            for n, v in best_state.items():
                named[n].copy_(v)
    secs = time.monotonic() - t0
    return FitResult(best_epoch, float(best if best is not None else 0.0), epochs_run, step, history, secs,
                     (n_examples * epochs_run) / secs if secs > 0 else 0.0)
