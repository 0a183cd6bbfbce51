"""The canary stage against real HTTP model servers (a raw asyncio one: slow, or answering a
fixed label) and the real embedded ClickHouse; the canary start/stop decisions (pure)."""

import asyncio
import json

import orjson
import pytest

from kernel.tasks import parse_task
from schemas.events import validate
from serving.config import Route, VersionRef
from serving.live import live_record
from streams.canary.config import CanaryConfig
from streams.canary.stage import CanaryStage
from streams.canary.store import counts, ensure_tables
from streams.promote.policy import PromotionError, decide_canary_start, decide_canary_stop

TASK = parse_task({"name": "tx", "labels": ["a", "b", "c"]})
V1, V2 = VersionRef("tx-v1", "/a1", "encoder_classifier"), VersionRef("tx-v2", "/a2", "encoder_classifier")
ROUTE = Route("tx", 2, "tx-v1", canary="tx-v2", canary_share=1.0, versions={"tx-v1": V1, "tx-v2": V2})


async def model_server(delay_s: float, label: str):
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                n = next(int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length"))
                req = orjson.loads(await reader.readexactly(n))
                await asyncio.sleep(delay_s)
                body = orjson.dumps({"data": [{"label": label if "refund" not in req["input"][0] else "c"}]})
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
        except Exception:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def live(i, output="a", version="tx-v1", text=None, teacher=None):
    rec = live_record(id=f"r{i}", task="tx", input=text or f"shop {i}", output=output, model_version=version,
                      latency_ms=2.0)
    if teacher is not None:
        rec["teacher_output"] = teacher
    return orjson.dumps(rec)


def stage(store, url, timeout_s=5.0, concurrency=2):
    s = CanaryStage({"tx": TASK}, {"tx": CanaryConfig(pct=100)}, store, model_url=url, timeout_s=timeout_s,
                    concurrency=concurrency)
    s.routes["tx"] = ROUTE
    return s


def test_a_slow_candidate_never_blocks_the_agent_excess_is_shed_and_timeouts_are_errors(store):
    async def run():
        server, url = await model_server(5.0, "a")
        s = stage(store, url, timeout_s=0.3, concurrency=2)
        for i in range(100):
            await s.offer(live(i), 0, i)
        # the agent handed work to the pool and moved on: nothing answered yet, the excess shed
        assert s.counters["shadowed"] == s.capacity == 8 and s.counters["shed"] == 92 and not s.done
        while s.inflight:
            await asyncio.sleep(0.05)
        assert len(s.done) == 8 and all(p["error"].startswith("timeout") and p["agree"] is None for p in s.done)
        await s.flush()
        await s.close()
        server.close()

    asyncio.run(run())
    ensure_tables(store)
    c = counts(store, "tx", "tx-v2")
    assert c["a"].pairs == 8 and c["a"].errors == 8 and c["a"].disagree == 8


def test_pairs_disagreements_review_items_and_invalid_messages_skipped(store):
    sent = {"pairs": [], "review": []}

    async def run():
        server, url = await model_server(0.0, "b")
        s = stage(store, url)

        async def pub(kind, items):
            sent[kind] += items
        s.publish_pairs = lambda items: pub("pairs", items)
        s.publish_review = lambda items: pub("review", items)
        await s.offer(live(1, output="b"), 0, 1)                      # agrees
        await s.offer(live(2, output="a", teacher="b"), 0, 2)         # disagrees; the candidate is right
        await s.offer(live(3, output="a", version="tx-v2"), 0, 3)     # answered by the canary itself: skipped
        await s.offer(b"{not json", 0, 4)                             # invalid: skipped, counted
        await s.offer(live(5, version="tx-v1")[:-1], 0, 5)            # truncated: skipped, counted
        assert not hasattr(s, "publish_dead")  # the drift stage alone dead-letters live.requests
        while s.inflight:
            await asyncio.sleep(0.02)
        await s.flush()
        await s.flush()                                               # nothing left: idempotent
        await s.close()
        server.close()
        return s.counters

    ensure_tables(store)
    s_counters = asyncio.run(run())
    pairs = [orjson.loads(v) for _, v in sent["pairs"]]
    assert sorted((p["request_id"], p["agree"]) for p in pairs) == [("r1", True), ("r2", False)]
    for p in pairs:
        validate("canary.pairs.schema.json", p)
    (item,) = [orjson.loads(v) for _, v in sent["review"]]
    validate("review.queue.schema.json", item)
    assert item["kind"] == "canary_disagreement" and item["answers"] == {"incumbent": "a", "candidate": "b",
                                                                         "teacher": "b"}
    assert s_counters["invalid"] == 2
    c = counts(store, "tx", "tx-v2", "tx-v1")
    assert c["a"].pairs == 1 and c["a"].disagree == 1 and c["a"].cand_better == 1 and c["b"].disagree == 0


def test_only_the_hashed_share_is_shadowed(store):
    async def run():
        server, url = await model_server(0.0, "a")
        s = stage(store, url, concurrency=64)
        s.routes["tx"] = Route("tx", 2, "tx-v1", canary="tx-v2", canary_share=0.3, versions={"tx-v1": V1, "tx-v2": V2})
        for i in range(200):
            await s.offer(live(i), 0, i)
        n = s.counters["shadowed"] + s.counters["shed"]
        await s.close()
        server.close()
        return n

    assert 35 <= asyncio.run(run()) <= 85


ROW = {"task": "tx", "version": "tx-v2", "status": "approved"}


def test_canary_start_and_stop_decisions():
    cur = Route("tx", 1, "tx-v1", versions={"tx-v1": V1})
    d = decide_canary_start("tx", ROW, True, cur, V2, 0.3, version="tx-v2", decided_by="me", reason="",
                            decided_at="2026-01-01T00:00:00Z")
    assert d.route.canary == "tx-v2" and d.route.canary_share == 0.3 and d.route.serving == "tx-v1"
    assert d.route.revision == 2 and d.transitions[0][1] == "canary" and d.route.action == "canary_start"
    for kw, msg in ((dict(current=None), "no serving version"), (dict(gate_approved=False), "rejected by the gate"),
                    (dict(gate_approved=None), "no gate verdict"), (dict(share=0.0), "share")):
        args = dict(row=ROW, gate_approved=True, current=cur, ref=V2, share=0.3) | kw
        with pytest.raises(PromotionError, match=msg):
            decide_canary_start("tx", args["row"], args["gate_approved"], args["current"], args["ref"], args["share"],
                                version="tx-v2", decided_by="me", reason="", decided_at="t")
    with pytest.raises(PromotionError, match="already in canary"):
        decide_canary_start("tx", {**ROW, "version": "tx-v3"}, True, ROUTE, V2, 0.3, version="tx-v3", decided_by="m",
                            reason="", decided_at="t")
    row = {**ROW, "status": "canary"}
    stop = decide_canary_stop("tx", ROUTE, row, version=None, abort=False, decided_by="m", reason="", decided_at="t")
    abort = decide_canary_stop("tx", ROUTE, row, version="tx-v2", abort=True, decided_by="m", reason="", decided_at="t")
    assert stop.route.canary is None and stop.route.serving == "tx-v1" and "tx-v2" not in stop.route.versions
    assert stop.transitions == (("tx-v2", "approved"),) and abort.transitions == (("tx-v2", "rejected"),)
    assert json.loads(json.dumps(abort.route.to_record()))["action"] == "canary_stop"
    with pytest.raises(PromotionError, match="no version in canary"):
        decide_canary_stop("tx", cur, row, version=None, abort=True, decided_by="m", reason="", decided_at="t")


def test_each_task_is_judged_by_exactly_one_of_two_workers():
    from aiokafka.partitioner import DefaultPartitioner

    from streams.canary.pairs import judged_here, owner_partition

    tasks = [f"task-{i}" for i in range(40)]
    for t in tasks:   # the partition the producer puts a task's pairs on
        assert owner_partition(t, 4) == DefaultPartitioner()(t.encode(), [0, 1, 2, 3], [0, 1, 2, 3])
    assert len({owner_partition(t, 4) for t in tasks}) == 4
    for split in (({0, 1}, {2, 3}), ({0, 2, 3}, {1}), ({0, 1, 2, 3}, set())):
        for t in tasks:
            assert [judged_here(t, a, 4) for a in split].count(True) == 1, (t, split)
    # mid-rebalance (nothing assigned) nobody judges; the partition pairs were read from wins
    assert not judged_here("task-0", set(), 4)
    p = owner_partition("task-0", 4)
    assert judged_here("task-0", {(p + 1) % 4}, 4, seen_on=(p + 1) % 4)
    assert not judged_here("task-0", {p}, 4, seen_on=(p + 1) % 4)
    with pytest.raises(ValueError, match="at least one partition"):
        owner_partition("t", 0)


def test_two_stages_split_the_judging_by_partition_assignment(store):
    from streams.canary.pairs import owner_partition

    names = [f"t{i}" for i in range(12)]
    tasks = {n: parse_task({"name": n, "labels": ["a", "b"]}) for n in names}
    cfgs = {n: CanaryConfig() for n in names}

    async def run():
        a = CanaryStage(tasks, cfgs, store, model_url="http://127.0.0.1:9")
        b = CanaryStage(tasks, cfgs, store, model_url="http://127.0.0.1:9")
        a.assigned, b.assigned = (lambda: {0, 1}), (lambda: {2, 3})
        owned = a.owned(), b.owned()
        alone = CanaryStage(tasks, cfgs, store, model_url="http://127.0.0.1:9")   # no group: judges all
        everything = alone.owned()
        for s in (a, b, alone):
            await s.close()
        return owned, everything

    (oa, ob), everything = asyncio.run(run())
    assert sorted(oa + ob) == sorted(names) and not set(oa) & set(ob) and oa and ob
    assert all(owner_partition(t, 4) in {0, 1} for t in oa)
    assert everything == names
