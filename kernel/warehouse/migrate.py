"""Apply the DDL in schemas/ddl in file order. Every statement is idempotent.

A file may hold guarded blocks: a line ``-- apply-if: <SELECT returning 1 or 0>`` starts a
block whose statements run only when the SELECT returns 1 (on the store being migrated); the
block ends at the next ``-- apply-if:`` line or ``-- apply-always`` line. This is how a
migration that must run once (a copy and a swap) stays safe to re-apply on every start.
"""

from __future__ import annotations

from importlib import resources

from kernel.warehouse import Warehouse

GUARD = "-- apply-if:"
ALWAYS = "-- apply-always"


def ddl_files() -> list[tuple[str, str]]:
    folder = resources.files("schemas").joinpath("ddl")
    files = sorted((p.name, p.read_text()) for p in folder.iterdir() if p.name.endswith(".sql"))
    return files


def statements(text: str, params: dict[str, object]) -> list[str]:
    for key, value in params.items():
        text = text.replace("${" + key + "}", str(value))
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def blocks(text: str) -> list[tuple[str | None, str]]:
    """(guard SELECT or None, the block's text) in file order."""
    out: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in text.splitlines():
        s = line.strip()
        if s.startswith(GUARD):
            out.append((s[len(GUARD):].strip().rstrip(";"), []))
        elif s.startswith(ALWAYS):
            out.append((None, []))
        else:
            out[-1][1].append(line)
    return [(guard, "\n".join(lines)) for guard, lines in out]


def apply_ddl(store: Warehouse, *, window_seconds: int = 60) -> int:
    """Create or update every table and view; returns how many statements ran."""
    count = 0
    params = {"window_seconds": int(window_seconds)}
    for _name, text in ddl_files():
        for guard, block in blocks(text):
            if guard is not None and str(store.scalar(guard)) not in ("1", "True", "true"):
                continue
            for stmt in statements(block, params):
                store.command(stmt)
                count += 1
    return count
