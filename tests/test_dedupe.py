import numpy as np

from kernel.similarity import exact_hash, id_hash, normalise, signatures
from streams.curate.dedupe import CHUNK, DedupeIndex


def entry(idx: DedupeIndex, text: str):
    n = normalise(text)
    sig = signatures([n], 5)
    keys = idx.keys_for(sig, np.array([exact_hash(n)], dtype=np.uint64))
    return sig[0], keys[0]


def add(idx, eid, text):
    sig, keys = entry(idx, text)
    idx.add(eid, id_hash(eid), sig, keys)


def match(idx, eid, text, compact_first=False):
    sig, keys = entry(idx, text)
    return idx.match(sig, keys, id_hash(eid), idx.prefetch(keys[None, :]), 0)


def test_exact_near_self_and_miss():
    idx = DedupeIndex(0.8)
    add(idx, "a", "Starbucks coffee 123 Main street Seattle")
    assert match(idx, "b", "starbucks COFFEE 123 main street seattle").kind == "exact"
    near = match(idx, "c", "Starbucks coffee 123 Main street Seattle WA")
    assert near.kind == "near" and near.entry_id == "a" and near.similarity >= 0.8
    assert match(idx, "a", "Starbucks coffee 123 Main street Seattle").kind == "self"
    assert match(idx, "d", "Completely different rent payment") is None


def test_matches_survive_compaction_into_sorted_arrays():
    idx = DedupeIndex(0.8, delta_limit=10)
    for i in range(50):
        add(idx, f"e{i}", f"merchant number {i} purchase at the store")
    idx.maybe_compact()
    assert idx._delta == {} and len(idx._keys) > 0
    m = match(idx, "x", "merchant number 7 purchase at the store")
    assert m.kind == "exact" and m.entry_id == "e7"


def test_earliest_matching_entry_wins():
    idx = DedupeIndex(0.5)
    add(idx, "first", "alpha beta gamma delta epsilon")
    add(idx, "second", "alpha beta gamma delta epsilon zeta")
    m = match(idx, "q", "alpha beta gamma delta epsilon zeta eta")
    assert m.entry_id == "first"


def test_bound_evicts_oldest_chunk():
    idx = DedupeIndex(0.8, capacity=CHUNK)
    texts = [f"unique item {i} xyz" for i in range(CHUNK + 1)]
    n = [normalise(t) for t in texts]
    sigs = signatures(n, 5)
    ex = np.array([exact_hash(x) for x in n], dtype=np.uint64)
    ids = [f"i{i}" for i in range(len(texts))]
    idx.add_many(ids, np.array([id_hash(i) for i in ids], dtype=np.uint64), sigs, idx.keys_for(sigs, ex))
    assert idx.evicted == CHUNK and len(idx) == 1
    assert match(idx, "z", texts[0]) is None          # forgotten: beyond the bound
    assert match(idx, "z", texts[-1]).kind == "exact"  # still remembered
    idx.compact()
    assert (idx._vals >= idx.first_live).all()


def test_memory_is_compact():
    idx = DedupeIndex(0.8)
    texts = [normalise(f"purchase {i} at shop {i * 7}") for i in range(2 * CHUNK)]
    sigs = signatures(texts, 5)
    ex = np.array([exact_hash(x) for x in texts], dtype=np.uint64)
    ids = [str(i) for i in range(len(texts))]
    idx.add_many(ids, np.array([id_hash(i) for i in ids], dtype=np.uint64), sigs, idx.keys_for(sigs, ex))
    idx.compact()
    per_entry = idx.memory_bytes() / len(texts)
    # 16-bit signature 128 B + 11 keys x 16 B + id hash and id: far below a dict-of-ints index
    assert per_entry < 450, per_entry


def test_bulk_add_matches_one_by_one():
    texts = [normalise(f"shop {i % 40} order {i % 7} card") for i in range(3000)]
    sigs = signatures(texts, 5)
    ex = np.array([exact_hash(x) for x in texts], dtype=np.uint64)
    ids = [f"i{i}" for i in range(len(texts))]
    idhs = np.array([id_hash(i) for i in ids], dtype=np.uint64)
    one, bulk = DedupeIndex(0.8, delta_limit=500), DedupeIndex(0.8)
    keys = one.keys_for(sigs, ex)
    for i in range(len(ids)):
        one.add(ids[i], int(idhs[i]), sigs[i], keys[i])
        one.maybe_compact()
    bulk.add_many(ids, idhs, sigs, keys)
    for q in ("shop 3 order 3 card", "shop 3 order 3 cards", "nothing like it", "shop 39 order 6 card!"):
        a, b = match(one, "q", q), match(bulk, "q", q)
        assert (a and (a.kind, a.entry_id)) == (b and (b.kind, b.entry_id)), q
