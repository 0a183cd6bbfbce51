"""Which ids a task has curated, and with what content: so a re-sent id with other content is
a ``conflict`` (the first content stands) rather than a silent rewrite.

``SeenIds`` maps a 64-bit hash of the id to a 64-bit hash of the content, for the most recent
``capacity`` ids of a task (24 bytes an id in sorted numpy arrays, plus a dict of the ids added
since the last merge). Past the bound the oldest half is forgotten; a forgotten id re-sent
with other content is curated as new. Rebuilt from ``curation_events`` at start-up.
"""

from __future__ import annotations

import numpy as np

MERGE_EVERY = 1 << 16


class SeenIds:
    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = max(int(capacity), 2 * MERGE_EVERY)
        self._keys = np.empty(0, dtype=np.uint64)   # id hashes, sorted
        self._vals = np.empty(0, dtype=np.uint64)   # content hashes, parallel
        self._seqs = np.empty(0, dtype=np.int64)    # arrival numbers, parallel (for eviction)
        self._delta: dict[int, tuple[int, int]] = {}  # id hash -> (content hash, arrival number)
        self._next = 0

    def __len__(self) -> int:
        return len(self._keys) + sum(1 for k in self._delta if not self._in_base(k))

    def _in_base(self, key: int) -> bool:
        i = int(np.searchsorted(self._keys, np.uint64(key)))
        return i < len(self._keys) and int(self._keys[i]) == key

    def get_many(self, keys: list[int]) -> list[int | None]:
        """The content hash remembered for each id hash, or None."""
        out: list[int | None] = [None] * len(keys)
        if len(self._keys):
            arr = np.fromiter(keys, dtype=np.uint64, count=len(keys))
            pos = np.searchsorted(self._keys, arr)
            pos_c = np.minimum(pos, len(self._keys) - 1)
            hit = self._keys[pos_c] == arr
            vals = self._vals[pos_c]
            for i in np.nonzero(hit)[0].tolist():
                out[i] = int(vals[i])
        if self._delta:
            get = self._delta.get
            for i, k in enumerate(keys):
                d = get(k)
                if d is not None:
                    out[i] = d[0]
        return out

    def add(self, key: int, content: int) -> None:
        """Remember an id's first content (an id already known keeps its first content)."""
        if key in self._delta:
            return
        self._delta[key] = (content, self._next)
        self._next += 1
        if len(self._delta) >= MERGE_EVERY:
            self.merge()

    def add_many(self, keys: list[int], contents: list[int]) -> None:
        for k, c in zip(keys, contents):
            self.add(k, c)
        self.merge()

    def merge(self) -> None:
        if not self._delta:
            return
        n = len(self._delta)
        nk = np.fromiter(self._delta.keys(), dtype=np.uint64, count=n)
        nv = np.fromiter((v for v, _ in self._delta.values()), dtype=np.uint64, count=n)
        ns = np.fromiter((s for _, s in self._delta.values()), dtype=np.int64, count=n)
        self._delta = {}
        if len(self._keys):  # an id already in the base keeps its first content
            pos = np.minimum(np.searchsorted(self._keys, nk), len(self._keys) - 1)
            new = self._keys[pos] != nk
            nk, nv, ns = nk[new], nv[new], ns[new]
        if len(nk):
            keys = np.concatenate([self._keys, nk])
            order = np.argsort(keys, kind="stable")
            self._keys = keys[order]
            self._vals = np.concatenate([self._vals, nv])[order]
            self._seqs = np.concatenate([self._seqs, ns])[order]
        if len(self._keys) > self.capacity:  # forget the oldest half
            cut = np.sort(self._seqs)[len(self._seqs) // 2]
            live = self._seqs >= cut
            self._keys, self._vals, self._seqs = self._keys[live], self._vals[live], self._seqs[live]


def load_seen_ids(curator, store, capacity: int) -> int:
    """Rebuild the curator's seen-ids index from curation_events: per task, the most recent
    ``capacity`` ids with their first content. Returns how many ids were loaded."""
    from kernel.warehouse import sql_str

    n = 0
    for name in curator.tasks:
        rows = store.rows(
            "SELECT id, toString(argMin(content_hash, curated_at)) AS h, min(curated_at) AS t "
            f"FROM curation_events WHERE task = {sql_str(name)} AND outcome NOT IN ('invalid', 'conflict') "
            f"GROUP BY id ORDER BY t DESC LIMIT {int(capacity)}")
        rows.reverse()
        curator.load_seen(name, [r["id"] for r in rows], [int(r["h"]) for r in rows])
        n += len(rows)
    return n
