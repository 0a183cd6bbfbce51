"""Gold growth: a new frozen gold version = the previous version + the completed review items
bound for gold, after a contamination check.

An item is refused (the reason recorded in ``review_routing``) when its input is an exact or
near duplicate (MinHash of character shingles at the task's ``near_duplicate_threshold``) of:
an example in the training pool (the reason says which registered versions it trained, by
their dataset watermarks, or that it would train the next one), an example already in the
gold set, or another item taken earlier in the same growth. Nothing that trained the lineage
can ever grade it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import orjson

from kernel.gold import GoldConflict, claim_version, current_version, finish_claim, load_gold, write_version
from kernel.similarity import band_keys, estimated_jaccard, exact_hash, lsh_params, normalise, signatures
from kernel.tasks import TaskConfig
from kernel.warehouse import Warehouse
from kernel.warehouse import sql_str as q
from streams.review import store as rs
from streams.review.policy import GOLD_SOURCE

log = logging.getLogger("flywheel.review")

CHUNK = 50_000


@dataclass
class GrowResult:
    task: str
    version: int
    created: bool
    previous: int
    added: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (item id, reason)
    n_total: int = 0

    def summary(self) -> str:
        head = (f"gold set {self.task} v{self.version} ({self.n_total} examples): {len(self.added)} added"
                if self.created else f"gold set {self.task} unchanged at v{self.version}: {len(self.added)} added")
        return head + f", {len(self.refused)} refused"


def near_matches(cand: np.ndarray, ref: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """(candidate index, reference index, estimated Jaccard) of the most similar reference at or
    above ``threshold`` for each candidate that has one. LSH bands pick the pairs to compare; each
    pair is verified on the full signature."""
    if len(cand) == 0 or len(ref) == 0:
        return []
    bands, rows = lsh_params(threshold, cand.shape[1])
    ck, rk = band_keys(cand, bands, rows), band_keys(ref, bands, rows)
    best: dict[int, tuple[int, float]] = {}
    for b in range(bands):
        hit = np.isin(rk[:, b], ck[:, b])
        if not hit.any():
            continue
        for r in np.nonzero(hit)[0]:
            for c in np.nonzero(ck[:, b] == rk[r, b])[0]:
                j = float(estimated_jaccard(cand[c], ref[r]))
                if j >= threshold and j > best.get(int(c), (-1, -1.0))[1]:
                    best[int(c)] = (int(r), j)
    return [(c, r, j) for c, (r, j) in sorted(best.items())]


def lineage(store: Warehouse, task: str) -> list[tuple[str, str]]:
    """(version, dataset watermark) of every registered model version of the task, oldest first."""
    try:
        rows = store.rows(f"SELECT version, dataset_manifest FROM model_registry FINAL WHERE task = {q(task)} "
                          "ORDER BY seq, version")
    except Exception:  # no training tables yet: nothing trained
        return []
    out = []
    for r in rows:
        try:
            wm = orjson.loads(r["dataset_manifest"] or "{}").get("watermark")
        except orjson.JSONDecodeError:
            wm = None
        if wm:
            out.append((r["version"], str(wm)))
    return out


def _trained_by(curated_at: str, versions: list[tuple[str, str]]) -> list[str]:
    return [v for v, wm in versions if curated_at[:23] <= wm[:23].replace("T", " ")]


def _pool_reason(ex_id: str, curated_at: str, versions, j: float | None) -> str:
    what = "exact duplicate" if j is None else f"near duplicate (Jaccard {j:.2f})"
    trained = _trained_by(curated_at, versions)
    if trained:
        names = ", ".join(trained[:3]) + (f" and {len(trained) - 3} more" if len(trained) > 3 else "")
        return f"contamination: {what} of training example {ex_id!r}, which trained {names}"
    return f"contamination: {what} of training example {ex_id!r} in the pool (it would train the next version)"


MAX_ATTEMPTS = 20


def grow(store: Warehouse, task: TaskConfig) -> GrowResult:
    """Make the next gold version from the completed items bound for gold (see module doc).

    Safe to run at the same moment as another growth or a `gold import` of the same task (the
    review agent's automatic growth and `flywheel gold grow`, say): the new version number is
    claimed first (kernel.gold.claim_version); a growth that loses the claim waits for the
    winner to finish and recomputes on top of its version, so no number is written twice and
    no item is added twice."""
    for _ in range(MAX_ATTEMPTS):
        result = _grow_once(store, task)
        if result is not None:
            return result
        log.info("gold set %s: another writer made a new version meanwhile; recomputing on top of it", task.name)
    raise GoldConflict(f"gold set {task.name}: lost the version claim {MAX_ATTEMPTS} times in a row; "
                       "another process keeps writing it, try again")


def _grow_once(store: Warehouse, task: TaskConfig) -> GrowResult | None:
    """One attempt; None when another writer claimed the next version first."""
    # The gold version first, then the items: read the other way round, a growth finishing in
    # between would leave this one holding items it had already added, refused here as "already
    # in gold" (and that routing row, being newer, would replace the other growth's "added").
    prev_version, prev_rows = load_gold(store, task.name)
    items = rs.unrouted_gold(store, task.name)
    result = GrowResult(task.name, prev_version, False, prev_version)
    if not items:
        result.n_total = len(prev_rows)
        return result
    k, threshold = task.shingle_size, task.near_duplicate_threshold
    norm = [normalise(it["input"]) for it in items]
    hashes = [exact_hash(t) for t in norm]
    sigs = signatures(norm, k)
    refused: dict[int, tuple[str, str]] = {}  # index -> (reason, matched id)

    # 1. the training pool (everything that trained the lineage, and what would train the next)
    versions = lineage(store, task.name)
    hash_list = ", ".join(str(h) for h in set(hashes))
    for r in store.rows(f"SELECT id, input_hash, toString(curated_at) AS curated_at FROM examples FINAL "
                        f"WHERE task = {q(task.name)} AND input_hash IN ({hash_list}) ORDER BY curated_at, id"):
        for i, h in enumerate(hashes):
            if i not in refused and h == int(r["input_hash"]):
                refused[i] = (_pool_reason(r["id"], r["curated_at"], versions, None), r["id"])
    last = ""
    while True:
        chunk = store.rows(f"SELECT id, input, toString(curated_at) AS curated_at FROM examples FINAL "
                           f"WHERE task = {q(task.name)} AND id > {q(last)} ORDER BY id LIMIT {CHUNK}")
        if not chunk:
            break
        last = chunk[-1]["id"]
        open_idx = [i for i in range(len(items)) if i not in refused]
        if not open_idx:
            break
        ref = signatures([normalise(r["input"]) for r in chunk], k)
        for c, rr, j in near_matches(sigs[open_idx], ref, threshold):
            i, ex = open_idx[c], chunk[rr]
            refused[i] = (_pool_reason(ex["id"], ex["curated_at"], versions, j), ex["id"])
        if len(chunk) < CHUNK:
            break

    # 2. the gold set as it is, and 3. items taken earlier in this growth
    gold_ids = {r["id"] for r in prev_rows}
    gold_norm = [normalise(r["input"]) for r in prev_rows]
    gold_hash = {exact_hash(t): r["id"] for t, r in zip(gold_norm, prev_rows)}
    gold_sigs = signatures(gold_norm, k)
    taken: list[int] = []
    new_rows = []
    for i, it in enumerate(items):
        if i in refused:
            continue
        if it["item_id"] in gold_ids:
            refused[i] = (f"already in gold v{prev_version} under the same id", it["item_id"])
            continue
        if hashes[i] in gold_hash:
            refused[i] = (f"exact duplicate of gold example {gold_hash[hashes[i]]!r}", gold_hash[hashes[i]])
            continue
        m = near_matches(sigs[i:i + 1], gold_sigs, threshold)
        if m:
            gid = prev_rows[m[0][1]]["id"]
            refused[i] = (f"near duplicate (Jaccard {m[0][2]:.2f}) of gold example {gid!r}", gid)
            continue
        m = near_matches(sigs[i:i + 1], sigs[taken], threshold) if taken else []
        if m:
            other = items[taken[m[0][1]]]["item_id"]
            refused[i] = (f"duplicate (Jaccard {m[0][2]:.2f}) of review item {other!r} taken in this growth", other)
            continue
        taken.append(i)
        answers = orjson.loads(it["answers"] or "{}")
        teacher = answers.get("teacher")
        new_rows.append({"id": it["item_id"], "input": it["input"], "output": it["answer"], "slice": it["slice"],
                         "teacher_output": teacher if isinstance(teacher, str) else None,
                         "source": GOLD_SOURCE.get(it["kind"], it["kind"])})

    version, created = prev_version, False
    claim = None
    if new_rows:
        claim = claim_version(store, task.name, prev_version)
        if claim is None:
            return None
    elif current_version(store, task.name) != prev_version:
        return None   # every item refused, but against a gold version another writer has replaced
    try:
        if claim is not None:
            version, created = write_version(store, task.name, prev_version, prev_rows, prev_rows + new_rows,
                                             "review", claim=claim)
        _route(store, task, items, refused, version, result)
    finally:
        if claim is not None:
            finish_claim(store, claim)
    result.version, result.created = version, created
    result.n_total = len(prev_rows) + (len(new_rows) if created else 0)
    log.info("%s", result.summary())
    return result


def _route(store: Warehouse, task: TaskConfig, items: list[dict], refused: dict, version: int,
           result: GrowResult) -> None:
    routing = []
    for i, it in enumerate(items):
        if i in refused:
            reason, matched = refused[i]
            routing.append(rs.routing_row(task.name, it["item_id"], "gold", "refused", 0, reason, matched))
            result.refused.append((it["item_id"], reason))
        else:
            routing.append(rs.routing_row(task.name, it["item_id"], "gold", "added", version))
            result.added.append(it["item_id"])
    store.insert("review_routing", routing)
