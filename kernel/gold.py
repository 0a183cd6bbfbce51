"""Gold sets: versioned, frozen evaluation sets stored in ClickHouse.

Each import writes a new version holding the whole set (the previous version's examples plus
the imported ones; an imported id replaces the same id). A version never changes after it is
written, so every gate verdict can name the exact gold version it was judged on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from kernel.privacy import privacy_config
from kernel.similarity import exact_hash, normalise
from kernel.tasks import TaskConfig, label_of, output_problem
from kernel.warehouse import Warehouse, sql_str
from schemas.timefmt import ch_time


class GoldError(ValueError):
    pass


# Where a gold example came from: imported by hand (seed), a reviewed canary disagreement, a
# reviewed low-confidence teacher answer, a reviewed random sample of live traffic. The gate
# scores per source so that a harder gold set is never mistaken for a worse model.
GOLD_SOURCES = ("seed", "disagreement", "low_conf", "live_sample")


@dataclass(frozen=True)
class GoldExample:
    id: str
    input: str
    output: str | dict
    slice: str
    teacher_output: str | None = None
    source: str = "seed"
    redactions: dict | None = None  # PII matches replaced in the input, per rule ([privacy])


@dataclass(frozen=True)
class GoldImport:
    task: str
    version: int          # the version now current (unchanged when nothing changed)
    created: bool
    n_imported: int
    n_total: int
    redactions: dict = field(default_factory=dict)  # PII matches replaced in this import, per rule


def parse_gold_lines(lines, task: TaskConfig, source: str = "<input>") -> list[GoldExample]:
    out: list[GoldExample] = []
    seen: set[str] = set()
    privacy = privacy_config(task)
    for n, line in enumerate(lines, 1):
        if isinstance(line, bytes):
            line = line.decode("utf-8")
        if not line.strip():
            continue
        where = f"{source}:{n}"
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise GoldError(f"{where}: not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise GoldError(f"{where}: each line must be an object with id, input, output")
        for key in ("id", "input", "output"):
            if key not in obj:
                raise GoldError(f"{where}: missing {key!r}; lines look like "
                                '{"id": "g1", "input": "...", "output": "...", "slice": "..."}')
        if not isinstance(obj["id"], str) or not obj["id"]:
            raise GoldError(f"{where}: 'id' must be a non-empty string")
        if not isinstance(obj["input"], str) or not obj["input"]:
            raise GoldError(f"{where}: 'input' must be a non-empty string")
        if obj["id"] in seen:
            raise GoldError(f"{where}: id {obj['id']!r} appears twice in this file")
        seen.add(obj["id"])

        problem = output_problem(obj["output"], task)
        if problem:
            raise GoldError(f"{where}: {problem}")
        label = label_of(obj["output"])
        slc = obj.get("slice")
        if slc is None:
            slc = task.slice_rule.slice_of(label, obj.get("meta") or {})
        teacher = obj.get("teacher_output")
        src = obj.get("source", "seed")
        if src not in GOLD_SOURCES:
            raise GoldError(f"{where}: 'source' must be one of {list(GOLD_SOURCES)}, got {src!r}")
        text, counts = privacy.redact(obj["input"]) if privacy.enabled else (obj["input"], None)
        out.append(GoldExample(obj["id"], text, obj["output"], str(slc),
                               None if teacher is None else label_of(teacher), source=src,
                               redactions=counts or None))
    if not out:
        raise GoldError(f"{source}: no examples")
    return out


def current_version(store: Warehouse, task: str) -> int:
    v = store.scalar(f"SELECT max(version) AS v FROM gold_sets FINAL WHERE task = {sql_str(task)}")
    return int(v or 0)


def load_gold(store: Warehouse, task: str, version: int | None = None) -> tuple[int, list[dict]]:
    """(version, rows) of a gold set; the current version when none is named."""
    if version is None:
        version = current_version(store, task)
    if version == 0:
        return 0, []
    rows = store.rows(f"SELECT id, input, output, slice, teacher_output, source FROM gold_examples FINAL "
                      f"WHERE task = {sql_str(task)} AND version = {int(version)} ORDER BY id")
    return version, rows


def _content_hash(rows: list[dict]) -> str:
    h = hashlib.sha256()
    for r in sorted(rows, key=lambda r: r["id"]):
        h.update(orjson.dumps([r["id"], r["input"], r["output"], r["slice"], r["teacher_output"]]))
    return h.hexdigest()


def import_gold(store: Warehouse, task: TaskConfig, path: Path) -> GoldImport:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GoldError(f"{path}: cannot read ({exc.strerror})") from None
    examples = parse_gold_lines(raw.splitlines(), task, str(path))
    prev_version, prev_rows = load_gold(store, task.name)
    merged = {r["id"]: r for r in prev_rows}
    if prev_rows:  # carry the earlier examples' redaction counts into the new version
        for r in store.rows(f"SELECT id, redactions FROM gold_examples FINAL WHERE task = {sql_str(task.name)} "
                            f"AND version = {int(prev_version)} AND notEmpty(redactions)"):
            merged[r["id"]] = {**merged[r["id"]], "redactions": r["redactions"]}
    redactions: dict[str, int] = {}
    for ex in examples:
        merged[ex.id] = {"id": ex.id, "input": ex.input, "output": label_of(ex.output), "slice": ex.slice,
                         "teacher_output": ex.teacher_output, "source": ex.source,
                         "redactions": ex.redactions or {}}
        for rule, n in (ex.redactions or {}).items():
            redactions[rule] = redactions.get(rule, 0) + n
    rows = list(merged.values())
    version, created = write_version(store, task.name, prev_version, prev_rows, rows, path.name)
    return GoldImport(task.name, version, created, len(examples), len(rows), redactions)


def write_version(store: Warehouse, task: str, prev_version: int, prev_rows: list[dict], rows: list[dict],
                  origin: str) -> tuple[int, bool]:
    """Write ``rows`` (id, input, output, slice, teacher_output, source) as the version after
    ``prev_version``, unless they equal ``prev_rows``. Returns (current version, created).
    ``origin`` names where the version came from (a file name, or 'review')."""
    digest = _content_hash(rows)
    if prev_rows and digest == _content_hash(prev_rows):
        return prev_version, False
    version = prev_version + 1
    # Examples first, then the gold_sets row that makes the version visible: a crash in
    # between leaves an invisible partial version that the next import overwrites.
    store.insert("gold_examples", (
        {**r, "source": r.get("source") or "seed", "task": task, "version": version,
         "input_hash": exact_hash(normalise(r["input"]))}
        for r in rows))
    store.insert("gold_sets", [{
        "task": task, "version": version, "parent_version": prev_version,
        "created_at": ch_time(),
        "source": origin, "n_examples": len(rows), "content_hash": digest}])
    return version, True


def version_sources(store: Warehouse, task: str) -> list[dict]:
    """Every gold version of a task with its size per source: [{version, created_at, origin,
    n_examples, sources: {source: n}}], oldest first."""
    sets = store.rows(f"SELECT version, toString(created_at) AS created_at, source AS origin, n_examples "
                      f"FROM gold_sets FINAL WHERE task = {sql_str(task)} ORDER BY version")
    counts = store.rows(f"SELECT version, source, count() AS n FROM gold_examples FINAL "
                        f"WHERE task = {sql_str(task)} GROUP BY version, source")
    by_version: dict[int, dict[str, int]] = {}
    for r in counts:
        by_version.setdefault(int(r["version"]), {})[r["source"]] = int(r["n"])
    return [{**s, "version": int(s["version"]), "n_examples": int(s["n_examples"]),
             "sources": dict(sorted(by_version.get(int(s["version"]), {}).items()))} for s in sets]
