"""Student (b): a causal LM fine-tuned on chat-formatted examples (system, user, assistant).

The loss covers the assistant tokens only (everything up to the generation prompt is masked
with -100). LoRA on CPU or a plain GPU; QLoRA on CUDA: the base loaded in 4-bit NF4 with
double quantisation (bitsandbytes), the adapters trained in bf16.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from training.students.config import StudentSetupError, TrainConfig
from training.students.loop import FitResult, ProgressFn, fit, shuffled_batches, steps_for

os.environ.setdefault("HF_HUB_OFFLINE", "1")

IGNORE = -100


def messages(system: str, user: str, assistant: str | None = None) -> list[dict]:
    m = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    if assistant is not None:
        m.append({"role": "assistant", "content": assistant})
    return m


def _ids(out) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True)
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)


def encode_example(tok, system: str, user: str, assistant: str, max_length: int) -> dict:
    """input_ids and labels for one chat example; labels are -100 outside the assistant turn.

    The prompt (system + user + generation prompt) must be a prefix of the full conversation
    under the tokenizer's chat template; the assistant span is what follows it.
    """
    prompt = _ids(tok.apply_chat_template(messages(system, user), add_generation_prompt=True, tokenize=True))
    full = _ids(tok.apply_chat_template(messages(system, user, assistant), tokenize=True))
    if full[:len(prompt)] != prompt:
        raise ValueError("the chat template does not render the prompt as a prefix of the full "
                         "conversation; use a base model whose template does (most chat models)")
    if tok.eos_token_id is not None and (not full or full[-1] != tok.eos_token_id):
        full = full + [tok.eos_token_id]
    labels = [IGNORE] * len(prompt) + full[len(prompt):]
    # Truncate the prompt from the left if needed, never the answer.
    if len(full) > max_length:
        cut = len(full) - max_length
        if cut >= len(prompt):
            raise ValueError(f"an answer is longer than max_length={max_length}: raise [train] max_length")
        full, labels = full[cut:], labels[cut:]
    return {"input_ids": full, "labels": labels}


def collate(batch: list[dict], pad_id: int):
    import torch

    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[i, :n] = torch.tensor(b["input_ids"])
        labels[i, :n] = torch.tensor(b["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def use_4bit(cfg: TrainConfig) -> bool:
    import torch

    if cfg.quantization == "4bit":
        if not torch.cuda.is_available():
            raise StudentSetupError("[train] quantization = \"4bit\" (QLoRA) needs a CUDA GPU; "
                               "set quantization = \"none\" to train LoRA on CPU")
        return True
    return cfg.quantization == "auto" and torch.cuda.is_available()


def load_base(cfg: TrainConfig):
    """Tokenizer and base model, 4-bit NF4 with double quantisation when QLoRA applies."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from serving.engine import causal_base_kwargs
    from serving.gguf import resolve_base_model

    base = resolve_base_model(cfg.base_model)   # a GGUF file (or "smollm2") is converted once, cached
    tok = AutoTokenizer.from_pretrained(cfg.tokenizer or base, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(base, **causal_base_kwargs(use_4bit(cfg), error=StudentSetupError))
    return tok, model


def add_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    lcfg = LoraConfig(task_type=TaskType.CAUSAL_LM, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout, target_modules=list(cfg.target_modules))
    return get_peft_model(model, lcfg)


def train_causal(cfg: TrainConfig, train_rows: list[dict], val_rows: list[dict], out_dir: Path,
                 progress: ProgressFn | None = None, *, model=None, tokenizer=None) -> FitResult:
    """SFT with LoRA (QLoRA on CUDA). ``model``/``tokenizer`` may be given (tests build tiny ones)."""
    import torch

    torch.manual_seed(cfg.seed)
    if model is None or tokenizer is None:
        tokenizer, model = load_base(cfg)
    tok = tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    model = add_lora(model, cfg)
    device = next(model.parameters()).device
    enc_train = [encode_example(tok, cfg.system_prompt, r["input"], r["output"], cfg.max_length) for r in train_rows]
    enc_val = [encode_example(tok, cfg.system_prompt, r["input"], r["output"], cfg.max_length) for r in val_rows]
    make_batches = shuffled_batches(len(enc_train), cfg.batch_size, cfg.seed)

    def step_loss(idx):
        b = {k: v.to(device) for k, v in collate([enc_train[i] for i in idx], pad_id).items()}
        return model(**b).loss

    def evaluate():
        total, tokens = 0.0, 0
        for i in range(0, len(enc_val), cfg.batch_size):
            b = {k: v.to(device) for k, v in collate(enc_val[i:i + cfg.batch_size], pad_id).items()}
            n = int((b["labels"][:, 1:] != IGNORE).sum())
            total += float(model(**b).loss) * n
            tokens += n
        return {"val_loss": total / max(1, tokens)}

    total = steps_for(len(enc_train), cfg.batch_size, cfg.epochs, cfg.min_steps, cfg.max_steps, cfg.steps)
    result = fit(model, make_batches, step_loss, evaluate if enc_val else None, epochs=cfg.epochs,
                 learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, warmup_share=cfg.warmup_share,
                 patience=cfg.early_stopping_patience, metric="val_loss", mode="min", desc="sft",
                 progress=progress, n_examples=len(enc_train), max_steps=total,
                 eval_every=cfg.eval_every or max(1, total // 5), schedule=cfg.lr_schedule)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    (out_dir / "chat.json").write_text(json.dumps({"system_prompt": cfg.system_prompt,
                                                    "max_new_tokens": cfg.max_new_tokens}))
    return result


def generate(model, tok, system: str, inputs: Sequence[str], max_new_tokens: int = 64) -> list[str]:
    """Greedy answers, one prompt at a time (no padding subtleties)."""
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for text in inputs:
            ids = _ids(tok.apply_chat_template(messages(system, text), add_generation_prompt=True, tokenize=True))
            x = torch.tensor([ids], device=device)
            y = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                               do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id,
                               eos_token_id=tok.eos_token_id)
            out.append(tok.decode(y[0, len(ids):], skip_special_tokens=True).strip())
    return out


class CausalPredictor:
    def __init__(self, adapter_dir: Path, base_model: str, quantization: str = "auto"):
        from peft import PeftModel

        # the tokenizer saved with the adapter (its chat template is the one trained with)
        cfg = TrainConfig(student="causal_lm", base_model=base_model, quantization=quantization,
                          tokenizer=str(adapter_dir))
        tok, base = load_base(cfg)
        self.tok = tok
        self.model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
        chat = json.loads((Path(adapter_dir) / "chat.json").read_text())
        self.system, self.max_new = chat["system_prompt"], chat["max_new_tokens"]

    def predict(self, texts: Sequence[str]) -> list[str]:
        return generate(self.model, self.tok, self.system, texts, self.max_new)
