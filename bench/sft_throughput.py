"""GPU SFT throughput: LoRA and QLoRA, padded batching vs padding-free packing, in one run.

For each model (Qwen2 ~0.5B and ~1.5B shapes, randomly initialised: nothing is downloaded), each
method (LoRA on a bf16 base; QLoRA on a 4-bit NF4 + double-quant base with bf16 compute, via
bitsandbytes from the `gpu` extra) and each batching mode, it trains LoRA adapters (the project's
own ``training.causal_lm.add_lora``) on a synthetic SFT set and reports:

* real (non-pad) tokens/s over the measured steps (after warm-up), mean/median step time;
* padded-token share (pad tokens / tokens fed to the model);
* peak GPU memory (``torch.cuda.max_memory_allocated``, reset before each mode; it includes the
  resident weights);
* per (model, method): packed / padded ratios of tokens/s, step time and peak memory.

The synthetic set: lognormal sequence lengths clipped to [--min-len, --max-len] (seeded), each a
ChatML-like prompt followed by an answer; labels are -100 on the prompt (loss on answers only).
Examples are grouped in dataset order (no length grouping) into steps of at most --batch-tokens
real tokens; both modes train on exactly the same groups:

* padded: ``training.causal_lm.collate`` (right-pad each batch to its longest sequence, attention
  mask) -- the baseline;
* packed: ``transformers.DataCollatorWithFlattening`` (one row, position_ids restarting per
  sequence, no attention mask; flash-attention varlen kwargs when flash_attention_2 is used).

Attention: flash_attention_2 when ``flash_attn`` is importable, else sdpa (override with --attn).
Whether packing is exact (no attention across packed sequences) depends on the implementation and
the transformers version, so it is *measured* per (model, method) before training: logits of the
packed row vs the padded batch on the same examples (eval mode, no grad), with a deliberately
leaky concatenation (no position restart) as the scale of a leak. flash_attention_2 uses varlen
kernels (exact); with sdpa/eager, transformers 5.x (checked: 5.17) builds a block-diagonal mask
from the restarting position_ids when no attention mask is given (exact, but materialised: O(T^2)
memory for a T-token row, and no flash kernel); older 4.x releases did not, hence the check.

    python bench/sft_throughput.py                          # 0.5b,1.5b x lora,qlora x padded,packed
    python bench/sft_throughput.py --models 0.5b --methods lora --steps 10
    python bench/sft_throughput.py --smoke                  # tiny Qwen2 on CPU, fp32, LoRA, 2 steps

Results go to bench/results/sft_gpu.json (--smoke: bench/results/sft_smoke.json) and a table is
printed. An OOM or a missing bitsandbytes is recorded per config as an error; the run goes on.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

IGNORE = -100

# Qwen2-0.5B / Qwen2-1.5B shapes (the real architectures, random weights).
MODELS: dict[str, dict] = {
    "0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    "1.5b": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    "tiny": dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
}
COMMON = dict(max_position_embeddings=32768, rms_norm_eps=1e-6, use_sliding_window=False)
METHODS = ("lora", "qlora")
MODES = ("padded", "packed")
KEYS_PER_MODE = ("mode", "examples", "steps_measured", "real_tokens", "processed_tokens", "label_tokens",
                 "padded_token_share", "tokens_per_s", "processed_tokens_per_s", "step_time_s_mean",
                 "step_time_s_median", "peak_memory_bytes", "peak_memory_gib", "final_loss", "error")


# ------------------------------------------------------------------ synthetic SFT data

def special_ids(vocab: int) -> dict[str, int]:
    """Qwen2's ids for <|endoftext|> (pad), <|im_start|>, <|im_end|> (eos); the top 3 of a small vocab."""
    if vocab >= 151646:
        return {"pad": 151643, "im_start": 151644, "eos": 151645}
    return {"pad": vocab - 3, "im_start": vocab - 2, "eos": vocab - 1}


def synthetic_sft(n: int, vocab: int, *, min_len: int = 32, max_len: int = 1024, median: float = 256.0,
                  sigma: float = 0.8, seed: int = 0) -> list[dict]:
    """n chat-shaped examples: input_ids, labels (-100 on the prompt), n_prompt, n_answer.

    Lengths ~ lognormal(log(median), sigma) clipped to [min_len, max_len]; the answer is 10-50% of
    the sequence (at least 2 tokens, ending with eos), the prompt the rest (at least 4 tokens,
    starting with an <|im_start|> system header)."""
    rng = random.Random(seed)
    sp = special_ids(vocab)
    hi = min(sp.values())  # ordinary tokens are below the specials
    out = []
    for _ in range(n):
        length = int(round(min(max(rng.lognormvariate(math.log(median), sigma), min_len), max_len)))
        n_answer = max(2, min(length - 4, int(length * rng.uniform(0.1, 0.5))))
        n_prompt = length - n_answer
        prompt = [sp["im_start"]] + [rng.randrange(0, hi) for _ in range(n_prompt - 2)] + [sp["im_start"]]
        answer = [rng.randrange(0, hi) for _ in range(n_answer - 1)] + [sp["eos"]]
        out.append({"input_ids": prompt + answer, "labels": [IGNORE] * n_prompt + answer,
                    "n_prompt": n_prompt, "n_answer": n_answer})
    return out


def token_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Consecutive groups of example indices with at most batch_tokens real tokens each (a longer
    example gets a group of its own)."""
    groups, cur, cur_tokens = [], [], 0
    for i, n in enumerate(lengths):
        if cur and cur_tokens + n > batch_tokens:
            groups.append(cur)
            cur, cur_tokens = [], 0
        cur.append(i)
        cur_tokens += n
    if cur:
        groups.append(cur)
    return groups


def make_plan(steps: int, warmup: int, vocab: int, batch_tokens: int, *, min_len: int, max_len: int,
              median: float, seed: int) -> tuple[list[dict], list[list[int]]]:
    """Enough examples for warmup + steps full batches; returns (examples, groups)."""
    need = warmup + steps
    n = max(8, need * max(1, batch_tokens // int(median)) * 2)
    while True:
        data = synthetic_sft(n, vocab, min_len=min_len, max_len=max_len, median=median, seed=seed)
        groups = token_batches([len(d["input_ids"]) for d in data], batch_tokens)
        if len(groups) > need:  # drop the last (possibly short) group
            groups = groups[:need]
            used = max(groups[-1]) + 1
            return data[:used], groups
        n *= 2


# ------------------------------------------------------------------ collation

def collate_padded(batch: list[dict], pad_id: int) -> dict:
    from training.students.causal_lm import collate

    return collate([{"input_ids": b["input_ids"], "labels": b["labels"]} for b in batch], pad_id)


def collate_packed(batch: list[dict], flash_kwargs: bool) -> dict:
    from transformers import DataCollatorWithFlattening

    c = DataCollatorWithFlattening(return_flash_attn_kwargs=flash_kwargs)
    return c([{"input_ids": b["input_ids"], "labels": b["labels"]} for b in batch], return_tensors="pt")


def collate(mode: str, batch: list[dict], pad_id: int, attn: str) -> dict:
    if mode == "padded":
        return collate_padded(batch, pad_id)
    if mode == "packed":
        return collate_packed(batch, flash_kwargs=attn.startswith("flash_attention"))
    raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")


def batch_counts(b: dict) -> dict:
    """Tokens fed to the model, real tokens, and label (loss) tokens of a collated batch."""
    ids = b["input_ids"]
    processed = ids.numel()
    real = int(b["attention_mask"].sum()) if "attention_mask" in b else processed
    return {"processed_tokens": processed, "real_tokens": real, "label_tokens": int((b["labels"] != IGNORE).sum())}


# ------------------------------------------------------------------ environment

def pick_attn(requested: str, device: str) -> str:
    if requested != "auto":
        return requested
    if device == "cuda":
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def versions() -> dict:
    import peft
    import torch
    import transformers

    v = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
         "peft": peft.__version__, "bitsandbytes": None, "flash_attn": None, "cuda": torch.version.cuda}
    for name in ("bitsandbytes", "flash_attn"):
        try:
            v[name] = __import__(name).__version__
        except Exception:  # not installed, or a broken CUDA build
            pass
    return v


def device_info(device: str) -> dict:
    import torch

    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        return {"type": "cuda", "name": torch.cuda.get_device_name(0), "memory_gib": round(p.total_memory / 2**30, 1),
                "capability": f"{p.major}.{p.minor}"}
    return {"type": "cpu", "name": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _free(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------ model

def qwen2_config(name: str):
    from transformers import Qwen2Config

    return Qwen2Config(**MODELS[name], **COMMON)


def n_params(name: str) -> int:
    """Parameter count of the base model (embeddings counted once when tied)."""
    m = MODELS[name]
    h, i, L, v = m["hidden_size"], m["intermediate_size"], m["num_hidden_layers"], m["vocab_size"]
    kv = h // m["num_attention_heads"] * m["num_key_value_heads"]
    attn = h * h + h + 2 * (h * kv + kv) + h * h  # q (bias), k/v (bias), o
    layer = attn + 3 * h * i + 2 * h
    return v * h * (1 if m["tie_word_embeddings"] else 2) + L * layer + h


def build_model(name: str, method: str, attn: str, device: str, dtype, seed: int, tc):
    """Randomly initialised Qwen2 of the given shape with LoRA adapters (training.causal_lm.add_lora).

    LoRA: built in `dtype` directly on the device. QLoRA: saved once to a temp dir and loaded with
    BitsAndBytesConfig(nf4, double quant, bf16 compute) -- 4-bit loading goes through from_pretrained."""
    import torch
    from transformers import AutoModelForCausalLM

    from training.students.causal_lm import add_lora

    cfg = qwen2_config(name)
    torch.manual_seed(seed)
    if method == "lora":
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation=attn)
    elif method == "qlora":
        if device != "cuda":
            raise RuntimeError("QLoRA needs a CUDA GPU")
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError as exc:
            raise RuntimeError(f"QLoRA needs bitsandbytes: pip install -e '.[gpu]' ({exc})") from None
        with tempfile.TemporaryDirectory() as d:
            with torch.device(device):
                base = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
            base.save_pretrained(d)
            del base
            _free(device)
            q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
            model = AutoModelForCausalLM.from_pretrained(d, quantization_config=q, dtype=torch.bfloat16,
                                                         device_map={"": 0}, attn_implementation=attn,
                                                         local_files_only=True)
    else:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    model.config.use_cache = False
    return add_lora(model, tc)  # QLoRA: prepare_model_for_kbit_training (gradient checkpointing on)


def enable_checkpointing(model) -> None:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()


# ------------------------------------------------------------------ exactness of packing

def packing_check(model, data: list[dict], pad_id: int, attn: str, device: str, n: int = 3, max_len: int = 96) -> dict:
    """Compare per-token logits of the packed row with the padded batch on the same n examples
    (truncated to max_len), and with a leaky concatenation (positions 0..T-1, no restart) as the
    scale of cross-sequence attention, on the 2nd..nth sequences. exact = the mean |difference| of
    packed vs padded is < 10% of the leak's (bf16 kernels differ a little even when exact)."""
    import torch

    ex = []
    for d in data[:n]:
        k = min(max_len, len(d["input_ids"]))
        ex.append({"input_ids": d["input_ids"][:k], "labels": d["labels"][:k]})
    lens = [len(e["input_ids"]) for e in ex]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            pad = {k: v.to(device) for k, v in collate("padded", ex, pad_id, attn).items()}
            ref = model(input_ids=pad["input_ids"], attention_mask=pad["attention_mask"]).logits.float()
            ref = torch.cat([ref[i, :L] for i, L in enumerate(lens)])
            pk = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in collate("packed", ex, pad_id, attn).items()}
            pk.pop("labels")
            got = model(**pk).logits.float()[0]
            ids = pk["input_ids"]
            leak = model(input_ids=ids, position_ids=torch.arange(ids.shape[1], device=device)[None]).logits.float()[0]
    finally:
        model.train(was_training)
    # the first sequence is identical in all three (causal); compare the later ones
    s = lens[0]
    e_packed, e_leak = (got[s:] - ref[s:]).abs(), (leak[s:] - ref[s:]).abs()
    return {"max_abs_logit_diff_packed_vs_padded": float(e_packed.max()),
            "max_abs_logit_diff_leaky_vs_padded": float(e_leak.max()),
            "mean_abs_logit_diff_packed_vs_padded": float(e_packed.mean()),
            "mean_abs_logit_diff_leaky_vs_padded": float(e_leak.mean()),
            "exact": bool(e_packed.mean() < 0.1 * e_leak.mean()), "examples": len(ex), "lengths": lens}


# ------------------------------------------------------------------ the timed loop

def run_mode(model, mode: str, data: list[dict], groups: list[list[int]], warmup: int, pad_id: int, attn: str,
             device: str, lr: float) -> dict:
    import torch

    out: dict = {"mode": mode}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, counts, loss = [], {"processed_tokens": 0, "real_tokens": 0, "label_tokens": 0}, None
    examples = 0
    b = loss_t = None
    try:
        for step, g in enumerate(groups):
            b = collate(mode, [data[i] for i in g], pad_id, attn)
            c = batch_counts(b)
            b = {k: (v.to(device, non_blocking=True) if hasattr(v, "to") else v) for k, v in b.items()}
            _sync(device)
            t0 = time.perf_counter()
            loss_t = model(**b).loss
            loss_t.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync(device)
            dt = time.perf_counter() - t0
            if step >= warmup:
                times.append(dt)
                examples += len(g)
                for k in counts:
                    counts[k] += c[k]
            loss = float(loss_t.detach())
    except Exception as exc:  # torch.cuda.OutOfMemoryError among others
        out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    finally:
        b = loss_t = None  # drop the batch / graph before freeing (an OOM leaves them bound)
        opt.zero_grad(set_to_none=True)
        del opt
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    total = sum(times)
    out.update({
        "examples": examples, "steps_measured": len(times), **counts,
        "padded_token_share": (round(1 - counts["real_tokens"] / counts["processed_tokens"], 4)
                               if counts["processed_tokens"] else None),
        "tokens_per_s": round(counts["real_tokens"] / total, 1) if total else None,
        "processed_tokens_per_s": round(counts["processed_tokens"] / total, 1) if total else None,
        "step_time_s_mean": round(total / len(times), 4) if times else None,
        "step_time_s_median": round(statistics.median(times), 4) if times else None,
        "peak_memory_bytes": peak, "peak_memory_gib": round(peak / 2**30, 2) if peak is not None else None,
        "final_loss": round(loss, 4) if loss is not None and math.isfinite(loss) else loss,
    })
    out.setdefault("error", None)
    _free(device)
    return out


def ratios(by_mode: dict) -> dict:
    """packed / padded for tokens/s, step time and peak memory (None where either is missing)."""
    p, q = by_mode.get("packed") or {}, by_mode.get("padded") or {}

    def r(k):
        a, b = p.get(k), q.get(k)
        return round(a / b, 3) if a is not None and b else None

    return {"tokens_per_s": r("tokens_per_s"), "step_time_s_mean": r("step_time_s_mean"),
            "peak_memory_bytes": r("peak_memory_bytes")}


def run(models=("0.5b", "1.5b"), methods=METHODS, modes=MODES, *, steps: int = 20, warmup: int = 5,
        batch_tokens: int = 4096, min_len: int = 32, max_len: int = 1024, median_len: float = 256.0,
        attn: str = "auto", lora_r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.1, lr: float = 2e-4,
        gradient_checkpointing: bool = False, seed: int = 0, smoke: bool = False, out: Path | None = None,
        verbose: bool = True) -> dict:
    """Run the benchmark; returns (and writes to `out` when given) the result dict."""
    import torch

    from training.students.config import DEFAULT_TARGETS, TrainConfig

    device = "cpu" if smoke or not torch.cuda.is_available() else "cuda"
    if device == "cpu" and not smoke:
        raise RuntimeError("no CUDA GPU: run with --smoke to exercise the code path on CPU")
    if smoke:
        methods = [m for m in methods if m == "lora"] or ["lora"]
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    attn_impl = pick_attn(attn, device)
    if attn_impl.startswith("flash_attention") and device != "cuda":
        raise RuntimeError("flash attention needs CUDA; use --attn sdpa or eager")
    res: dict = {
        "benchmark": "sft_throughput", "smoke": smoke, "device": device_info(device), "versions": versions(),
        "settings": {"models": list(models), "methods": list(methods), "modes": list(modes), "steps": steps,
                     "warmup": warmup, "batch_tokens": batch_tokens, "min_len": min_len, "max_len": max_len,
                     "median_len": median_len, "dtype": str(dtype).removeprefix("torch."), "lora_r": lora_r,
                     "lora_alpha": lora_alpha, "lora_dropout": lora_dropout,
                     "target_modules": list(DEFAULT_TARGETS["causal_lm"]),
                     "lr": lr, "seed": seed, "gradient_checkpointing_lora": gradient_checkpointing,
                     "gradient_checkpointing_qlora": True},
        "attn_implementation": attn_impl,
        "packing": {"collator": "transformers.DataCollatorWithFlattening",
                    "flash_attn_kwargs": attn_impl.startswith("flash_attention"),
                    "note": ("flash_attention_2: varlen kernels on cu_seqlens, exact" if attn_impl.startswith("flash")
                             else f"{attn_impl}: block-diagonal mask built from the restarting position_ids "
                                  "(exact where `exact` below is true; O(T^2) mask memory)")},
        "runs": [], "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    pad_id = None
    for name in models:
        vocab = MODELS[name]["vocab_size"]
        pad_id = special_ids(vocab)["pad"]
        data, groups = make_plan(steps, warmup, vocab, batch_tokens, min_len=min_len, max_len=max_len,
                                 median=median_len, seed=seed)
        data_info = {"examples": sum(len(g) for g in groups),
                     "real_tokens": sum(len(data[i]["input_ids"]) for g in groups for i in g),
                     "answer_tokens": sum(data[i]["n_answer"] for g in groups for i in g),
                     "measured_answer_tokens": sum(data[i]["n_answer"] for g in groups[warmup:] for i in g),
                     "measured_real_tokens": sum(len(data[i]["input_ids"]) for g in groups[warmup:] for i in g),
                     "mean_len": round(statistics.mean(len(d["input_ids"]) for d in data), 1)}
        for method in methods:
            rec: dict = {"model": name, "params": n_params(name), "method": method, "data": data_info,
                         "modes": {}, "error": None}
            res["runs"].append(rec)
            tc = TrainConfig(student="causal_lm", base_model="-", lora_r=lora_r, lora_alpha=lora_alpha,
                             lora_dropout=lora_dropout, target_modules=DEFAULT_TARGETS["causal_lm"],
                             quantization="4bit" if method == "qlora" else "none")
            model = None
            try:
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                model = build_model(name, method, attn_impl, device, dtype, seed, tc)
                if gradient_checkpointing and method == "lora":
                    enable_checkpointing(model)
                rec["load_s"] = round(time.perf_counter() - t0, 2)
                rec["resident_memory_bytes"] = torch.cuda.memory_allocated() if device == "cuda" else None
                rec["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
                rec["gradient_checkpointing"] = bool(getattr(model, "is_gradient_checkpointing", False))
                try:
                    rec["packing_check"] = packing_check(model, data, pad_id, attn_impl, device)
                except Exception as exc:
                    rec["packing_check"] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "exact": None}
                for mode in modes:
                    if verbose:
                        print(f"  {name} {method} {mode} ...", flush=True)
                    rec["modes"][mode] = run_mode(model, mode, data, groups, warmup, pad_id, attn_impl, device, lr)
            except Exception as exc:  # OOM on load, bitsandbytes missing, ...
                rec["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            finally:
                del model
                _free(device)
            rec["packed_over_padded"] = ratios(rec["modes"])
            if out is not None:  # keep partial results if a later config crashes the process
                write(res, out)
    res["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if out is not None:
        write(res, out)
    return res


def write(res: dict, out: Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    tmp.replace(out)


def table(res: dict) -> str:
    d = res["device"]
    lines = [f"device: {d['name']} ({d['type']}); attn: {res['attn_implementation']}; "
             + ", ".join(f"{k} {v}" for k, v in res["versions"].items() if k != "python"),
             f"{'model':<6} {'method':<6} {'mode':<7} {'tok/s':>10} {'pad%':>6} {'step s':>8} {'peak GiB':>9} "
             f"{'exact':>6}  note"]
    for r in res["runs"]:
        exact = (r.get("packing_check") or {}).get("exact")
        if r["error"] and not r["modes"]:
            lines.append(f"{r['model']:<6} {r['method']:<6} {'-':<7} {'':>10} {'':>6} {'':>8} {'':>9} {'':>6}  "
                         f"ERROR {r['error']}")
            continue
        for mode, m in r["modes"].items():
            tps = f"{m['tokens_per_s']:,.0f}" if m["tokens_per_s"] is not None else "-"
            pad = f"{100 * m['padded_token_share']:.1f}" if m["padded_token_share"] is not None else "-"
            st = f"{m['step_time_s_mean']:.3f}" if m["step_time_s_mean"] is not None else "-"
            pk = f"{m['peak_memory_gib']:.2f}" if m["peak_memory_gib"] is not None else "-"
            ex = "" if mode != "packed" else {True: "yes", False: "NO", None: "?"}[exact]
            lines.append(f"{r['model']:<6} {r['method']:<6} {mode:<7} {tps:>10} {pad:>6} {st:>8} {pk:>9} {ex:>6}  "
                         + (f"ERROR {m['error']}" if m["error"] else ""))
        q = r["packed_over_padded"]
        if any(v is not None for v in q.values()):
            lines.append(f"{'':<6} {'':<6} {'ratio':<7} packed/padded: tokens/s x{q['tokens_per_s']}, "
                         f"step time x{q['step_time_s_mean']}, peak memory x{q['peak_memory_bytes']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=None,
                    help=f"comma-separated model shapes from {list(MODELS)} (default 0.5b,1.5b; --smoke: tiny)")
    ap.add_argument("--methods", default="lora,qlora", help="comma-separated: lora (bf16 base), qlora (4-bit NF4 base)")
    ap.add_argument("--modes", default="padded,packed",
                    help="comma-separated batching modes: padded (baseline), packed (padding-free flattening)")
    ap.add_argument("--steps", type=int, default=None, help="measured optimizer steps per mode (default 20; smoke 2)")
    ap.add_argument("--warmup", type=int, default=None, help="unmeasured warm-up steps per mode (default 5; smoke 1)")
    ap.add_argument("--batch-tokens", type=int, default=None,
                    help="real (non-pad) tokens per step; both modes get the same example groups (default 4096; "
                         "smoke 512). Padded mode feeds (examples x longest) tokens, ~2.7x more here: "
                         "8192 may OOM the padded 1.5B LoRA baseline on 80 GB")
    ap.add_argument("--min-len", type=int, default=None, help="shortest sequence (default 32; smoke 16)")
    ap.add_argument("--max-len", type=int, default=None, help="longest sequence (default 1024; smoke 128)")
    ap.add_argument("--median-len", type=float, default=None, help="lognormal median length (default 256; smoke 48)")
    ap.add_argument("--attn", default="auto", choices=["auto", "flash_attention_2", "sdpa", "eager"],
                    help="attention implementation (auto: flash_attention_2 if flash_attn imports, else sdpa)")
    ap.add_argument("--lora-r", type=int, default=8, help="LoRA rank (default: TrainConfig's 8)")
    ap.add_argument("--lora-alpha", type=int, default=16, help="LoRA alpha (default: TrainConfig's 16)")
    ap.add_argument("--lora-dropout", type=float, default=0.1, help="LoRA dropout (default: TrainConfig's 0.1)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--gradient-checkpointing", action="store_true",
                    help="also checkpoint activations for LoRA "
                         "(QLoRA always does, via prepare_model_for_kbit_training)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true",
                    help="same code path on CPU: tiny Qwen2 (hidden 64, 2 layers), fp32, LoRA only, short sequences")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON output (default bench/results/sft_gpu.json; --smoke: bench/results/sft_smoke.json)")
    a = ap.parse_args(argv)

    def pick(v, normal, smoke):
        return v if v is not None else (smoke if a.smoke else normal)

    models = tuple(pick(a.models, "0.5b,1.5b", "tiny").split(","))
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r}; choose from {list(MODELS)}")
    methods = tuple(a.methods.split(","))
    modes = tuple(a.modes.split(","))
    for m in methods:
        if m not in METHODS:
            ap.error(f"unknown method {m!r}; choose from {list(METHODS)}")
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r}; choose from {list(MODES)}")
    out = a.out or ROOT / "bench" / "results" / ("sft_smoke.json" if a.smoke else "sft_gpu.json")
    res = run(models, methods, modes, steps=pick(a.steps, 20, 2), warmup=pick(a.warmup, 5, 1),
              batch_tokens=pick(a.batch_tokens, 4096, 512), min_len=pick(a.min_len, 32, 16),
              max_len=pick(a.max_len, 1024, 128), median_len=pick(a.median_len, 256.0, 48.0), attn=a.attn,
              lora_r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=a.lora_dropout, lr=a.lr,
              gradient_checkpointing=a.gradient_checkpointing, seed=a.seed, smoke=a.smoke, out=out)
    print(table(res))
    print(f"written {out}")
    return res


if __name__ == "__main__":
    main()
