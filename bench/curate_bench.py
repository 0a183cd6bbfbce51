"""Curation throughput, per-step cost, dedupe memory and near-duplicate quality.

    .venv/bin/python bench/curate_bench.py [--events 60000] [--repeat 3] [--quick]

In one run, on one embedded broker with one pre-filled teacher.logs topic, it measures:
  raw      the ceiling for any Python consumer: aiokafka consume -> orjson decode
  faust    the framework's ceiling: a Faust agent that only decodes each value
           (same settings as flywheel's worker: fetch wait lowered, uvloop)
  curate   flywheel's curate agent, ClickHouse sink on (time to durable + acked)
and reports events/s (median of --repeat runs) and the ratios curate/faust and faust/raw.
Then: per-event CPU cost of each curate step, dedupe memory per million distinct inputs,
and near-duplicate recall/precision on generated labelled pairs at the task threshold,
against datasketch (default settings) in the same run. Figures go to bench/results/curate.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import orjson  # noqa: E402

TASK_TOML = """
name = "transactions"
labels = ["groceries", "transport", "dining", "rent", "utilities", "shopping", "income", "other"]
min_confidence = 0.7
near_duplicate_threshold = 0.8
slice = "meta.country"
"""
LABELS = ["groceries", "transport", "dining", "rent", "utilities", "shopping", "income", "other"]
MERCHANT_LABEL = {
    "TESCO STORES": "groceries", "SAINSBURYS": "groceries", "UBER *TRIP": "transport", "SHELL": "transport",
    "TFL TRAVEL": "transport", "PRET A MANGER": "dining", "DELIVEROO": "dining", "AMAZON MKTPLACE": "shopping",
    "THAMES WATER": "utilities", "BRITISH GAS": "utilities", "NETFLIX.COM": "utilities", "LANDLORD LTD": "rent",
    "ACME PAYROLL": "income"}
MERCHANTS = list(MERCHANT_LABEL)
CITIES = ["LONDON", "LEEDS", "PARIS", "BERLIN", "MADRID", "DUBLIN", "ROME", "OSLO"]


def make_events(n: int, seed: int = 7) -> list[bytes]:
    """~300-byte teacher logs: 1% invalid, 3% off-label, 5% low confidence, 10% exact and
    5% near duplicates of earlier inputs, the rest distinct."""
    rng = random.Random(seed)
    out, inputs = [], []
    for i in range(n):
        r = rng.random()
        if r < 0.01:
            out.append(b'{"id": "broken-%d", "task": ' % i)
            continue
        if r < 0.16 and inputs:
            base, label = rng.choice(inputs)
            text = base.lower() if r < 0.11 else base + " " + rng.choice(["GB", "UK", "*"])
        else:
            merchant = rng.choice(MERCHANTS)
            text = (f"{merchant} {rng.randint(1000, 99999)} {rng.choice(CITIES)} "
                    f"CARD {rng.randint(1000, 9999)} REF {''.join(rng.choices(string.ascii_uppercase, k=8))}")
            label = MERCHANT_LABEL[merchant]
            inputs.append((text, label))
        label = "crypto" if 0.16 <= r < 0.19 else label
        conf = 0.3 if 0.19 <= r < 0.24 else round(rng.uniform(0.75, 1.0), 3)
        out.append(orjson.dumps({
            "id": f"evt-{i:08d}", "ts": "2026-11-21T10:00:00Z", "task": "transactions", "input": text,
            "output": label, "confidence": conf, "teacher": "teacher-large-2026-10",
            "meta": {"country": rng.choice(["GB", "FR", "DE"]), "channel": "card", "request_ms": rng.randint(80, 900)},
            "schema_version": 1}))
    return out


# ---------------------------------------------------------------------------------------------
# children: each mode runs in its own process and prints one JSON line
# ---------------------------------------------------------------------------------------------

def child_raw(bootstrap: str, n: int, group: str) -> dict:
    from aiokafka import AIOKafkaConsumer

    async def run():
        c = AIOKafkaConsumer("teacher.logs", bootstrap_servers=bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=50)
        await c.start()
        count, t0 = 0, None
        while count < n:
            batch = await c.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                if t0 is None:
                    t0 = time.perf_counter()
                for r in records:
                    try:
                        orjson.loads(r.value)
                    except orjson.JSONDecodeError:
                        pass
                    count += 1
        dt = time.perf_counter() - t0
        await c.stop()
        return dt
    dt = asyncio.run(run())
    return {"events": n, "seconds": dt}


def _faust_settings(bootstrap: str, group: str, data_dir: Path, tasks_dir: Path, fetch_wait: int):
    from dataclasses import replace

    from kernel.settings import load_settings
    s = load_settings({}, data_dir=data_dir, tasks_dir=tasks_dir)
    return replace(s, kafka=replace(s.kafka, bootstrap=bootstrap), consumer_group=group,
                   fetch_max_wait_ms=fetch_wait)


def _finish(result: dict) -> None:
    print(json.dumps(result), flush=True)
    os._exit(0)


def child_faust(bootstrap: str, n: int, group: str, fetch_wait: int) -> None:
    import faust

    from streams.worker.app import tune_fetch_wait
    from streams.worker.runner import run_faust, use_uvloop

    use_uvloop()
    tune_fetch_wait(fetch_wait)
    app = faust.App(group, broker=f"kafka://{bootstrap}", value_serializer="raw", key_serializer="raw",
                    store="memory://", web_enabled=False, autodiscover=False, topic_allow_declare=False,
                    consumer_auto_offset_reset="earliest", broker_session_timeout=10,
                    broker_heartbeat_interval=2, logging_config=None)
    topic = app.topic("teacher.logs", value_serializer="raw", key_serializer="raw")
    state = {"count": 0, "t0": None}

    @app.agent(topic, concurrency=1)
    async def decode_only(stream):
        async for value in stream:
            if state["t0"] is None:
                state["t0"] = time.perf_counter()
            try:
                orjson.loads(value)
            except orjson.JSONDecodeError:
                pass
            state["count"] += 1
            if state["count"] >= n:
                _finish({"events": n, "seconds": time.perf_counter() - state["t0"]})

    run_faust(app, "warning")


def child_curate(bootstrap: str, n: int, group: str, stages: str) -> None:
    from kernel.tasks import load_tasks
    from kernel.warehouse import open_warehouse
    from kernel.warehouse.migrate import apply_ddl
    from streams.worker.app import build_app
    from streams.worker.runner import run_faust, use_uvloop

    use_uvloop()
    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    (tmp / "tasks").mkdir()
    (tmp / "tasks" / "transactions.toml").write_text(TASK_TOML)
    settings = _faust_settings(bootstrap, group, tmp / "data", tmp / "tasks", 50)
    store = open_warehouse(settings, own=True)
    apply_ddl(store)
    from streams.worker.app import WORKER_STAGES

    chosen = WORKER_STAGES[:1] if stages == "none" else WORKER_STAGES  # curate alone, or every stage
    app, ctx = build_app(settings, load_tasks(settings.tasks_dir), store, stages=chosen)
    state = {"count": 0, "t0": None}
    original = ctx.services["curate"].decide

    def first_seen(messages):  # the clock starts when the first batch reaches the agent
        if state["t0"] is None:
            state["t0"] = time.perf_counter()
        return original(messages)

    def durable(decisions):  # curate hooks run once a batch is in ClickHouse and acked
        state["count"] += len(decisions)
        if state["count"] >= n:
            dt = time.perf_counter() - state["t0"]
            rows = store.scalar("SELECT count() FROM curation_events")
            _finish({"events": state["count"], "seconds": dt, "rows": rows,
                     "outcomes": ctx.services["curate"].counts})

    ctx.services["curate"].decide = first_seen
    ctx.curate_hooks.append(durable)
    run_faust(app, "warning")


# ---------------------------------------------------------------------------------------------
# parent
# ---------------------------------------------------------------------------------------------

def run_child(args: list[str], timeout: float = 600) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT)
    for line in reversed(out.stdout.splitlines()):
        if '{"events"' in line:  # Faust may print terminal control codes before it
            return json.loads(line[line.index('{"events"'):])
    raise RuntimeError(f"child {args} gave no result:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")


async def prefill(bootstrap: str, events: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await p.start()
    try:
        futs = [await p.send("teacher.logs", e, key=b"transactions") for e in events]
        for f in futs:
            await f
    finally:
        await p.stop()


def throughput(bootstrap: str, n: int, repeat: int) -> dict:
    modes = {
        "raw": lambda g: ["raw", bootstrap, str(n), g],
        "faust": lambda g: ["faust", bootstrap, str(n), g, "50"],
        "faust_stock_fetch_wait": lambda g: ["faust", bootstrap, str(n), g, "1500"],
        "curate": lambda g: ["curate", bootstrap, str(n), g, "default"],
        "curate_without_other_stages": lambda g: ["curate", bootstrap, str(n), g, "none"],
    }
    results: dict = {}
    for r in range(repeat):  # interleave modes so that machine noise hits them alike
        for name, argf in modes.items():
            res = run_child(argf(f"bench-{name}-{r}-{time.time_ns()}"))
            rate = res["events"] / res["seconds"]
            results.setdefault(name, []).append(rate)
            extra = f" rows={res.get('rows')}" if "rows" in res else ""
            print(f"  run {r + 1}/{repeat} {name:28s} {rate:9.0f} events/s{extra}", flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    return {"events_per_s_median": med, "events_per_s_runs": results,
            "ratio_curate_over_faust": med["curate"] / med["faust"],
            "ratio_faust_over_raw": med["faust"] / med["raw"],
            "ratio_curate_without_stages_over_faust": med["curate_without_other_stages"] / med["faust"]}


def step_costs(events: list[bytes]) -> dict:
    """Per-event CPU cost (µs) of each step, on the same events, batch size as the worker."""
    import tomllib

    from kernel.similarity import exact_hash, id_hash, normalise, signatures
    from kernel.tasks import parse_task
    from schemas.events import TeacherLog, validator
    from streams.curate.policy import Curator, Message
    from streams.curate.rows import curation_event_row

    task = parse_task(tomllib.loads(TASK_TOML))
    objs = []
    for e in events:
        try:
            objs.append(orjson.loads(e))
        except orjson.JSONDecodeError:
            pass
    n = len(objs)
    validate = validator("teacher.logs.schema.json")
    texts = [o["input"] for o in objs]
    norm = [normalise(t) for t in texts]
    out = {}

    def timed(name, fn, count):
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        out[name] = best / count * 1e6

    def decode_all():
        for e in events:
            try:
                orjson.loads(e)
            except orjson.JSONDecodeError:
                pass
    timed("decode_orjson", decode_all, len(events))
    timed("validate_fastjsonschema", lambda: [validate(o) for o in objs], n)
    timed("to_event_object", lambda: [TeacherLog.from_obj(o) for o in objs], n)
    timed("normalise", lambda: [normalise(t) for t in texts], n)
    timed("exact_hash_xxh3", lambda: [exact_hash(t) for t in norm], n)
    timed("minhash_signature_batched", lambda: [signatures(norm[i:i + 5000], 5) for i in range(0, n, 5000)], n)
    timed("minhash_signature_one_by_one", lambda: [signatures([t], 5) for t in norm[:5000]], min(n, 5000))

    def lookup_and_insert():
        c = Curator({"transactions": task})
        idx = c._pool("transactions")
        for s in range(0, n, 5000):
            chunk = norm[s:s + 5000]
            sig = signatures(chunk, 5)
            ex = np.fromiter((exact_hash(x) for x in chunk), dtype=np.uint64, count=len(chunk))
            keys = idx.keys_for(sig, ex)
            pre = idx.prefetch(keys)
            for i in range(len(chunk)):
                idh = id_hash(str(s + i))
                if idx.match(sig[i], keys[i], idh, pre, i) is None:
                    idx.add(str(s + i), idh, sig[i], keys[i])
            idx.maybe_compact()
    t = time.perf_counter()
    lookup_and_insert()
    total_lookup = (time.perf_counter() - t) / n * 1e6
    out["lsh_keys_lookup_insert_incl_signatures"] = total_lookup
    out["lsh_keys_lookup_insert"] = total_lookup - out["minhash_signature_batched"]

    def whole():
        c = Curator({"transactions": task})
        for s in range(0, len(events), 5000):
            c.curate([Message(e, 0, s + i) for i, e in enumerate(events[s:s + 5000])])
    timed("whole_curate_decision", whole, len(events))

    c = Curator({"transactions": task})
    decisions = c.curate([Message(e, 0, i) for i, e in enumerate(events)])
    now = __import__("datetime").datetime.now(__import__("datetime").timezone.utc)
    timed("rows_for_clickhouse", lambda: [curation_event_row(d, now) for d in decisions], len(decisions))

    # datasketch with its defaults, the usual library baseline for the sketch step
    try:
        from datasketch import MinHash

        from kernel.similarity import shingles

        def ds():
            for t in norm[:3000]:
                m = MinHash(num_perm=64)
                m.update_batch([s.encode() for s in shingles(t, 5)])
        timed("datasketch_minhash_default_sha1", ds, min(n, 3000))
    except ImportError:
        pass
    return out


def dedupe_memory(n_entries: int) -> dict:
    import tracemalloc

    from kernel.similarity import exact_hash, id_hash, signatures
    from streams.curate.dedupe import DedupeIndex

    rng = random.Random(3)
    tracemalloc.start()
    idx = DedupeIndex(0.8, capacity=max(n_entries, 1 << 14))
    t0 = time.perf_counter()
    chunk = 20000
    for s in range(0, n_entries, chunk):
        texts = [f"{rng.choice(MERCHANTS).lower()} {s + i} {rng.choice(CITIES).lower()} card "
                 f"{rng.randint(1000, 9999)} ref {rng.getrandbits(40):x}" for i in range(min(chunk, n_entries - s))]
        sig = signatures(texts, 5)
        ex = np.fromiter((exact_hash(t) for t in texts), dtype=np.uint64, count=len(texts))
        ids = [f"evt-{s + i:09d}" for i in range(len(texts))]
        idh = np.fromiter((id_hash(x) for x in ids), dtype=np.uint64, count=len(ids))
        idx.add_many(ids, idh, sig, idx.keys_for(sig, ex))
    idx.compact()
    build_s = time.perf_counter() - t0
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    scale = 1_000_000 / n_entries
    return {"entries": n_entries, "bands": idx.bands, "rows_per_band": idx.rows,
            "traced_bytes_per_million": int(current * scale), "peak_traced_bytes_per_million": int(peak * scale),
            "index_estimate_bytes_per_million": int(idx.memory_bytes() * scale),
            "build_seconds_per_million": build_s * scale}


def near_dupe_quality(n_pairs: int, threshold: float = 0.8) -> dict:
    """Labelled pairs: an input and an edited copy; truth = exact shingle Jaccard >= threshold."""
    import tomllib

    from kernel.similarity import jaccard, normalise
    from kernel.tasks import parse_task
    from schemas.events import teacher_log_message
    from streams.curate.policy import Curator, Message

    task = parse_task(tomllib.loads(TASK_TOML))
    rng = random.Random(5)
    pairs = []
    for _ in range(n_pairs):
        base = (f"{rng.choice(MERCHANTS)} {rng.randint(1000, 99999)} {rng.choice(CITIES)} CARD "
                f"{rng.randint(1000, 9999)} REF {''.join(rng.choices(string.ascii_uppercase, k=8))}")
        edited = list(base)
        for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 4, 6, 8, 12])):
            op = rng.random()
            pos = rng.randrange(len(edited))
            if op < 0.4:
                edited[pos] = rng.choice(string.ascii_uppercase + string.digits)
            elif op < 0.7:
                edited.insert(pos, rng.choice(string.ascii_uppercase + " "))
            elif len(edited) > 10:
                del edited[pos]
        edited = "".join(edited)
        pairs.append((base, edited, jaccard(normalise(base), normalise(edited), 5)))

    def ours():
        preds = []
        for i, (a, b, _) in enumerate(pairs):
            c = Curator({"transactions": task})
            msgs = [Message(teacher_log_message(id=f"a{i}", task="transactions", input=a, output="other",
                                                confidence=0.9, teacher="t")),
                    Message(teacher_log_message(id=f"b{i}", task="transactions", input=b, output="other",
                                                confidence=0.9, teacher="t"))]
            d = c.curate(msgs)[1]
            preds.append(d.outcome in ("exact_dupe", "near_dupe"))
        return preds

    def datasketch_default():
        from datasketch import MinHash, MinHashLSH

        from kernel.similarity import shingles
        preds = []
        for a, b, _ in pairs:
            lsh = MinHashLSH(threshold=threshold, num_perm=128)
            ma, mb = MinHash(num_perm=128), MinHash(num_perm=128)
            ma.update_batch([s.encode() for s in shingles(normalise(a), 5)])
            mb.update_batch([s.encode() for s in shingles(normalise(b), 5)])
            lsh.insert("a", ma)
            preds.append(bool(lsh.query(mb)) and mb.jaccard(ma) >= threshold)
        return preds

    truth = [j >= threshold for _, _, j in pairs]

    def score(preds):
        tp = sum(p and t for p, t in zip(preds, truth))
        fp = sum(p and not t for p, t in zip(preds, truth))
        fn = sum(t and not p for p, t in zip(preds, truth))
        near = [(p, t) for p, t, (_, _, j) in zip(preds, truth, pairs) if abs(j - threshold) >= 0.05]
        acc_far = sum(p == t for p, t in near) / max(len(near), 1)
        return {"precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
                "accuracy_when_jaccard_is_0.05_or_more_from_threshold": acc_far}

    res = {"pairs": n_pairs, "positives": sum(truth), "threshold": threshold, "flywheel": score(ours())}
    try:
        res["datasketch_lsh_128perm_verified"] = score(datasketch_default())
    except ImportError:
        pass
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=60000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--memory-entries", type=int, default=200_000)
    p.add_argument("--pairs", type=int, default=3000)
    p.add_argument("--quick", action="store_true", help="small sizes, one run: a smoke test")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "curate.json")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        mode, bootstrap, n, group, *rest = args.child
        if mode == "raw":
            print(json.dumps(child_raw(bootstrap, int(n), group)))
        elif mode == "faust":
            child_faust(bootstrap, int(n), group, int(rest[0]))
        else:
            child_curate(bootstrap, int(n), group, rest[0])
        return
    if args.quick:
        args.events, args.repeat, args.memory_entries, args.pairs = 5000, 1, 20000, 300

    from dataclasses import replace

    from kernel.broker import EmbeddedBroker, ensure_topics
    from kernel.settings import load_settings

    results: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                     "events": args.events, "repeat": args.repeat}
    events = make_events(args.events)
    results["mean_message_bytes"] = sum(map(len, events)) / len(events)
    with tempfile.TemporaryDirectory() as tmp:
        with EmbeddedBroker(f"127.0.0.1:{_free_port()}", log_path=Path(tmp) / "broker.log") as broker:
            kafka = replace(load_settings({}).kafka, bootstrap=broker.bootstrap)
            asyncio.run(ensure_topics(kafka))
            asyncio.run(prefill(broker.bootstrap, events))
            print(f"throughput on {args.events} pre-filled events ({results['mean_message_bytes']:.0f} B each), "
                  f"median of {args.repeat}:", flush=True)
            results["throughput"] = throughput(broker.bootstrap, args.events, args.repeat)
    t = results["throughput"]
    print(f"  curate/faust = {t['ratio_curate_over_faust']:.2f} (target >= 0.5), "
          f"faust/raw = {t['ratio_faust_over_raw']:.2f}")
    print("per-event cost of each step (µs):", flush=True)
    results["step_cost_us"] = step_costs(events)
    for k, v in results["step_cost_us"].items():
        print(f"  {k:45s} {v:8.2f}")
    print("dedupe memory:", flush=True)
    results["dedupe_memory"] = dedupe_memory(args.memory_entries)
    m = results["dedupe_memory"]
    print(f"  {m['traced_bytes_per_million'] / 2**20:.0f} MiB per million distinct inputs "
          f"(traced; {m['entries']} built), {m['build_seconds_per_million']:.0f} s per million to build")
    print("near-duplicate quality:", flush=True)
    results["near_dupe_quality"] = near_dupe_quality(args.pairs)
    q = results["near_dupe_quality"]
    for k in ("flywheel", "datasketch_lsh_128perm_verified"):
        if k in q:
            print(f"  {k:35s} precision {q[k]['precision']:.3f} recall {q[k]['recall']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written to {args.out}")


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
