"""The layering rules, checked on the source: no import cycle between stage folders or
top-level packages, and the kernel and the contracts import no stage."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flywheel", "kernel", "schemas", "streams", "training", "serving", "console")
KERNEL = {"kernel", "schemas"}


def unit_of(module: str) -> str | None:
    """The layering unit of a module: the kernel, the contracts and the CLI root are one unit
    each; in streams/, training/ and serving/ each stage folder is a unit."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if parts[0] in ("flywheel", "kernel", "schemas", "console"):
        return parts[0]
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def imports_of(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            src = unit_of(module)
            for imp in imports_of(path, module):
                dst = unit_of(imp)
                if dst and dst != src and (ROOT / Path(*imp.split(".")[:2])).exists():
                    edges.setdefault(src, set()).add(dst)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_cycle_between_stage_folders():
    assert find_cycle(graph()) is None


def test_no_cycle_between_top_level_packages():
    top: dict[str, set[str]] = {}
    for src, dsts in graph().items():
        for dst in dsts:
            a, b = src.split(".")[0], dst.split(".")[0]
            if a != b:
                top.setdefault(a, set()).add(b)
    assert find_cycle(top) is None


def test_kernel_and_contracts_import_no_stage():
    edges = graph()
    for unit in KERNEL:
        assert edges.get(unit, set()) <= KERNEL, (unit, edges.get(unit))
    assert "flywheel" not in {d for dsts in edges.values() for d in dsts}, "nothing imports the CLI root"
