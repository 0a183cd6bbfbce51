"""Gold growth at the same moment from two writers (the review agent's automatic growth and a
person's `flywheel gold grow` / `gold import`) on the real embedded ClickHouse: every version
number is written once, each version is its parent plus one writer's rows, nothing is added twice.
Writers run as threads on the owned store and as separate processes through the owner endpoint
(the way the stream worker and the CLI reach the store)."""

from __future__ import annotations

import multiprocessing
import threading
import time

import orjson
import pytest

from kernel.gold import (GoldConflict, _content_hash, claim_version, finish_claim, import_gold, load_gold,
                         write_version)
from kernel.settings import load_settings
from kernel.tasks import parse_task
from kernel.warehouse import open_warehouse
from kernel.warehouse.migrate import apply_ddl
from kernel.warehouse.owner import OwnerServer
from streams.review.grow import grow
from streams.review.service import Record, ReviewService
from tests.helpers.review import item, run

TASK = parse_task({"name": "tx", "labels": ["food", "travel", "rent"], "slice": "meta.country",
                   "review": {"min_submissions": 1, "low_conf_gold_share": 1.0}})
WORDS = ["TESCO", "UBER", "SHELL", "NETFLIX", "ALDI", "RYANAIR", "VODAFONE", "STARBUCKS", "IKEA", "BOOTS"]


def verdict(vid, item_id, answer="food"):
    return Record(orjson.dumps({"verdict_id": vid, "item_id": item_id, "task": "tx", "reviewer": "ann",
                                "action": "submit", "answer": answer, "decided_at": "2026-01-01T10:00:00Z",
                                "schema_version": 1}), "review.verdicts", 0, 0)


def complete(store, ids):
    run(ReviewService({"tx": TASK}, store),
        [item(i, f"{WORDS[n % len(WORDS)]} {i} PAYMENT {n * 7919}") for n, i in enumerate(ids)]
        + [verdict(f"v-{i}", i) for i in ids])


def check_lineage(store, task="tx"):
    """Every visible version: one gold_sets row, one claim, its parent's rows plus new ones, the
    stored size and hash matching the stored rows (two writers of one number would break both)."""
    sets = store.rows(f"SELECT version, parent_version, n_examples, content_hash FROM gold_sets WHERE task = '{task}' "
                      "ORDER BY version")
    versions = [int(s["version"]) for s in sets]
    assert len(versions) == len(set(versions)), f"a version written twice: {versions}"
    claims = store.rows(f"SELECT version, count() AS n FROM gold_claims WHERE task = '{task}' AND state = 'claimed' "
                        "GROUP BY version")
    assert all(int(c["n"]) == 1 for c in claims), claims
    prev_ids: set[str] = set()
    for s in sets:
        v = int(s["version"])
        _, rows = load_gold(store, task, v)
        raw = int(store.scalar(f"SELECT count() FROM gold_examples WHERE task = '{task}' AND version = {v}"))
        assert raw == len(rows) == int(s["n_examples"]), (v, raw, len(rows), s)
        assert _content_hash(rows) == s["content_hash"], v
        ids = {r["id"] for r in rows}
        if int(s["parent_version"]):
            _, parent = load_gold(store, task, int(s["parent_version"]))
            assert {r["id"] for r in parent} <= ids, f"v{v} lost rows of its parent"
        assert prev_ids <= ids, f"v{v} lost rows of the version before it"
        prev_ids = ids
    return versions, prev_ids


def test_claim_has_one_winner_and_the_loser_recomputes(store):
    barrier = threading.Barrier(6)
    got: list = []

    def claimer():
        barrier.wait()
        got.append(claim_version(store, "tx", 0, wait_seconds=20))

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:  # the winner returns at once; the others wait for it
        time.sleep(0.01)
    winners = [c for c in got if c is not None]
    assert len(winners) == 1 and winners[0].version == 1
    write_version(store, "tx", 0, [], [{"id": "a", "input": "x", "output": "food", "slice": "GB",
                                       "teacher_output": None}], "test", claim=winners[0])
    finish_claim(store, winners[0])
    for t in threads:
        t.join(20)
    assert len(got) == 6 and got.count(None) == 5  # the others saw v1 written: recompute on top of it
    with pytest.raises(GoldConflict, match="another writer made a new version on top of v0"):
        write_version(store, "tx", 0, [], [{"id": "b", "input": "y", "output": "food", "slice": "GB",
                                           "teacher_output": None}], "stale")
    assert check_lineage(store)[0] == [1]


def test_dead_claim_is_skipped_after_its_lease(store):
    dead = claim_version(store, "tx", 0)
    assert dead is not None and dead.version == 1  # never finished: its holder "died"
    with pytest.raises(GoldConflict, match="being written by another process"):
        claim_version(store, "tx", 0, wait_seconds=0.2)
    time.sleep(0.05)
    nxt = claim_version(store, "tx", 0, lease_seconds=0.01, wait_seconds=5)
    assert nxt is not None and nxt.version == 2 and nxt.parent == 0  # number 1 stays unused


def test_concurrent_growth_and_import_threads(store, tmp_path):
    complete(store, [f"i{n}" for n in range(12)])
    files = []
    for k in range(3):
        f = tmp_path / f"seed{k}.jsonl"
        f.write_bytes(orjson.dumps({"id": f"s{k}", "input": f"SEED ROW {k} {k * 31}", "output": "rent", "slice": "GB"}))
        files.append(f)
    barrier = threading.Barrier(5)
    results: dict[str, object] = {}
    errors: list[BaseException] = []

    def worker(name, fn):
        try:
            barrier.wait()
            results[name] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    jobs = [("grow-auto", lambda: grow(store, TASK)), ("grow-manual", lambda: grow(store, TASK))]
    jobs += [(f"import{k}", (lambda f=f: import_gold(store, TASK, f))) for k, f in enumerate(files)]
    threads = [threading.Thread(target=worker, args=j) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    versions, final_ids = check_lineage(store)
    assert versions == list(range(1, len(versions) + 1))
    growths = [results["grow-auto"], results["grow-manual"]]
    added = [i for g in growths for i in g.added]
    assert sorted(added) == sorted(f"i{n}" for n in range(12))  # every item added once, by one growth
    assert sum(g.created for g in growths) == 1
    assert len(versions) == 4  # one growth + three imports, each its own number
    assert final_ids == {f"i{n}" for n in range(12)} | {"s0", "s1", "s2"}
    routed = store.rows("SELECT item_id, gold_version AS version FROM review_routing FINAL WHERE outcome = 'added'")
    assert len(routed) == 12 and len({int(r["version"]) for r in routed}) == 1


def _grow_in_process(data_dir, start, out):
    """A separate process reaching the store through the owner endpoint, like `flywheel gold grow`."""
    s = load_settings({}, data_dir=data_dir)
    store = open_warehouse(s)
    try:
        start.wait(30)
        res = grow(store, TASK)
        out.put((res.version, res.created, sorted(res.added)))
    finally:
        store.close()


def test_concurrent_growth_in_processes_through_the_owner(tmp_path):
    s = load_settings({}, data_dir=tmp_path / "data")
    owned = open_warehouse(s, own=True)
    apply_ddl(owned)
    server = OwnerServer(owned, s.data_dir).start()
    try:
        complete(owned, [f"p{n}" for n in range(6)])
        ctx = multiprocessing.get_context("spawn")
        start, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_grow_in_process, args=(s.data_dir, start, out)) for _ in range(2)]
        for p in procs:
            p.start()
        start.set()
        got = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        assert sum(c for _, c, _ in got) == 1
        assert sorted(i for _, _, a in got for i in a) == [f"p{n}" for n in range(6)]
        versions, ids = check_lineage(owned)
        assert versions == [1] and ids == {f"p{n}" for n in range(6)}
        # then a third growth with new items lands on v2, on top of v1
        complete(owned, ["q1"])
        res = grow(owned, TASK)
        assert res.version == 2 and res.added == ["q1"] and check_lineage(owned)[0] == [1, 2]
    finally:
        server.stop()
        owned.close()
