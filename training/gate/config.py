"""The ``[gate]`` section of a task."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from kernel import fields
from kernel.tasks import TaskConfig, TaskConfigError

_GATE_KEYS = {"min_slice_examples", "slice_tolerance", "insufficient_slice", "baseline"}


@dataclass(frozen=True)
class GateConfig:
    min_slice_examples: int = 20
    slice_tolerance: float = 0.02
    insufficient_slice: str = "fail"
    baseline: str = "teacher"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _float(task, sec, key, raw, default, lo, hi, lo_open=False):
    return fields.number(task.source, f"{sec}.{key}", raw.get(key, default), lo, hi, lo_open)


def _choice(task, sec, key, raw, default, choices):
    return fields.choice(task.source, f"{sec}.{key}", raw.get(key, default), choices)


def _int(task, sec, key, raw, default, lo, hi):
    return fields.integer(task.source, f"{sec}.{key}", raw.get(key, default), lo, hi)


def gate_config(task: TaskConfig) -> GateConfig:
    raw = task.section("gate")
    unknown = sorted(set(raw) - _GATE_KEYS)
    if unknown:
        raise TaskConfigError(task.source, f"gate.{unknown[0]}", f"unknown key; valid keys are {sorted(_GATE_KEYS)}")
    return GateConfig(
        min_slice_examples=_int(task, "gate", "min_slice_examples", raw, 20, 1, 10**9),
        slice_tolerance=_float(task, "gate", "slice_tolerance", raw, 0.02, 0, 1),
        insufficient_slice=_choice(task, "gate", "insufficient_slice", raw, "fail", ("fail", "warn")),
        baseline=_choice(task, "gate", "baseline", raw, "teacher", ("teacher", "incumbent")),
    )
