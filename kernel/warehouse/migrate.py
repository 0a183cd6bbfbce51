"""Apply the DDL in schemas/ddl in file order. Every statement is idempotent."""

from __future__ import annotations

from importlib import resources

from kernel.warehouse import Warehouse


def ddl_files() -> list[tuple[str, str]]:
    folder = resources.files("schemas").joinpath("ddl")
    files = sorted((p.name, p.read_text()) for p in folder.iterdir() if p.name.endswith(".sql"))
    return files


def statements(text: str, params: dict[str, object]) -> list[str]:
    for key, value in params.items():
        text = text.replace("${" + key + "}", str(value))
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def apply_ddl(store: Warehouse, *, window_seconds: int = 60) -> int:
    """Create or update every table and view; returns how many statements ran."""
    count = 0
    for _name, text in ddl_files():
        for stmt in statements(text, {"window_seconds": int(window_seconds)}):
            store.command(stmt)
            count += 1
    return count
