"""The dataset snapshot of a retrain request: examples up to the watermark, minus gold overlaps.

The split and the manifest are pure functions of the rows, so the same request (same task,
watermark and gold version) gives the same dataset and the same manifest hash.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import orjson
import xxhash

from kernel.warehouse import Warehouse
from kernel.warehouse import sql_str as q

SPLIT_SALT = "flywheel-split-v1"


class DatasetError(RuntimeError):
    pass


def is_validation(example_id: str, validation_share: float, salt: str = SPLIT_SALT) -> bool:
    """Deterministic split by a hash of the example id (stable across runs and machines)."""
    h = xxhash.xxh3_64_intdigest(f"{salt}:{example_id}".encode())
    return h / 2**64 < validation_share


def split(rows: Iterable[Mapping[str, Any]], validation_share: float) -> tuple[list, list]:
    train, val = [], []
    for r in rows:
        (val if is_validation(r["id"], validation_share) else train).append(r)
    return train, val


def content_hash(rows: Iterable[Mapping[str, Any]]) -> str:
    h = hashlib.sha256()
    for r in sorted(rows, key=lambda r: r["id"]):
        h.update(orjson.dumps([r["id"], r["input"], r["output"], r["slice"]]))
        h.update(b"\n")
    return h.hexdigest()


def manifest(task: str, watermark: str, gold_version: int, train: list, val: list,
             validation_share: float, excluded_gold: int = 0) -> dict[str, Any]:
    """What a run trained on: counts, the content hash, label and slice counts."""
    rows = train + val
    return {
        "task": task,
        "watermark": watermark,
        "gold_version": gold_version,
        "n_rows": len(rows),
        "n_train": len(train),
        "n_validation": len(val),
        "validation_share": validation_share,
        "split": f"xxh3_64('{SPLIT_SALT}:' + id) / 2^64 < validation_share",
        "content_hash": content_hash(rows),
        "train_hash": content_hash(train),
        "label_counts": dict(sorted(Counter(r["output"] for r in rows).items())),
        "train_label_counts": dict(sorted(Counter(r["output"] for r in train).items())),
        "slice_counts": dict(sorted(Counter(r["slice"] for r in rows).items())),
        "excluded_gold_overlaps": excluded_gold,
    }


@dataclass(frozen=True)
class Dataset:
    train: list[dict]
    validation: list[dict]
    manifest: dict[str, Any]


def snapshot(store: Warehouse, task: str, watermark: str, gold_version: int,
             validation_share: float) -> Dataset:
    """Examples of ``task`` curated at or before ``watermark`` (the row as of the watermark when
    an id was replaced later), gold overlaps (same id or same normalised input) excluded."""
    wm = f"toDateTime64({q(watermark)}, 3, 'UTC')"
    where = f"task = {q(task)} AND curated_at <= {wm}"
    gold = (f"SELECT input_hash FROM gold_examples FINAL WHERE task = {q(task)} AND version = {int(gold_version)}")
    gold_ids = (f"SELECT id FROM gold_examples FINAL WHERE task = {q(task)} AND version = {int(gold_version)}")
    try:
        rows = store.rows(
            f"SELECT id, t.1 AS input, t.2 AS output, t.3 AS slice, t.4 AS input_hash FROM ("
            f" SELECT id, argMax((input, output, toString(slice), input_hash), (curated_at, source_offset)) AS t"
            f" FROM examples WHERE {where} GROUP BY id) ORDER BY id")
        overlaps = set()
        if gold_version:
            overlaps = {int(r["input_hash"]) for r in store.rows(gold)}
            gid = {r["id"] for r in store.rows(gold_ids)}
        else:
            gid = set()
    except Exception as exc:
        if "toDateTime64" in str(exc) or "parse" in str(exc).lower():
            raise DatasetError(f"watermark {watermark!r} is not 'YYYY-MM-DD HH:MM:SS.mmm' UTC: {exc}") from None
        raise
    kept = []
    for r in rows:
        if int(r["input_hash"]) in overlaps or r["id"] in gid:
            continue
        kept.append({"id": r["id"], "input": r["input"], "output": r["output"], "slice": r["slice"]})
    excluded = len(rows) - len(kept)
    train, val = split(kept, validation_share)
    if not train:
        raise DatasetError(f"task {task!r} has no training examples curated at or before {watermark} "
                           f"(after excluding {excluded} gold overlaps): curate more teacher logs first")
    return Dataset(train, val, manifest(task, watermark, gold_version, train, val, validation_share, excluded))
