"""The review service and gold growth on the real embedded ClickHouse: bad input, duplicates,
replays, contamination."""

from __future__ import annotations

import base64

import orjson

from kernel.gold import import_gold, load_gold, version_sources
from kernel.similarity import normalise, signatures
from kernel.tasks import parse_task
from streams.review.grow import grow, near_matches
from streams.review.service import Record, ReviewService
from tests.helpers.review import item, run

TASK = parse_task({"name": "tx", "labels": ["food", "travel", "rent"], "slice": "meta.country",
                   "review": {"min_submissions": 1, "low_conf_gold_share": 1.0}})
TASKS = {"tx": TASK}




def verdict(vid, item_id, answer="food", reviewer="ann", action="submit", task="tx"):
    obj = {"verdict_id": vid, "item_id": item_id, "task": task, "reviewer": reviewer, "action": action,
           "decided_at": "2026-01-01T10:00:00Z", "schema_version": 1}
    if action == "submit":
        obj["answer"] = answer
    return Record(orjson.dumps(obj), "review.verdicts", 0, 0)




def count(store, sql):
    return int(store.scalar(sql))


def test_bad_input_is_dead_lettered_and_nothing_counts_twice(store):
    svc = ReviewService(TASKS, store)
    recs = [item("a", "TESCO STORES 1"), item("b", "UBER TRIP 2"),
            Record(b"not json", "review.verdicts", 0, 7),
            Record(orjson.dumps({"verdict_id": "x"}), "review.verdicts", 0, 8),
            verdict("v-unknown", "nope"),
            verdict("v-bad-answer", "a", answer="pizza"),
            verdict("v1", "a", "food"), verdict("v1", "a", "food"),   # same verdict twice in a batch
            verdict("v2", "b", "travel", reviewer="bob")]
    plan, dead, pool = run(svc, recs)
    reasons = [d["reason"] for d in dead]
    assert len(dead) == 4, reasons
    assert any("not JSON" in r for r in reasons) and any("schema" in r for r in reasons)
    assert any("unknown review item 'nope'" in r for r in reasons)
    assert any("not a label" in r for r in reasons)
    assert base64.b64decode(dead[0]["original_b64"]) == b"not json"  # nothing lost
    # replay the whole batch: no new rows, no new dead letters except the same bad ones
    plan2, dead2, _ = run(svc, recs)
    assert plan2.counts["verdicts_new"] == 0 and plan2.counts["items_new"] == 0
    assert count(store, "SELECT count() FROM review_verdicts FINAL") == 2
    assert count(store, "SELECT count() FROM review_items FINAL") == 2
    rows = {r["item_id"]: r for r in store.rows("SELECT * FROM review_items FINAL")}
    assert rows["a"]["status"] == "submitted" and rows["a"]["answer"] == "food" and rows["a"]["route"] == "gold"
    # a reused verdict id with a different answer is refused, not applied
    _, dead3, _ = run(svc, [verdict("v1", "a", "rent")])
    assert "already used" in dead3[0]["reason"]
    assert store.scalar("SELECT answer FROM review_items FINAL WHERE item_id = 'a'") == "food"


def test_low_conf_to_pool_never_gold(store):
    task = parse_task({"name": "tx", "labels": ["food", "travel", "rent"], "slice": "meta.country",
                       "review": {"low_conf_gold_share": 0.0}})
    svc = ReviewService({"tx": task}, store)
    _, _, pool = run(svc, [item("p1", "ALDI 77"), verdict("w1", "p1", "food")])
    assert [p["id"] for p in pool] == ["human:p1"] and pool[0]["meta"]["source"] == "review:low_conf"
    assert pool[0]["meta"]["country"] == "GB"
    _, _, pool2 = run(svc, [verdict("w1", "p1", "food")])  # replay: routed once
    assert pool2 == []
    assert store.scalar("SELECT outcome FROM review_routing FINAL WHERE item_id = 'p1'") == "published"
    assert grow(store, task).added == []  # pool items never grow the gold set


def test_growth_with_contamination_and_sources(store, tmp_path):
    seed = tmp_path / "g.jsonl"
    seed.write_bytes(b"\n".join(orjson.dumps(r) for r in [
        {"id": "g1", "input": "RENT PAYMENT MARCH", "output": "rent", "slice": "GB", "teacher_output": "rent"}]))
    import_gold(store, TASK, seed)
    store.insert("examples", [{"id": "e1", "ts": "2026-01-01 00:00:00", "task": "tx", "input": "uber trip to airport 55",
                               "output": "travel", "slice": "GB", "confidence": 0.9, "teacher": "t", "meta": "{}",
                               "input_hash": 0, "source_partition": 0, "source_offset": 0,
                               "curated_at": "2026-01-01 00:00:00"}])
    store.insert("model_registry", [{"task": "tx", "version": "tx-v1", "seq": 1, "status": "approved",
                                     "dataset_manifest": orjson.dumps({"watermark": "2026-01-02 00:00:00.000"}).decode(),
                                     "created_at": "2026-01-02 00:00:00", "updated_at": "2026-01-02 00:00:00"}])
    svc = ReviewService(TASKS, store)
    run(svc, [item("d1", "SHELL PETROL 12", kind="canary_disagreement",
                   answers={"incumbent": "travel", "candidate": "food"}),
              item("d2", "uber trip to airport 56"),           # near duplicate of a trained example
              item("d3", "rent payment march"),               # exact duplicate of gold (normalised)
              item("d4", "NETFLIX MONTHLY 9"),
              verdict("x1", "d1", "travel"), verdict("x2", "d2", "travel"), verdict("x3", "d3", "rent"),
              verdict("x4", "d4", "food")])
    res = grow(store, TASK)
    assert res.created and res.version == 2 and sorted(res.added) == ["d1", "d4"]
    why = dict(res.refused)
    assert "trained tx-v1" in why["d2"] and "near duplicate" in why["d2"]
    assert "gold example 'g1'" in why["d3"]
    _, rows = load_gold(store, "tx", 2)
    by = {r["id"]: r for r in rows}
    assert by["d1"]["source"] == "disagreement" and by["d4"]["source"] == "low_conf" and by["g1"]["source"] == "seed"
    assert by["d4"]["teacher_output"] == "food" and by["d1"]["teacher_output"] is None
    assert version_sources(store, "tx")[-1]["sources"] == {"disagreement": 1, "low_conf": 1, "seed": 1}
    assert load_gold(store, "tx", 1)[1][0]["id"] == "g1" and len(load_gold(store, "tx", 1)[1]) == 1  # v1 frozen
    again = grow(store, TASK)  # nothing new: no version, nothing counted twice
    assert not again.created and again.version == 2 and again.added == []
    assert count(store, "SELECT count() FROM review_routing FINAL WHERE outcome = 'refused'") == 2


def test_near_matches_finds_the_duplicate_only():
    cand = signatures([normalise("uber trip to airport 56"), normalise("completely different")], 5)
    ref = signatures([normalise("groceries"), normalise("uber trip to airport 55")], 5)
    m = near_matches(cand, ref, 0.7)
    assert [(c, r) for c, r, _ in m] == [(0, 1)]
