"""The one set of validators for task-file values: every section's parser uses these, so every
mistake reads the same way: ``FILE: key 'section.key': what is wrong and what to write``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

from kernel.tasks import TaskConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def unknown_keys(file: str | Path, section: str, raw: dict, allowed: Iterable[str]) -> None:
    allowed = sorted(allowed)
    for key in raw:
        if key not in allowed:
            raise TaskConfigError(file, f"{section}.{key}", f"unknown key; valid keys in [{section}] are {allowed}")


def integer(file: str | Path, key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise TaskConfigError(file, key, f"must be an integer from {lo} to {hi}, got {value!r}")
    return value


def number(file: str | Path, key: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi \
            or (lo_open and value == lo):
        bound = f"above {lo}" if lo_open else f"from {lo}"
        raise TaskConfigError(file, key, f"must be a number {bound} to {hi}, got {value!r}")
    return float(value)


def string(file: str | Path, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TaskConfigError(file, key, f"must be a string, got {value!r}")
    return value


def boolean(file: str | Path, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TaskConfigError(file, key, f"must be true or false, got {value!r}")
    return value


def choice(file: str | Path, key: str, value: Any, choices: Iterable[Any]) -> Any:
    choices = list(choices)
    if value not in choices:
        raise TaskConfigError(file, key, f"must be one of {choices}, got {value!r}")
    return value


def duration(file: str | Path, key: str, value: Any) -> float:
    """'90s', '5m', '1h', '2d' or a number of seconds."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, (int, float)) and value >= 0:
        return float(value)
    m = _DURATION.match(value) if isinstance(value, str) else None
    if not m:
        raise TaskConfigError(file, key, f'must be a duration like "30s", "5m", "1h" or a number of '
                                         f"seconds, got {value!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]
