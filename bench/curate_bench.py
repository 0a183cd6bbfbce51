"""Curation throughput, per-event profile, scaling, per-step cost, dedupe memory, near-dupe quality.

    .venv/bin/python bench/curate_bench.py [--events 60000] [--repeat 3] [--quick]
        [--only throughput|profile|scaling|steps ...] [--baseline-ref REF]

Throughput: one embedded broker, one pre-filled teacher.logs partition; each mode is its own
process, and the modes are interleaved run by run (the machine is shared: medians and ratios
from the same run are what to read, absolute figures are noisy):
  raw_aiokafka                aiokafka consume -> orjson decode: the ceiling for Python
  faust_stock                 a decode-only Faust agent on faust-streaming as shipped
                              (kafka:// transport, Monitor sensor, 1.5 s fetch wait, 1 s poll)
  faust_tuned                 the same agent on flywheel's transport and App
                              (streams/worker/transport.py), as the worker runs them
  faust_tuned_with_cython     the same with cython_optimizations on
  curate_tuned                flywheel's curate agent (this checkout), ClickHouse sink on,
                              timed from the first batch seen to the last event durable + acked
  curate_today                the same agent in today's code (--baseline-ref, exported with
                              git archive and run from there)
Profile: py-spy attached to a curate_tuned run; top 10 functions by own time, µs per event.
Scaling: one worker vs two workers of one group on two tasks keyed to partitions 0 and 1,
with the CPU each process used. Steps: per-event CPU cost of each curate step, dedupe memory
per million distinct inputs, near-duplicate recall/precision against datasketch.
Figures go to bench/results/curate.json (with --only, the other parts already there are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
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
BASELINE_REF = "dcf7980"  # stock Faust consumer + fetch-wait patch, take_events + incref agent
CODE_ROOT = os.environ.get("BENCH_CODE_ROOT") or str(ROOT)
sys.path.insert(0, CODE_ROOT)

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
        count, t0, cpu0 = 0, None, None
        while count < n:
            batch = await c.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                if t0 is None:
                    t0, cpu0 = time.perf_counter(), time.process_time()
                for r in records:
                    try:
                        orjson.loads(r.value)
                    except orjson.JSONDecodeError:
                        pass
                    count += 1
        dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        await c.stop()
        return dt, cpu
    dt, cpu = asyncio.run(run())
    return {"events": n, "seconds": dt, "cpu_s": cpu}


def _faust_settings(bootstrap: str, group: str, data_dir: Path, tasks_dir: Path, fetch_wait: int):
    from dataclasses import replace

    load_settings = importlib.import_module("kernel.settings").load_settings
    s = load_settings({}, data_dir=data_dir, tasks_dir=tasks_dir)
    return replace(s, kafka=replace(s.kafka, bootstrap=bootstrap), consumer_group=group,
                   fetch_max_wait_ms=fetch_wait)


def _finish(result: dict) -> None:
    print(json.dumps(result), flush=True)
    os._exit(0)


def child_faust(bootstrap: str, n: int, group: str, variant: str) -> None:
    """variant: stock (faust-streaming as shipped: kafka:// transport, Monitor sensor, 1.5 s
    fetch wait, 1 s poll), tuned (flywheel's transport and App, as the worker runs them) or
    tuned_cython (the same with cython_optimizations on)."""
    import faust

    runner = importlib.import_module("streams.worker.runner")
    runner.use_uvloop()
    common = dict(value_serializer="raw", key_serializer="raw", store="memory://", web_enabled=False,
                  autodiscover=False, topic_allow_declare=False, consumer_auto_offset_reset="earliest",
                  broker_session_timeout=10, broker_heartbeat_interval=2, logging_config=None,
                  datadir=tempfile.mkdtemp(prefix="flywheel-bench-faust-"))
    if variant == "stock":
        app = faust.App(group, broker=f"kafka://{bootstrap}", **common)
    else:
        transport = importlib.import_module("streams.worker.transport")
        app = transport.App(group, broker=transport.broker_urls([bootstrap]),
                            cython_optimizations=(variant == "tuned_cython"), **common)
    topic = app.topic("teacher.logs", value_serializer="raw", key_serializer="raw")
    state = {"count": 0, "t0": None, "cpu0": None}

    @app.agent(topic, concurrency=1)
    async def decode_only(stream):
        async for value in stream:
            if state["t0"] is None:
                state["t0"], state["cpu0"] = time.perf_counter(), time.process_time()
            try:
                orjson.loads(value)
            except orjson.JSONDecodeError:
                pass
            state["count"] += 1
            if state["count"] >= n:
                _finish({"events": n, "seconds": time.perf_counter() - state["t0"],
                         "cpu_s": time.process_time() - state["cpu0"]})

    runner.run_faust(app, "warning")


def child_curate(bootstrap: str, n: int, group: str, stages: str, task_names: str = "transactions") -> None:
    """flywheel's curate agent (whatever code is on sys.path), ClickHouse sink on; the clock runs
    from the first batch seen to the n-th event durable and acked. Prints wall-clock start/end
    too, so that two workers of one group can be combined."""
    appmod = importlib.import_module("streams.worker.app")
    runner = importlib.import_module("streams.worker.runner")
    load_tasks = importlib.import_module("kernel.tasks").load_tasks
    wh = importlib.import_module("kernel.warehouse")
    apply_ddl = importlib.import_module("kernel.warehouse.migrate").apply_ddl

    runner.use_uvloop()
    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    (tmp / "tasks").mkdir()
    for name in task_names.split(","):
        (tmp / "tasks" / f"{name}.toml").write_text(TASK_TOML.replace('"transactions"', f'"{name}"'))
    settings = _faust_settings(bootstrap, group, tmp / "data", tmp / "tasks", 50)
    store = wh.open_warehouse(settings, own=True)
    apply_ddl(store)
    chosen = appmod.WORKER_STAGES[:1] if stages == "none" else appmod.WORKER_STAGES  # curate alone, or all
    app, ctx = appmod.build_app(settings, load_tasks(settings.tasks_dir), store, stages=chosen)
    pipeline = ctx.services["curate"]
    if hasattr(runner, "tune_gc"):  # as the worker does after build_app (absent in older code)
        runner.tune_gc()
    state = {"count": 0, "t0": None, "wall0": None, "gc_s": 0.0, "gc_start": 0.0}
    original = pipeline.decide

    def gc_clock(phase, info):  # time spent in the cyclic garbage collector, once the clock runs
        if state["t0"] is None:
            return
        if phase == "start":
            state["gc_start"] = time.perf_counter()
        else:
            state["gc_s"] += time.perf_counter() - state["gc_start"]
    import gc
    gc.callbacks.append(gc_clock)

    def first_seen(messages):  # the clock starts when the first batch reaches the agent
        if state["t0"] is None:
            state["t0"], state["wall0"], state["cpu0"] = time.perf_counter(), time.time(), time.process_time()
        t = time.perf_counter()
        try:
            return original(messages)
        finally:
            state["decide_s"] = state.get("decide_s", 0.0) + time.perf_counter() - t

    original_drain = pipeline.drain

    async def timed_drain():  # the agent waiting for the previous batch to be written
        t = time.perf_counter()
        try:
            await original_drain()
        finally:
            if state["t0"] is not None:
                state["drain_wait_s"] = state.get("drain_wait_s", 0.0) + time.perf_counter() - t
    pipeline.drain = timed_drain

    def durable(decisions):  # curate hooks run once a batch is in ClickHouse and acked
        state["count"] += len(decisions)
        if state["count"] >= n:
            dt = time.perf_counter() - state["t0"]
            rows = store.scalar("SELECT count() FROM curation_events")
            _finish({"events": state["count"], "seconds": dt, "rows": rows, "wall_start": state["wall0"],
                     "wall_end": time.time(), "cpu_s": time.process_time() - state["cpu0"],
                     "gc_s": state["gc_s"], "decide_s": state.get("decide_s", 0.0),
                     "drain_wait_s": state.get("drain_wait_s", 0.0), "outcomes": pipeline.counts})

    pipeline.decide = first_seen
    ctx.curate_hooks.append(durable)
    if os.environ.get("BENCH_READY_FILE"):  # tell the parent when partitions are assigned
        ready = Path(os.environ["BENCH_READY_FILE"])

        @app.on_partitions_assigned.connect
        async def assigned(sender, assigned, **kw):
            ready.write_text(",".join(sorted(f"{tp.topic}:{tp.partition}" for tp in assigned
                                             if tp.topic == "teacher.logs")))
    runner.run_faust(app, "warning")


# ---------------------------------------------------------------------------------------------
# parent
# ---------------------------------------------------------------------------------------------

def _child_cmd(args: list[str], code: Path | None) -> tuple[list[str], dict]:
    env = dict(os.environ)
    if code is not None:  # run the child against another checkout (today's code)
        env["BENCH_CODE_ROOT"] = str(code)
    return [sys.executable, __file__, "--child", *args], env


def _result(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):
        if '{"events"' in line:  # Faust may print terminal control codes before it
            return json.loads(line[line.index('{"events"'):])
    return None


def run_child(args: list[str], timeout: float = 600, code: Path | None = None) -> dict:
    cmd, env = _child_cmd(args, code)
    # today's code leaves Faust's data directory in the cwd: run it from its own checkout
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=code or ROOT, env=env)
    res = _result(out.stdout)
    if res is None:
        raise RuntimeError(f"child {args} gave no result:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return res


async def prefill(bootstrap: str, events: list[bytes], key: bytes = b"transactions",
                  partition: int | None = None) -> None:
    from aiokafka import AIOKafkaProducer
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await p.start()
    try:
        futs = [await p.send("teacher.logs", e, key=key, partition=partition) for e in events]
        for f in futs:
            await f
    finally:
        await p.stop()


def baseline_checkout(ref: str, dest: Path) -> Path:
    """Today's code (``ref``, e.g. main) exported to ``dest`` for the baseline curate runs."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def throughput(bootstrap: str, n: int, repeat: int, baseline: Path | None) -> dict:
    modes = {
        "raw_aiokafka": (["raw", bootstrap, str(n)], None),
        "faust_stock": (["faust", bootstrap, str(n), None, "stock"], None),
        "faust_tuned": (["faust", bootstrap, str(n), None, "tuned"], None),
        "faust_tuned_with_cython": (["faust", bootstrap, str(n), None, "tuned_cython"], None),
        "curate_tuned": (["curate", bootstrap, str(n), None, "default"], None),
    }
    if baseline is not None:
        modes["curate_today"] = (["curate", bootstrap, str(n), None, "default"], baseline)
    results: dict = {}
    cpu: dict = {}  # CPU time of the whole process (all threads) per event: less noisy than events/s
    gc_us: dict = {}
    for r in range(repeat):  # interleave modes so that machine noise hits them alike
        for name, (args, code) in modes.items():
            args = [a if a is not None else f"bench-{name}-{r}-{time.time_ns()}" for a in args]
            if args[0] == "raw":
                args.insert(3, f"bench-{name}-{r}-{time.time_ns()}")
            res = run_child(args, code=code)
            rate = res["events"] / res["seconds"]
            results.setdefault(name, []).append(rate)
            cpu.setdefault(name, []).append(res["cpu_s"] / res["events"] * 1e6)
            if "gc_s" in res:
                gc_us.setdefault(name, []).append(res["gc_s"] / res["events"] * 1e6)
            extra = f" rows={res.get('rows')}" if "rows" in res else ""
            print(f"  run {r + 1}/{repeat} {name:28s} {rate:9.0f} events/s {cpu[name][-1]:7.1f} µs CPU/event{extra}",
                  flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    out = {"events_per_s_median": med, "events_per_s_runs": results,
           "cpu_us_per_event_median": cpu_med, "cpu_us_per_event_runs": cpu,
           "gc_us_per_event_median": {k: statistics.median(v) for k, v in gc_us.items()},
           "cpu_ratio_faust_stock_over_tuned": cpu_med["faust_stock"] / cpu_med["faust_tuned"],
           "ratio_faust_tuned_over_stock": med["faust_tuned"] / med["faust_stock"],
           "ratio_faust_tuned_cython_on_over_off": med["faust_tuned_with_cython"] / med["faust_tuned"],
           "ratio_curate_tuned_over_faust_tuned": med["curate_tuned"] / med["faust_tuned"],
           "ratio_faust_stock_over_raw": med["faust_stock"] / med["raw_aiokafka"],
           "ratio_faust_tuned_over_raw": med["faust_tuned"] / med["raw_aiokafka"]}
    if "curate_today" in med:
        out["ratio_curate_tuned_over_today"] = med["curate_tuned"] / med["curate_today"]
        out["cpu_ratio_curate_today_over_tuned"] = cpu_med["curate_today"] / cpu_med["curate_tuned"]
    return out


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
    p.add_argument("--baseline-ref", default=BASELINE_REF,
                   help="git ref of today's code for the curate_today runs ('' to skip) "
                        "[default: %(default)s, the last commit before flywheel's Faust transport]")
    p.add_argument("--only", choices=["throughput", "scaling", "profile", "steps"], action="append",
                   help="run only these parts (default: all)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "curate.json")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        mode, bootstrap, n, group, *rest = args.child
        if mode == "raw":
            print(json.dumps(child_raw(bootstrap, int(n), group)))
        elif mode == "faust":
            child_faust(bootstrap, int(n), group, rest[0])
        else:
            child_curate(bootstrap, int(n), group, *rest)
        return
    if args.quick:
        args.events, args.repeat, args.memory_entries, args.pairs = 5000, 1, 20000, 300

    parts = set(args.only or ["throughput", "scaling", "profile", "steps"])
    broker_mod = importlib.import_module("kernel.broker")
    load_settings = importlib.import_module("kernel.settings").load_settings
    from dataclasses import replace

    results: dict = json.loads(args.out.read_text()) if args.only and args.out.exists() else {}
    results.update({"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                                "loadavg_1m_at_start": os.getloadavg()[0]},
                    "events": args.events, "repeat": args.repeat})
    events = make_events(args.events)
    results["mean_message_bytes"] = sum(map(len, events)) / len(events)
    with tempfile.TemporaryDirectory() as tmp:
        baseline = None
        if args.baseline_ref and "throughput" in parts:
            baseline = baseline_checkout(args.baseline_ref, Path(tmp) / "baseline")
            rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline_ref],
                                 capture_output=True, text=True).stdout.strip()
            results["baseline"] = {"ref": args.baseline_ref, "commit": rev}
        if parts & {"throughput", "profile"}:
            with broker_mod.EmbeddedBroker(f"127.0.0.1:{_free_port()}", log_path=Path(tmp) / "broker.log") as broker:
                kafka = replace(load_settings({}).kafka, bootstrap=broker.bootstrap)
                asyncio.run(broker_mod.ensure_topics(kafka))
                asyncio.run(prefill(broker.bootstrap, events))
                if "throughput" in parts:
                    print(f"throughput on {args.events} pre-filled events ({results['mean_message_bytes']:.0f} B "
                          f"each), median of {args.repeat} interleaved runs:", flush=True)
                    results["throughput"] = throughput(broker.bootstrap, args.events, args.repeat, baseline)
                    t = results["throughput"]
                    print(f"  faust tuned/stock = {t['ratio_faust_tuned_over_stock']:.2f} (target >= 2), "
                          f"curate tuned/today = {t.get('ratio_curate_tuned_over_today', float('nan')):.2f} "
                          f"(target >= 1.4), curate/faust tuned = {t['ratio_curate_tuned_over_faust_tuned']:.2f} "
                          f"(target >= 0.5), faust tuned/raw = {t['ratio_faust_tuned_over_raw']:.3f}, "
                          f"cython on/off = {t['ratio_faust_tuned_cython_on_over_off']:.2f}", flush=True)
                if "profile" in parts:
                    print("per-event profile of the tuned curate agent (py-spy, 250 Hz):", flush=True)
                    results["curate_profile"] = profile_curate(broker.bootstrap, args.events, Path(tmp))
                    for row in results["curate_profile"]["top_self"]:
                        print(f"  {row['us_per_event']:7.2f} µs  {row['share']:5.1%}  {row['function']}")
                    print("  inclusive, by stage:")
                    for k, v in results["curate_profile"]["inclusive_by_stage_us_per_event"].items():
                        print(f"  {v:7.2f} µs  {k}")
        if "scaling" in parts:
            print("two workers vs one, two tasks on two partitions:", flush=True)
            results["scaling"] = scaling(args.events, max(args.repeat, 1), Path(tmp), broker_mod, load_settings)
            sc = results["scaling"]
            print(f"  two/one = {sc['ratio_two_over_one']:.2f}; cores busy during the run: one worker "
                  f"{sc['cores_busy_median']['one']:.2f}, two workers {sc['cores_busy_median']['two']:.2f}")
    if "steps" in parts:
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
    results["machine"]["loadavg_1m_at_end"] = os.getloadavg()[0]  # other tenants' load: read ratios
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written to {args.out}")


# ---------------------------------------------------------------------------------------------
# profile and scaling
# ---------------------------------------------------------------------------------------------

def _wait_file(path: Path, proc: subprocess.Popen, timeout: float = 120, ok=lambda text: True) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"child exited with {proc.returncode} before {path.name}: {proc.stdout.read()[-3000:]}")
        if path.exists():
            text = path.read_text()
            if ok(text):
                return text
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {path}")


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Where a sampled stack belongs (first match wins): frames whose names contain a marker.
PROFILE_STAGES = [
    ("curate decision: decode, validate, dedupe (Curator.curate)", ["Curator.curate"]),
    ("ClickHouse insert and rows (CuratePipeline._write)", ["CuratePipeline._write", "Warehouse.insert"]),
    ("drift hook (DriftStage.on_curated)", ["on_curated"]),
    ("dead letters and review items (CuratePipeline._send)", ["CuratePipeline._send"]),
    ("acks after the durable write", ["Stream.ack", "Consumer.ack", "Event.ack"]),
    ("Faust drain: fetch, ConsumerMessage, conductor, Event", ["_drain_messages", "_deliver", "getmany"]),
    ("aiokafka consumer thread (fetch, decode records)", ["_fetch_records", "fetched_records", "Fetcher."]),
    ("stream iterator and take buffer", ["_c_aiter", "_py_aiter", "noack_take", "take_events", "add_to_buffer"]),
]


def profile_curate(bootstrap: str, n: int, tmp: Path, rate: int = 250) -> dict:
    """py-spy attached to a tuned curate child once its partitions are assigned (the topic is
    pre-filled, so it is busy from then on until it has made n events durable). Only the
    thread holding the GIL is sampled (--gil: Python work on any thread; ClickHouse's own
    threads and waits are not counted). Rows are functions by own (self) time, and stages by
    inclusive time; µs/event = samples / rate / events."""
    import shutil
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return {"skipped": "py-spy not installed (pip install py-spy)"}
    ready = tmp / f"profile-ready-{time.time_ns()}"
    cmd, env = _child_cmd(["curate", bootstrap, str(n), f"bench-profile-{time.time_ns()}", "default"], None)
    env["BENCH_READY_FILE"] = str(ready)
    child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_file(ready, child)
    raw = tmp / "profile.txt"
    spy_proc = subprocess.Popen([spy, "record", "--pid", str(child.pid), "--rate", str(rate), "--format", "raw",
                                 "--output", str(raw), "--nonblocking", "--gil"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out, _ = child.communicate(timeout=600)
    spy_proc.wait(60)
    res = _result(out)
    if res is None:
        raise RuntimeError(f"profiled child gave no result: {out[-3000:]}")
    own: dict[str, int] = {}
    stages = dict.fromkeys([s for s, _ in PROFILE_STAGES] + ["other (event loop, timers, Faust services)"], 0)
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        leaf = frames[-1]
        c = int(count)
        total += c
        for stage, markers in PROFILE_STAGES:
            if any(m in stack for m in markers):
                stages[stage] += c
                break
        else:
            stages["other (event loop, timers, Faust services)"] += c
        fn = leaf.split(" (")[0] + " (" + leaf.split(" (")[-1].split("/")[-1] if " (" in leaf else leaf
        own[fn] = own.get(fn, 0) + c
    top = sorted(own.items(), key=lambda kv: -kv[1])[:10]
    events = res["events"]
    return {"events": events, "rate_hz": rate, "samples": total, "events_per_s": events / res["seconds"],
            "us_per_event_sampled": total / rate / events * 1e6,
            "top_self": [{"function": f, "samples": c, "share": c / max(total, 1),
                          "us_per_event": c / rate / events * 1e6} for f, c in top],
            "inclusive_by_stage_us_per_event": {k: v / rate / events * 1e6 for k, v in stages.items()}}


def scaling(n: int, repeat: int, tmp: Path, broker_mod, load_settings) -> dict:
    """One worker vs two workers of one group, on two tasks whose logs go to two partitions
    (n events each; with two workers, one partition of each). Workers start first and the topics are filled once their partitions
    are assigned, so no rebalance falls inside the timed window. Events/s = 2n / (last worker
    done - first batch seen). Also the CPU each process used in that window."""
    from dataclasses import replace
    per_task = {name: [e.replace(b'"task":"transactions"', f'"task":"{name}"'.encode())
                        .replace(b'"id":"evt-', f'"id":"{name}-'.encode()) for e in make_events(n)]
                for name in ("ta", "tb")}
    out: dict = {"events_per_task": n, "runs": {"one": [], "two": []}, "cores_busy": {"one": [], "two": []}}
    for r in range(repeat):
        for mode in ("one", "two"):
            with broker_mod.EmbeddedBroker(f"127.0.0.1:{_free_port()}", log_path=tmp / f"scale-{r}-{mode}.log") as broker:
                kafka = replace(load_settings({}).kafka, bootstrap=broker.bootstrap)
                asyncio.run(broker_mod.ensure_topics(kafka))
                group = f"bench-scale-{mode}-{r}-{time.time_ns()}"
                workers = 1 if mode == "one" else 2
                children, files = [], []
                try:
                    rate, busy, shares = _scaling_run(broker, group, workers, n, per_task, tmp, children, files)
                finally:
                    for c in children:  # a failed run must not leave workers behind
                        if c.poll() is None:
                            c.kill()
                            c.wait(10)
                out["runs"][mode].append(rate)
                out["cores_busy"][mode].append(busy)
                print(f"  run {r + 1}/{repeat} {mode} worker(s) {rate:9.0f} events/s, {busy:.2f} cores busy "
                      f"(workers {shares})", flush=True)
    med = {k: statistics.median(v) for k, v in out["runs"].items()}
    out["events_per_s_median"] = med
    out["cores_busy_median"] = {k: statistics.median(v) for k, v in out["cores_busy"].items()}
    out["ratio_two_over_one"] = med["two"] / med["one"]
    return out


def _scaling_run(broker, group, workers, n, per_task, tmp, children, files):
    """One timed run; returns events/s, cores busy, and each worker's share of a core."""
    for w in range(workers):
        ready = tmp / f"scale-ready-{group}-{w}"
        cmd, env = _child_cmd(["curate", broker.bootstrap, str(2 * n // workers), group, "default",
                               "ta,tb"], None)
        env["BENCH_READY_FILE"] = str(ready)
        children.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True))
        files.append(ready)
        # Tansu has trouble with two members joining at the same moment: stagger
        _wait_file(ready, children[-1])
    if workers == 2:  # both members hold two of the four partitions
        texts = [_wait_file(f, c, ok=lambda t: t.count(",") == 1) for f, c in zip(files, children)]
        assert sorted(texts[0].split(",") + texts[1].split(",")) == [
            f"teacher.logs:{p}" for p in range(4)], texts
        # one task's partition on each worker, whatever the assignor did
        parts = [int(texts[0].split(",")[0].split(":")[1]), int(texts[1].split(",")[0].split(":")[1])]
    else:
        parts = [0, 1]
    procs = [broker._proc.pid] + ([broker._relay.pid] if broker._relay else [])
    cpu0 = {pid: _proc_cpu_s(pid) for pid in procs + [c.pid for c in children]}

    async def fill():
        await asyncio.gather(*(prefill(broker.bootstrap, evs, key=name.encode(), partition=part)
                               for (name, evs), part in zip(per_task.items(), parts)))
    asyncio.run(fill())
    results = []
    for c in children:
        o, _ = c.communicate(timeout=600)
        res = _result(o)
        if res is None:
            raise RuntimeError(f"scaling child gave no result: {o[-3000:]}")
        results.append(res)
    wall = max(x["wall_end"] for x in results) - min(x["wall_start"] for x in results)
    cpu = sum(x["cpu_s"] for x in results) + sum(_proc_cpu_s(p) - cpu0[p] for p in procs)
    return 2 * n / wall, cpu / wall, [round(x["cpu_s"] / wall, 2) for x in results]


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
