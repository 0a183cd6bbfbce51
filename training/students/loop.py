"""One training loop for the gradient-trained students: AdamW, warm-up then linear or cosine
decay, a length in optimizer steps (or epochs), evaluation at fixed intervals, early stopping on
the validation metric (ties broken by validation loss), and the best checkpoint (not the last) kept."""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

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
    val_predictions: list = field(default_factory=list)   # the kept model's validation answers


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


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int,
                           group: int = 8) -> Callable[[int], list[list[int]]]:
    """make_batches for fit() with little padding: each epoch the examples are shuffled (seeded),
    cut into pools of ``group`` batches, each pool sorted by length and cut into batches, and
    the batches shuffled. A batch is padded to its own longest example, so batches of similar
    lengths carry less padding; every example is still seen once per epoch in a random batch
    (the sort is within a pool of ``group * batch_size`` random examples, not over the data)."""
    n = len(lengths)
    pool = max(1, batch_size * max(1, group))

    def make_batches(epoch: int) -> list[list[int]]:
        rng = random.Random(f"{seed}:{epoch}")   # an epoch's batches do not depend on earlier calls
        order = list(range(n))
        rng.shuffle(order)
        batches: list[list[int]] = []
        for i in range(0, n, pool):
            chunk = sorted(order[i:i + pool], key=lambda j: lengths[j])
            batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
        rng.shuffle(batches)
        return batches

    return make_batches


def better(metric: float, best: float | None, mode: str, tie: float | None = None,
           best_tie: float | None = None) -> bool:
    """Is ``metric`` an improvement on ``best``? On a tie (within 1e-12), a lower ``tie`` value
    (validation loss) wins: accuracy on a small validation set often stays flat while the loss
    still falls, and the earliest epoch is then rarely the best one."""
    if best is None:
        return True
    if mode == "max":
        if metric > best + 1e-12:
            return True
        tied = metric >= best - 1e-12
    else:
        if metric < best - 1e-12:
            return True
        tied = metric <= best + 1e-12
    return bool(tied and tie is not None and best_tie is not None and tie < best_tie - 1e-12)


def lr_factor(step: int, total: int, warmup: int, schedule: str = "linear") -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based): linear warm-up
    over ``warmup`` steps, then linear or cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * frac))
    if schedule == "constant":
        return 1.0
    return max(0.0, 1.0 - frac)


def steps_for(n_examples: int, batch_size: int, epochs: int, min_steps: int, max_steps: int,
              steps: int = 0) -> int:
    """Optimizer steps of a run: ``steps`` when set, else ``epochs`` passes over the data
    bounded by [min_steps, max_steps] (a 250-example pool gets enough updates to move the head,
    a 50k pool does not run for hours)."""
    if steps:
        return steps
    per_epoch = max(1, math.ceil(n_examples / max(1, batch_size)))
    return int(min(max_steps, max(min_steps, per_epoch * epochs)))


def fit(model, make_batches: Callable[[int], list], step_loss: Callable[[Any], Any],
        evaluate: Callable[[], dict] | None, *, epochs: int, learning_rate: float, weight_decay: float,
        warmup_share: float, patience: int, metric: str, mode: str, desc: str,
        progress: ProgressFn | None = None, n_examples: int = 0, max_steps: int | None = None,
        eval_every: int | None = None, schedule: str = "linear", tie_metric: str | None = None) -> FitResult:
    """Train ``model`` in place; on return it holds the weights of the best evaluation.

    Epoch mode (``max_steps`` None): ``epochs`` passes, evaluated after each. Step mode: exactly
    ``max_steps`` optimizer steps (batches drawn epoch after epoch), evaluated every
    ``eval_every`` steps and at the end; each evaluation is one row of the history (its
    "epoch" is the evaluation's number). Ties on ``metric`` go to the lower ``tie_metric``.
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    per_epoch = len(make_batches(0))
    if max_steps is None:
        total = max(1, per_epoch * epochs)
        eval_every = per_epoch
    else:
        total = max(1, int(max_steps))
        eval_every = max(1, int(eval_every or max(1, total // 5)))
    warm = int(total * warmup_share)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warm, schedule))
    bar = Progress(total, desc, progress)
    best, best_tie, best_state, best_epoch, bad = None, None, None, 0, 0
    history: list[dict] = []
    t0 = time.monotonic()
    step = 0
    rounds = 0
    epoch = 0
    run_loss, run_n = 0.0, 0
    stop = False
    try:
        while not stop and step < total:
            epoch += 1
            if max_steps is None and epoch > epochs:
                break
            model.train()
            for batch in make_batches(epoch):
                loss = step_loss(batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                lv = float(loss.detach())
                run_loss += lv
                run_n += 1
                bar.update({"epoch": epoch, "loss": lv})
                if step % eval_every == 0 or step == total:
                    rounds += 1
                    row = {"epoch": rounds, "step": step, "train_loss": run_loss / max(1, run_n)}
                    run_loss, run_n = 0.0, 0
                    if evaluate is not None:
                        model.eval()
                        with torch.no_grad():
                            row.update(evaluate())
                        model.train()
                    history.append(row)
                    log.info("%s evaluation %d (step %d/%d): %s", desc, rounds, step, total, row)
                    value = row.get(metric, -row["train_loss"] if mode == "max" else row["train_loss"])
                    if isinstance(value, float) and math.isnan(value):
                        value = -math.inf if mode == "max" else math.inf
                    tie = row.get(tie_metric) if tie_metric else None
                    if better(value, best, mode, tie, best_tie):
                        best, best_tie, best_epoch, bad = value, tie, rounds, 0
                        best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
                    else:
                        bad += 1
                        if evaluate is not None and bad > patience:
                            log.info("%s: early stop after evaluation %d (best %d)", desc, rounds, best_epoch)
                            stop = True
                            break
                if step >= total:
                    break
    finally:
        bar.close()
    if best_state is not None:
        named = dict(model.named_parameters())
        with torch.no_grad():
            for n, v in best_state.items():
                named[n].copy_(v)
    secs = time.monotonic() - t0
    seen = step * (n_examples / max(1, per_epoch)) if n_examples else 0
    return FitResult(best_epoch, float(best if best is not None else 0.0), rounds, step, history, secs,
                     seen / secs if secs > 0 else 0.0)
