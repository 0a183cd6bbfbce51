"""Student "embedding_head": frozen MiniLM sentence embeddings (mean pooling, L2-normalised, as
the model was trained) and a linear softmax head on top (SetFit-style without the contrastive
step). Only the embeddings of the pool are computed once; the head trains in about a second, so
its L2 strength is chosen on validation from a small grid every run. Loading and pooling are
serving.encoders' (the model server answers with the same embedding and the saved head).

    <adapter dir>/head.safetensors    weight [labels, dim], bias [labels]
    <adapter dir>/labels.json
    <adapter dir>/student.json        {"kind": "embedding_head", "base_model": ..., "max_length": ..., "l2": ...}
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Sequence

from serving.encoders import embed, load_sentence_encoder as load_encoder
from training.students.config import TrainConfig
from training.students.encoder import class_weights
from training.students.loop import FitResult, ProgressFn

L2_GRID = (1e-4, 1e-3, 1e-2)


def fit_head(x, y, n_labels: int, l2: float, weights: list[float] | None = None, iters: int = 200):
    """Multinomial logistic regression by L-BFGS on full batch; returns (weight, bias)."""
    import torch

    torch.manual_seed(0)
    lin = torch.nn.Linear(x.shape[1], n_labels)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    w = torch.tensor(weights) if weights else None
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=iters, history_size=20,
                            line_search_fn="strong_wolfe")
    # the scale of x is 1 (normalised rows): a temperature lets the head reach confident logits
    xs = x * 10.0

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xs), y, weight=w) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin.weight.detach() * 10.0, lin.bias.detach()


def _scores(x, weight, bias):
    return x @ weight.T + bias


def train_head(cfg: TrainConfig, labels: Sequence[str], train_rows: list[dict], val_rows: list[dict],
               out_dir: Path, progress: ProgressFn | None = None) -> FitResult:
    import torch
    from safetensors.torch import save_file

    labels = list(labels)
    index = {l: i for i, l in enumerate(labels)}
    unknown = sorted({r["output"] for r in train_rows + val_rows} - set(index))
    if unknown:
        raise ValueError(f"examples carry outputs that are not labels of the task: {unknown[:5]}")
    t0 = time.monotonic()
    torch.manual_seed(cfg.seed)
    tok, enc = load_encoder(cfg.base_model)
    x_tr = embed(tok, enc, [r["input"] for r in train_rows], cfg.max_length)
    x_va = embed(tok, enc, [r["input"] for r in val_rows], cfg.max_length)
    y_tr = torch.tensor([index[r["output"]] for r in train_rows])
    y_va = torch.tensor([index[r["output"]] for r in val_rows])
    counts = [int((y_tr == i).sum()) for i in range(len(labels))]
    w = class_weights(counts, cfg.class_weights)
    history, best = [], None
    for n, l2 in enumerate(L2_GRID, 1):
        weight, bias = fit_head(x_tr, y_tr, len(labels), l2, w)
        row = {"epoch": n, "l2": l2,
               "train_loss": float(torch.nn.functional.cross_entropy(_scores(x_tr, weight, bias), y_tr))}
        if len(val_rows):
            s = _scores(x_va, weight, bias)
            row["val_accuracy"] = float((s.argmax(-1) == y_va).float().mean())
            row["val_loss"] = float(torch.nn.functional.cross_entropy(s, y_va))
            key = (row["val_accuracy"], -row["val_loss"])
        else:
            key = (0.0, -row["train_loss"])
        history.append(row)
        if progress:
            progress(n, len(L2_GRID), {"epoch": n, "loss": row["train_loss"]})
        if best is None or key > best[0]:
            best = (key, n, l2, weight, bias)
    _, best_n, l2, weight, bias = best
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({"weight": weight.contiguous(), "bias": bias.contiguous()}, str(out_dir / "head.safetensors"))
    (out_dir / "labels.json").write_text(json.dumps(labels))
    (out_dir / "student.json").write_text(json.dumps({"kind": "embedding_head", "base_model": cfg.base_model,
                                                      "max_length": cfg.max_length, "l2": l2, "pooling": "mean",
                                                      "normalize": True}))
    secs = time.monotonic() - t0
    res = FitResult(best_n, history[best_n - 1].get("val_accuracy", math.nan), len(history), len(history),
                    history, secs, len(train_rows) / secs if secs > 0 else 0.0)
    if len(val_rows):
        res.val_predictions = [labels[i] for i in _scores(x_va, weight, bias).argmax(-1).tolist()]
    return res
