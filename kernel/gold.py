"""Gold sets: versioned, frozen evaluation sets stored in ClickHouse.

Each import writes a new version holding the whole set (the previous version's examples plus
the imported ones; an imported id replaces the same id). A version never changes after it is
written, so every gate verdict can name the exact gold version it was judged on.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from kernel.jsonl import read_jsonl
from kernel.privacy import privacy_config
from kernel.similarity import exact_hash, normalise
from kernel.tasks import TaskConfig, label_of, output_problem
from kernel.warehouse import Warehouse, sql_str
from schemas.timefmt import ch_time


class GoldError(ValueError):
    pass


class GoldConflict(GoldError):
    """Another writer's claim on the gold version did not finish in time; the message names it."""


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
    for n, obj in read_jsonl(lines, source, shape="an object with id, input, output", error=GoldError):
        where = f"{source}:{n}"
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
    """(version, rows) of a gold set; the current version when none is named. Rows carry their
    redaction counts, so a version written on top of them keeps them."""
    if version is None:
        version = current_version(store, task)
    if version == 0:
        return 0, []
    rows = store.rows(f"SELECT id, input, output, slice, teacher_output, source, redactions FROM gold_examples FINAL "
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
    for _ in range(19):  # another writer made a version meanwhile: merge on top of it
        try:
            return _import_once(store, task, path, examples)
        except GoldConflict:
            pass
    return _import_once(store, task, path, examples)  # the 20th attempt's GoldConflict reaches the caller


def _import_once(store: Warehouse, task: TaskConfig, path: Path, examples: list[GoldExample]) -> GoldImport:
    prev_version, prev_rows = load_gold(store, task.name)
    merged = {r["id"]: r for r in prev_rows}  # earlier rows keep their redaction counts (load_gold reads them)
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


# -- who writes which version -------------------------------------------------------------------
# Two writers of one task's gold set at the same moment (automatic growth in the review agent,
# `flywheel gold grow` or `gold import` by hand) must never write the same version number nor
# mix their rows. Before writing version N+1 on top of N, a writer claims N+1 in gold_claims
# with the insert deduplication token 'gold-claim:<task>:<N+1>': ClickHouse keeps the first
# block with a token and drops the others (the check and the commit happen under one lock, and
# through Keeper on replicated tables), so exactly one claim row exists and reading it back
# names the winner. This works the same through the embedded store's owner endpoint and on a
# ClickHouse server. The loser waits for the winner's 'done' row, then recomputes on top of the
# new version. A claim whose holder died (no 'done' after CLAIM_LEASE_SECONDS) is skipped: the
# number stays unused and the next one is claimed on top of the same parent.
CLAIM_LEASE_SECONDS = 600.0
CLAIM_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class VersionClaim:
    task: str
    version: int        # the version this writer, and no other, writes
    parent: int         # the version it is computed on top of
    claim_id: str


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _claim_row(task: str, version: int, claim_id: str, state: str) -> dict:
    return {"task": task, "version": version, "claim_id": claim_id, "state": state, "holder": _holder(),
            "claimed_at": ch_time(digits=6)}


def _claim_state(store: Warehouse, task: str, version: int) -> dict | None:
    """The winning claim of a version: {claim_id, age_s, done}, or None when unclaimed."""
    rows = store.rows(
        f"SELECT argMinIf(claim_id, claimed_at, state = 'claimed') AS claim_id, countIf(state = 'claimed') AS n, "
        f"countIf(state = 'done') AS done, "
        f"dateDiff('millisecond', minIf(claimed_at, state = 'claimed'), now64(6, 'UTC')) / 1000 AS age_s "
        f"FROM gold_claims WHERE task = {sql_str(task)} AND version = {int(version)}")
    if not rows or not int(rows[0]["n"]):
        return None
    r = rows[0]
    return {"claim_id": r["claim_id"], "done": int(r["done"]) > 0, "age_s": float(r["age_s"])}


def claim_version(store: Warehouse, task: str, parent: int, *, lease_seconds: float = CLAIM_LEASE_SECONDS,
                  wait_seconds: float | None = None) -> VersionClaim | None:
    """Claim the version after ``parent`` for this writer. None: another writer claimed it and
    finished (or ``parent`` is no longer the current version): reload and recompute on top of the
    current version. Raises GoldConflict when another claim is still open after ``wait_seconds``
    (default: the lease)."""
    wait_seconds = lease_seconds if wait_seconds is None else wait_seconds
    claim_id = uuid.uuid4().hex
    version = parent + 1
    deadline = time.monotonic() + wait_seconds
    while True:
        if current_version(store, task) > parent:
            return None
        store.insert("gold_claims", [_claim_row(task, version, claim_id, "claimed")],
                     dedup_token=f"gold-claim:{task}:{version}")
        won = _claim_state(store, task, version)
        if won is not None and won["claim_id"] == claim_id:
            return VersionClaim(task, version, parent, claim_id)
        while True:  # another writer holds this number
            if won is None or won["done"]:
                if current_version(store, task) >= version:
                    return None       # it wrote the version: recompute on top of it
                version += 1          # it finished without writing: the number stays unused
                break
            if won["age_s"] > lease_seconds:
                version += 1          # its holder died: skip the number, same parent
                break
            if time.monotonic() > deadline:
                raise GoldConflict(f"gold set {task}: version {version} is being written by another process "
                                   f"(claim {won['claim_id'][:8]}, {won['age_s']:.0f}s old); try again when it "
                                   "finishes, or wait for its lease to run out "
                                   f"({lease_seconds:.0f}s) if that process died")
            time.sleep(CLAIM_POLL_SECONDS)
            won = _claim_state(store, task, version)


def finish_claim(store: Warehouse, claim: VersionClaim) -> None:
    """Mark a claim done (after the version and everything that goes with it are written)."""
    store.insert("gold_claims", [_claim_row(claim.task, claim.version, claim.claim_id, "done")])


def write_version(store: Warehouse, task: str, prev_version: int, prev_rows: list[dict], rows: list[dict],
                  origin: str, claim: VersionClaim | None = None) -> tuple[int, bool]:
    """Write ``rows`` (id, input, output, slice, teacher_output, source, redactions) as the version after
    ``prev_version``, unless they equal ``prev_rows``. Returns (current version, created).
    ``origin`` names where the version came from (a file name, or 'review'). ``claim``: this
    writer's claim on the version (see claim_version); the caller marks it done. Without one,
    the version is claimed and marked done here, and GoldConflict is raised when another writer
    wrote a version on top of ``prev_version`` first (reload and try again)."""
    digest = _content_hash(rows)
    if prev_rows and digest == _content_hash(prev_rows):
        return prev_version, False
    own = claim is None
    if own:
        claim = claim_version(store, task, prev_version)
        if claim is None:
            raise GoldConflict(f"gold set {task}: another writer made a new version on top of v{prev_version} "
                               "meanwhile; reload and try again")
    if claim.parent != prev_version:
        raise GoldError(f"claim for v{claim.version} is on top of v{claim.parent}, not v{prev_version}")
    version = claim.version
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
    if own:
        finish_claim(store, claim)
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
