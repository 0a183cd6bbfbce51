"""Exact and near-duplicate memory of one task: a bounded, compact MinHash LSH index.

Layout (per entry: an example that was kept, or a gold example):
- the low 16 bits of each of its ``NUM_PERM`` MinHash values (b-bit MinHash: two different
  values agree by chance with probability 2^-16, a negligible bias for verifying candidates),
  its id and an id hash, in chunks of ``CHUNK`` entries;
- ``bands + 1`` 64-bit keys (one per LSH band, plus the exact-input hash) pointing at the
  entry. Recent keys sit in a dict; every ``delta_limit`` keys they are merged into one sorted
  NumPy array searched with ``searchsorted``. That keeps the index at about
  ``(bands + 1) * 16 + NUM_PERM * 2 + id`` bytes per entry, instead of the ~100 bytes per key that a
  dict of Python ints costs (bench/curate_bench.py measures it).

Bound: at most ``capacity`` entries. At the bound the oldest chunk of ``CHUNK`` entries is
evicted, so a duplicate of an example older than the most recent ``capacity`` kept examples is
no longer caught (it is kept again). Evictions are counted in ``evicted``.

Decisions are deterministic for a given arrival order: candidates are verified on the full
signature and the earliest matching entry wins. An event whose own id is already in the index
(a replay after a crash) matches itself and is reported as such, never as its own duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernel.similarity import NUM_PERM, band_keys, estimated_jaccard, lsh_params

CHUNK = 1 << 14
EXACT_SALT = np.uint64(0xA5A5A5A5A5A5A5A5)


@dataclass(frozen=True, slots=True)
class Match:
    kind: str         # "exact", "near" or "self" (this very id: a replay)
    entry_id: str     # the id of the earlier entry
    similarity: float


class DedupeIndex:
    def __init__(self, threshold: float, capacity: int = 1_000_000, delta_limit: int = 1 << 18) -> None:
        self.threshold = float(threshold)
        self.bands, self.rows = lsh_params(self.threshold, NUM_PERM)
        self.capacity = max(int(capacity), CHUNK)
        self.delta_limit = delta_limit
        self.n_total = 0          # entries ever added (next entry number)
        self.first_live = 0       # entries below this number were evicted
        self.evicted = 0
        self._sigs: dict[int, np.ndarray] = {}   # chunk number -> (CHUNK, NUM_PERM) uint16
        self._idh: dict[int, np.ndarray] = {}    # chunk number -> (CHUNK,) uint64 id hashes
        self._ids: dict[int, list[str]] = {}
        self._keys = np.empty(0, dtype=np.uint64)   # sorted
        self._vals = np.empty(0, dtype=np.int64)    # entry numbers, parallel to _keys
        self._delta: dict[int, int | list[int]] = {}
        self._delta_keys = 0

    def __len__(self) -> int:
        return self.n_total - self.first_live

    # -- keys ---------------------------------------------------------------------------
    def keys_for(self, sigs: np.ndarray, exact_hashes: np.ndarray) -> np.ndarray:
        """(n, bands + 1) keys: LSH band keys and the salted exact-input hash last."""
        bk = band_keys(sigs, self.bands, self.rows)
        return np.concatenate([bk, (exact_hashes.astype(np.uint64) ^ EXACT_SALT)[:, None]], axis=1)

    # -- queries --------------------------------------------------------------------------
    def prefetch(self, keys: np.ndarray):
        """Look a batch of key rows (n, bands + 1) up in the sorted part once, vectorised.
        Returns per-row lists (start, count) to pass to match(); None when nothing is sorted.
        Valid until the next compact(): call maybe_compact() only between batches."""
        if len(self._keys) == 0:
            return None
        lo = np.searchsorted(self._keys, keys, side="left")
        hi = np.searchsorted(self._keys, keys, side="right")
        return lo.tolist(), (hi - lo).tolist()

    def match(self, sig: np.ndarray, keys_row, idh: int | None, pre=None, row: int = 0) -> Match | None:
        """The earliest live entry that is this id, the same input, or a near duplicate.
        With ``idh=None`` no entry is taken for this event itself (gold sets)."""
        if not isinstance(keys_row, list):
            keys_row = keys_row.tolist()
        lo = cnt = None
        if pre is not None:
            lo, cnt = pre[0][row], pre[1][row]
        m = len(keys_row) - 1
        exact = self._entries_for(keys_row[m], m, lo, cnt)
        if exact:
            if idh is not None:
                for e in exact:
                    if self._idh_of(e) == idh:
                        return Match("self", self._id_of(e), 1.0)
            return Match("exact", self._id_of(min(exact)), 1.0)
        # the hot path: most inputs are new and no band key of theirs was seen before
        cands: list[int] = []
        delta_get = self._delta.get
        for j in range(m):
            if cnt is not None and cnt[j]:
                cands.extend(self._vals[lo[j]:lo[j] + cnt[j]].tolist())
            d = delta_get(keys_row[j])
            if d is not None:
                if d.__class__ is list:
                    cands.extend(d)
                else:
                    cands.append(d)
        if not cands:
            return None
        first = self.first_live
        order = sorted({e for e in cands if e >= first})
        if not order:
            return None
        mat = np.stack([self._sig_of(e) for e in order])
        sims = estimated_jaccard(sig.astype(np.uint16), mat)
        if idh is not None:
            for e, s in zip(order, sims):
                if self._idh_of(e) == idh:
                    return Match("self", self._id_of(e), float(s))
        hits = np.nonzero(sims >= self.threshold)[0]
        if len(hits) == 0:
            return None
        e = order[int(hits[0])]
        return Match("near", self._id_of(e), float(sims[hits[0]]))

    def _entries_for(self, key: int, col: int, lo, cnt) -> list[int]:
        out: list[int] = []
        if cnt is not None and cnt[col]:
            a = lo[col]
            first = self.first_live
            out.extend(v for v in self._vals[a:a + cnt[col]].tolist() if v >= first)
        d = self._delta.get(key)
        if d is not None:
            if isinstance(d, list):
                out.extend(v for v in d if v >= self.first_live)
            elif d >= self.first_live:
                out.append(d)
        return out

    def _sig_of(self, e: int) -> np.ndarray:
        return self._sigs[e // CHUNK][e % CHUNK]

    def _idh_of(self, e: int) -> int:
        return int(self._idh[e // CHUNK][e % CHUNK])

    def _id_of(self, e: int) -> str:
        return self._ids[e // CHUNK][e % CHUNK]

    # -- updates --------------------------------------------------------------------------
    def add(self, entry_id: str, idh: int, sig: np.ndarray, keys_row: np.ndarray) -> None:
        e = self.n_total
        c, i = divmod(e, CHUNK)
        if i == 0:
            self._sigs[c] = np.zeros((CHUNK, NUM_PERM), dtype=np.uint16)
            self._idh[c] = np.zeros(CHUNK, dtype=np.uint64)
            self._ids[c] = []
        self._sigs[c][i] = sig  # keeps the low 16 bits
        self._idh[c][i] = idh
        self._ids[c].append(entry_id)
        self.n_total += 1
        if not isinstance(keys_row, list):
            keys_row = keys_row.tolist()
        for k in keys_row:
            d = self._delta.get(k)
            if d is None:
                self._delta[k] = e
            elif isinstance(d, list):
                d.append(e)
            else:
                self._delta[k] = [d, e]
        self._delta_keys += len(keys_row)
        if len(self) > self.capacity:
            self._evict_oldest_chunk()

    def maybe_compact(self) -> None:
        """Call between batches (never between prefetch() and match()): merges the delta
        once it holds ``delta_limit`` keys."""
        if self._delta_keys >= self.delta_limit:
            self.compact()

    def add_many(self, ids: list[str], idhs: np.ndarray, sigs: np.ndarray, keys: np.ndarray) -> None:
        """Add entries in bulk (start-up reload, gold sets), in their order: the same index as
        calling add() for each, built with array operations instead of a Python loop."""
        n = len(ids)
        if n == 0:
            return
        self.compact()  # keep the delta empty so bulk keys can go straight to the sorted part
        start = self.n_total
        pos = 0
        while pos < n:
            c, i = divmod(self.n_total, CHUNK)
            if i == 0:
                self._sigs[c] = np.zeros((CHUNK, NUM_PERM), dtype=np.uint16)
                self._idh[c] = np.zeros(CHUNK, dtype=np.uint64)
                self._ids[c] = []
            take = min(CHUNK - i, n - pos)
            self._sigs[c][i:i + take] = sigs[pos:pos + take]  # keeps the low 16 bits
            self._idh[c][i:i + take] = idhs[pos:pos + take]
            self._ids[c].extend(ids[pos:pos + take])
            self.n_total += take
            pos += take
            while len(self) > self.capacity:
                self._evict_oldest_chunk()
        first = max(start, self.first_live)
        m = keys.shape[1]
        nk = np.asarray(keys[first - start:], dtype=np.uint64).ravel()
        nv = np.repeat(np.arange(first, self.n_total, dtype=np.int64), m)
        order = np.lexsort((nv, nk))
        self._merge_sorted(nk[order], nv[order])

    def _merge_sorted(self, nk: np.ndarray, nv: np.ndarray) -> None:
        """Merge sorted (key, entry) pairs, all newer than the indexed ones, into the sorted
        arrays, and drop evicted entries."""
        pos = np.searchsorted(self._keys, nk, side="right")
        self._keys = np.insert(self._keys, pos, nk)
        self._vals = np.insert(self._vals, pos, nv)
        if len(self._vals) and self._vals.min() < self.first_live:
            live = self._vals >= self.first_live
            self._keys, self._vals = self._keys[live], self._vals[live]

    def _evict_oldest_chunk(self) -> None:
        c = self.first_live // CHUNK
        self.first_live = (c + 1) * CHUNK
        self.evicted += CHUNK
        del self._sigs[c], self._idh[c], self._ids[c]
        # sorted keys of evicted entries are skipped on lookup and dropped at the next compact

    def compact(self) -> None:
        """Merge the delta dict into the sorted arrays and drop evicted entries."""
        nk = np.empty(0, dtype=np.uint64)
        nv = np.empty(0, dtype=np.int64)
        if self._delta:
            ks, vs = [], []
            for k, d in self._delta.items():
                if isinstance(d, list):
                    ks.extend([k] * len(d))
                    vs.extend(d)
                else:
                    ks.append(k)
                    vs.append(d)
            nk = np.array(ks, dtype=np.uint64)
            nv = np.array(vs, dtype=np.int64)
            order = np.lexsort((nv, nk))
            nk, nv = nk[order], nv[order]
            self._delta = {}
            self._delta_keys = 0
        self._merge_sorted(nk, nv)

    def memory_bytes(self) -> int:
        """Bytes held by the index's arrays and the ids (an estimate for the Python parts)."""
        arrays = sum(a.nbytes for a in self._sigs.values()) + sum(a.nbytes for a in self._idh.values())
        arrays += self._keys.nbytes + self._vals.nbytes
        ids = sum(8 + 49 + len(x) for lst in self._ids.values() for x in lst)
        delta = self._delta_keys * 100
        return arrays + ids + delta
