"""The one table style of flywheel's terminal output (sql, models, drift, gate).

Plain text, columns separated by two spaces, a dashed rule under the header, numbers right-
aligned; never cut to the terminal's width (piped output keeps every character)."""

from __future__ import annotations

from typing import Any, Iterable, Sequence


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        import json

        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def render(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None,
           numeric: Sequence[bool] | None = None) -> str:
    """``numeric``: which columns to right-align [default: those whose values are all numbers]."""
    rows = [list(r) for r in rows]
    if numeric is None:
        numeric = [bool(rows) and all(_is_number(r[i]) or r[i] is None for r in rows) for i in range(len(columns))]
    text = [[cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if numeric[i] else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    out = [title] if title else []
    out += [line(list(columns)), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in text]
    return "\n".join(out)
