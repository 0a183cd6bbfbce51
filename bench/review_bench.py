"""Review benchmark: the review agent's batch work on review.verdicts, and the console's server
time with 100,000 pending items (target <= 300 ms for the review page and the overview).

Real embedded ClickHouse (chdb). The agent figure is the ReviewService's plan + write per batch
(what the Faust agent runs for each batch; the Faust consume overhead comes on top: ~14k
events/s decode-only on this kind of machine). The console is timed in process (embedded store)
and through the owner endpoint that `flywheel console` uses while `flywheel up` owns the store.

    python bench/review_bench.py [--items 100000] [--verdicts 20000] [--batch 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernel.settings import load_settings  # noqa: E402
from kernel.tasks import parse_task  # noqa: E402
from kernel.warehouse.embedded import EmbeddedWarehouse  # noqa: E402
from kernel.warehouse.migrate import apply_ddl  # noqa: E402
from kernel.warehouse.owner import OwnerServer  # noqa: E402
from kernel.warehouse.remote import RemoteWarehouse  # noqa: E402
from schemas.timefmt import ch_time  # noqa: E402
from streams.review.service import Record, ReviewService  # noqa: E402

LABELS = ["groceries", "transport", "dining", "rent", "utilities", "shopping", "income", "other"]
TASK = parse_task({"name": "tx", "labels": LABELS, "slice": "meta.country",
                   "review": {"low_conf_gold_share": 1.0, "grow_after": 0}})


def seed_items(store, n: int) -> None:
    base = time.time() - n
    for start in range(0, n, 20_000):
        rows = [{"task": "tx", "item_id": f"it-{i:07d}", "kind": "low_conf", "slice": ["GB", "FR", "DE"][i % 3],
                 "input": f"MERCHANT {i} STORE {i % 977} LONDON", "answers": orjson.dumps({"teacher": LABELS[i % 8]}).decode(),
                 "confidence": 0.3, "reason": "confidence 0.30 below the task's floor 0.70", "source": "{}", "meta": "{}",
                 "arrived_at": ch_time(base + i), "status": "pending", "open_reason": "", "answer": None,
                 "n_submitted": 0, "n_discarded": 0, "agreement": None, "reviewers": [], "route": "",
                 "completed_at": None, "updated_at": ch_time(digits=6)} for i in range(start, min(n, start + 20_000))]
        store.insert("review_items", rows)


def verdict_records(n: int, offset: int) -> list[Record]:
    return [Record(orjson.dumps({"verdict_id": f"v-{offset + i}", "item_id": f"it-{offset + i:07d}", "task": "tx",
                                 "reviewer": "bench", "action": "submit", "answer": LABELS[i % 8],
                                 "decided_at": "2026-11-21T10:00:00Z", "schema_version": 1}), "review.verdicts", 0, i)
            for i in range(n)]


async def _noop(k, v):
    return None


def bench_agent(store, n: int, batch: int) -> dict:
    svc = ReviewService({"tx": TASK}, store)
    recs = verdict_records(n, 0)
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        asyncio.run(svc.handle(recs[i:i + batch], _noop, _noop))
    new = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, n, batch):  # the same verdicts again: duplicates, nothing written twice
        asyncio.run(svc.handle(recs[i:i + batch], _noop, _noop))
    dup = time.perf_counter() - t0
    rows = int(store.scalar("SELECT count() FROM review_verdicts FINAL"))
    return {"verdicts": n, "batch": batch, "new_verdicts_per_s": round(n / new), "duplicate_verdicts_per_s": round(n / dup),
            "verdict_rows_after_replay": rows}


def time_page(client, path: str, runs: int) -> dict:
    client.get(path)  # warm
    server, wall = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = client.get(path)
        wall.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        server.append(float(r.headers["server-timing"].split("dur=")[1]))
    return {"server_ms_median": round(statistics.median(server), 1), "server_ms_max": round(max(server), 1),
            "wall_ms_median": round(statistics.median(wall), 1)}


def bench_console(store, remote, runs: int) -> dict:
    from starlette.testclient import TestClient

    from console.app import Console, build_app

    async def publish(msg):
        return None

    out = {}
    for name, s in (("embedded", store), ("through_owner_endpoint", remote)):
        client = TestClient(build_app(Console({"tx": TASK}, s, publish)), base_url="http://127.0.0.1")
        client.cookies.set("fw_reviewer", "bench")
        out[name] = {"review_page": time_page(client, "/review/tx", runs),
                     "overview": time_page(client, "/overview/tx", runs)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--verdicts", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "review.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings({}, data_dir=Path(tmp))
        store = EmbeddedWarehouse(settings.chdb_path, lock_dir=settings.data_dir)
        apply_ddl(store)
        owner = OwnerServer(store, settings.data_dir).start()
        try:
            t0 = time.perf_counter()
            seed_items(store, args.items)
            print(f"seeded {args.items} pending items in {time.perf_counter() - t0:.1f}s")
            pending = int(store.scalar("SELECT count() FROM review_items FINAL WHERE status = 'pending'"))
            console = bench_console(store, RemoteWarehouse({"url": owner.url, "token": owner.token}), args.runs)
            print(f"console with {pending} pending items: {orjson.dumps(console).decode()}")
            agent = bench_agent(store, args.verdicts, args.batch)
            print(f"review agent batch work: {agent}")
        finally:
            owner.stop()
            store.close()
    worst = max(v["server_ms_median"] for c in console.values() for v in c.values())
    result = {"machine": "2 shared vCPU, Python 3.11, chdb embedded", "items": args.items, "pending": pending,
              "agent": agent, "console": console, "target_ms": 300, "worst_median_server_ms": worst,
              "meets_target": worst <= 300}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"worst median server time {worst} ms (target 300): {'ok' if worst <= 300 else 'MISSED'} -> {args.out}")


if __name__ == "__main__":
    main()
