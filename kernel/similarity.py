"""Normalisation, exact hashes and MinHash signatures of character shingles.

Near-duplicate similarity is the Jaccard similarity of the sets of character ``k``-shingles of
the normalised input. MinHash estimates it: with ``P`` independent hash functions, the share
of equal signature components is an unbiased estimate of the Jaccard similarity.

Everything here is vectorised over a batch with NumPy: the rolling shingle hash, a splitmix64
finaliser and ``P`` multiply-shift hash functions, then a segmented minimum. Per event this is a
handful of array operations instead of one Python call per shingle (datasketch's
``MinHash.update`` path), which is what the curate agent's throughput target needs.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import numpy as np
import xxhash

NUM_PERM = 64
_SPACE = re.compile(r"\s+")
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def normalise(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace runs collapsed to one space, trimmed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def exact_hash(normalised: str) -> int:
    """64-bit hash of the normalised input (xxh3), the exact-duplicate key."""
    return xxhash.xxh3_64_intdigest(normalised.encode("utf-8"))


def id_hash(event_id: str) -> int:
    return xxhash.xxh3_64_intdigest(event_id.encode("utf-8"), seed=7)


def shingles(normalised: str, k: int) -> set[str]:
    """The set of character k-shingles (the whole string if shorter than k). Reference only."""
    if len(normalised) <= k:
        return {normalised}
    return {normalised[i:i + k] for i in range(len(normalised) - k + 1)}


def jaccard(a: str, b: str, k: int) -> float:
    """Exact Jaccard similarity of the k-shingle sets of two normalised strings."""
    sa, sb = shingles(a, k), shingles(b, k)
    union = len(sa | sb)
    return len(sa & sb) / union if union else 1.0


def _splitmix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@lru_cache(maxsize=8)
def _perms(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Affine maps h -> a*h + b (mod 2^32), a odd. The shingle hashes they permute are already
    splitmix64-mixed, so this cheap family estimates Jaccard without bias (tested against exact
    Jaccard in tests/test_similarity.py)."""
    rng = np.random.default_rng(seed)
    a = (rng.integers(0, 2**31, size=num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1))
    b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint32)
    return a[:, None], b[:, None]


@lru_cache(maxsize=16)
def _powers(k: int) -> np.ndarray:
    base = np.uint64(1099511628211)  # FNV prime as the polynomial base
    out = np.ones(k, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(k - 2, -1, -1):
            out[i] = out[i + 1] * base
    return out


def shingle_hashes(normalised_texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every k-shingle of every text, and each text's start in that array.

    A text shorter than ``k`` has one shingle, itself (padded with zeros)."""
    lengths = np.fromiter((len(t) for t in normalised_texts), dtype=np.int64, count=len(normalised_texts))
    padded = np.maximum(lengths, k)
    joined = "".join(t + "\0" * (p - n) for t, n, p in zip(normalised_texts, lengths, padded))
    cps = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    ends = np.cumsum(padded)
    starts = ends - padded
    windows = np.lib.stride_tricks.sliding_window_view(cps, k)
    # valid windows start at [start, end-k] of each text
    counts = padded - k + 1
    offsets = np.repeat(starts, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    with np.errstate(over="ignore"):
        h = windows[offsets] @ _powers(k)
        h = _splitmix(h ^ np.uint64(k))
    seg_starts = np.cumsum(counts) - counts
    return h, seg_starts


def signatures(normalised_texts: list[str], k: int, num_perm: int = NUM_PERM,
               chunk_shingles: int = 1 << 15) -> np.ndarray:
    """MinHash signatures, shape (len(texts), num_perm), dtype uint32."""
    n = len(normalised_texts)
    out = np.empty((n, num_perm), dtype=np.uint32)
    if n == 0:
        return out
    h64, seg = shingle_hashes(normalised_texts, k)
    h = (h64 >> np.uint64(32)).astype(np.uint32)
    a, b = _perms(num_perm)
    bounds = np.append(seg, len(h))
    i = 0
    while i < n:  # whole texts in chunks of about chunk_shingles shingles: bounded memory
        j = max(int(np.searchsorted(bounds, bounds[i] + chunk_shingles, side="right")) - 1, i + 1)
        lo, hi = int(bounds[i]), int(bounds[j])
        vals = a * h[lo:hi][None, :] + b
        out[i:j] = np.minimum.reduceat(vals, seg[i:j] - lo, axis=1).T
        i = j
    return out


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray | float:
    """Share of equal components; sig_b may be a matrix of candidates."""
    return (sig_a == sig_b).mean(axis=-1)


def lsh_params(threshold: float, num_perm: int = NUM_PERM, target: float = 0.95) -> tuple[int, int]:
    """Bands and rows per band: the fewest bands (least memory, fewest false candidates) such
    that a pair exactly at the threshold becomes a candidate with probability >= target.
    Candidates are verified on the full signature, so favouring recall here is cheap; with
    64 permutations and threshold 0.8 this gives 10 bands of 6 rows (P = 0.95 at J = 0.8,
    0.15 at J = 0.5)."""
    for b in range(1, num_perm + 1):
        r = num_perm // b
        if 1.0 - (1.0 - threshold ** r) ** b >= target:
            return b, r
    return num_perm, 1


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per (text, band), shape (n, bands). Band index is mixed in, so keys of
    different bands never collide by construction of the hash input."""
    n = sigs.shape[0]
    part = sigs[:, : bands * rows].astype(np.uint64).reshape(n, bands, rows)
    with np.errstate(over="ignore"):
        acc = np.arange(1, bands + 1, dtype=np.uint64)[None, :] * np.uint64(0x9E3779B97F4A7C15)
        for j in range(rows):
            acc = _splitmix(acc ^ part[:, :, j])
    return acc
