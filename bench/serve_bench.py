"""Serving benchmark: promotion/rollback latency under load, router overhead, per-student
throughput and latency against a direct in-process call, resident memory per adapter.

Everything real: the embedded broker, the embedded ClickHouse store, `flywheel serve` as child
processes, MiniLM adapters (encoder student) and SmolLM2-135M-Instruct adapters (causal
student, GGUF). Adapters are random LoRA weights in the training worker's format (rank 8 on
the default target modules), so the cost is that of real adapters without training them.

    python bench/serve_bench.py            # a few minutes on 2 busy cores
    python bench/serve_bench.py --quick    # fewer requests

Writes bench/results/serve.json. Absolute numbers depend on the machine and its load; the
ratios are measured in the same run (interleaved blocks) to be comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TASK_E, TASK_C = "transactions", "notes"
LABELS = ["groceries", "transport", "dining", "rent", "utilities"]
TEXT = "Metro train ticket payment 12.00 EUR ref 1234"


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    k = min(len(xs) - 1, max(0, int(round(q / 100 * (len(xs) - 1)))))
    return xs[k]


def summary_ms(xs):
    return {"n": len(xs), "p50_ms": round(pct(xs, 50) * 1000, 2), "p99_ms": round(pct(xs, 99) * 1000, 2),
            "mean_ms": round(statistics.mean(xs) * 1000, 2)}


# ---------------------------------------------------------------------- memory (own process)

MEMORY_CHILD = r"""
import json, sys, gc
import psutil
from serving.engine import Engine
paths = json.loads(sys.argv[1])
p = psutil.Process()
out = {"before_mb": p.memory_info().rss / 2**20}
e = Engine()
for i, (name, path) in enumerate(paths):
    e.load(name, path)
    e.predict(name, ["warm up"])
    gc.collect()
    out[f"adapters_{i + 1}_mb"] = p.memory_info().rss / 2**20
print(json.dumps(out))
"""


def memory(paths: list[tuple[str, str]]) -> dict:
    r = subprocess.run([sys.executable, "-c", MEMORY_CHILD, json.dumps(paths)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    m = json.loads(r.stdout.strip().splitlines()[-1])
    n = len(paths)
    further = [(m[f"adapters_{i + 1}_mb"] - m[f"adapters_{i}_mb"]) for i in range(3, n)]
    return {"rss_base_plus_1_adapter_mb": round(m["adapters_1_mb"], 1),
            "rss_base_plus_3_adapters_mb": round(m["adapters_3_mb"], 1),
            "per_further_adapter_mb": round(statistics.mean(further), 2) if further else None,
            "per_further_adapter_samples_mb": [round(x, 2) for x in further],
            "raw": {k: round(v, 1) for k, v in m.items()}}


# ---------------------------------------------------------------------- direct in-process calls

# The in-process baseline runs in its own process (this one hosts the embedded ClickHouse and
# the load generator), calls the engine from a worker thread as the server does, and uses one
# intra-op thread: on 2 cores shared with other busy processes, torch's default 2 OpenMP threads
# (spin-waiting) measured 241 ms p50 for one MiniLM classification against 15 ms with
# OMP_NUM_THREADS=1 and 34 ms with OMP_WAIT_POLICY=PASSIVE, which would make the baseline
# meaningless. The servers run with torch's defaults.
DIRECT_CHILD = r"""
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from serving.engine import Engine
kind, version, path, gen_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
TEXT = "Metro train ticket payment 12.00 EUR ref 1234"
e = Engine()
e.load(version, path)
def call(i):
    if kind == "encoder_classifier":
        e.classify(version, [f"{TEXT} {i}"])
    else:
        e.chat(version, [{"role": "system", "content": ""}, {"role": "user", "content": f"{TEXT} {i}"}], gen_tokens)
pool = ThreadPoolExecutor(1)
pool.submit(call, 0).result()
print("ready", flush=True)
for line in sys.stdin:
    n = int(line)
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter(); pool.submit(call, i).result(); lat.append(time.perf_counter() - t)
    print(json.dumps({"lat": lat, "wall": time.perf_counter() - t0}), flush=True)
"""


class Direct:
    def __init__(self, kind, version, path, gen_tokens):
        self.proc = subprocess.Popen([sys.executable, "-c", DIRECT_CHILD, kind, version, path, str(gen_tokens)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                                     cwd=ROOT)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"direct runner failed: {line!r}")

    def run(self, n):
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        out = json.loads(self.proc.stdout.readline())
        return out["lat"], out["wall"]

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait(10)


# ---------------------------------------------------------------------- serve processes

async def timed_requests(client, path, body_fn, n, concurrency=1):
    lat, fails = [], 0

    async def worker(k):
        nonlocal fails
        for i in range(k, n, concurrency):
            t = time.perf_counter()
            r = await client.post(path, json=body_fn(i))
            dt = time.perf_counter() - t
            if r.status_code != 200:
                fails += 1
            else:
                lat.append(dt)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return lat, fails, time.perf_counter() - t0


async def wait_version(client, path, body, version, timeout=60):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        r = await client.post(path, json=body)
        if r.status_code == 200 and r.headers.get("x-flywheel-version") == version:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{version} never answered at {path}")


# ---------------------------------------------------------------------- main

def register(store, task, version, vdir, student, base):
    from schemas.timefmt import ch_time
    from training.registry import store as reg

    reg.register(store, {"task": task, "version": version, "seq": int(version.split("-v")[1].split("-")[0]),
                         "request_id": "bench", "student": student, "base_model": base, "base_model_identity": "{}",
                         "adapter_uri": str(vdir / "adapter"), "dataset_manifest": "{}", "dataset_hash": "bench",
                         "hyperparameters": "{}", "gold_version": 1, "eval_results": "{}", "overall_score": 1.0,
                         "baseline_score": 0.0, "status": "approved", "created_at": ch_time()})
    store.insert("gate_verdicts", [{"task": task, "model_version": version, "gold_version": 1, "approved": 1,
                                    "overall": 1.0, "baseline_overall": 0.0, "baseline": "teacher", "reasons": [],
                                    "warnings": [], "verdict": "{}", "decided_at": ch_time(digits=6)}])


async def bench(args, settings, store, tmp: Path, adapters: dict) -> dict:
    import httpx

    from streams.promote.apply import apply
    from tests.helpers.serving import Serve
    from aiokafka import AIOKafkaProducer

    res: dict = {}
    enc, cau = adapters["encoder"], adapters["causal"]
    producer = AIOKafkaProducer(**settings.kafka.aiokafka_kwargs(), acks="all")
    await producer.start()
    # serving versions: v1 of each task
    for task, vs in ((TASK_E, enc), (TASK_C, cau)):
        await apply(store, settings.kafka, "promote", task, vs[0][0], decided_by="bench", producer=producer)

    main = Serve(settings, tmp / "serve.log")
    main.wait_ready(120)
    # a router-only process in front of main's model server: the production shape (router -> HTTP -> server)
    front = Serve(settings, tmp / "front.log", model_port=0, backend=main.model_url)
    front.wait_ready(120)
    e_body = lambda i: {"model": TASK_E, "input": f"{TEXT} {i}"}  # noqa: E731
    c_body = lambda i: {"model": TASK_C, "messages": [{"role": "user", "content": f"{TEXT} {i}"}],  # noqa: E731
                        "max_tokens": args.gen_tokens}
    try:
        async with httpx.AsyncClient(base_url=main.url, timeout=120) as router, \
                httpx.AsyncClient(base_url=main.model_url, timeout=120) as server, \
                httpx.AsyncClient(base_url=front.url, timeout=120) as front_router:
            v1e, v2e = enc[0][0], enc[1][0]
            v1c = cau[0][0]
            await wait_version(router, "/classify", e_body(0), v1e)
            await wait_version(front_router, "/classify", e_body(0), v1e)
            await wait_version(router, "/v1/chat/completions", c_body(0), v1c, timeout=120)

            # ---- per student: in-process engine vs model server vs router (interleaved blocks)
            kinds = {
                "encoder_classifier": dict(n=args.n_enc, path="/classify", version=v1e, body=e_body,
                                           direct=Direct("encoder_classifier", v1e, enc[0][1], args.gen_tokens)),
                "causal_lm": dict(n=args.n_gen, path="/v1/chat/completions", version=v1c, body=c_body,
                                  direct=Direct("causal_lm", v1c, cau[0][1], args.gen_tokens)),
            }
            for kind, k in kinds.items():
                lat = {"in_process": [], "model_server": [], "router": [], "router_http_backend": []}
                fails = {x: 0 for x in lat}
                wall = {x: 0.0 for x in lat}
                block = max(5, k["n"] // args.rounds)
                for rnd in range(args.rounds):
                    lt, w = k["direct"].run(block)
                    lat["in_process"] += lt
                    wall["in_process"] += w
                    srv_body = (lambda i, k=k: {**k["body"](i), "model": k["version"]})
                    for name, client, body in (("model_server", server, srv_body), ("router", router, k["body"]),
                                               ("router_http_backend", front_router, k["body"])):
                        if kind == "causal_lm" and name == "router_http_backend":
                            continue
                        lt, f, w = await timed_requests(client, k["path"], body, block)
                        lat[name] += lt
                        fails[name] += f
                        wall[name] += w
                out = {}
                for name, xs in lat.items():
                    if not xs:
                        continue
                    out[name] = {**summary_ms(xs), "failed": fails[name],
                                 "sequential_per_s": round(len(xs) / wall[name], 2)}
                # throughput with concurrent clients (the server runs one request per base at a time)
                for name, client, body in (("model_server", server, lambda i, k=k: {**k["body"](i), "model": k["version"]}),
                                           ("router", router, k["body"])):
                    lt, f, w = await timed_requests(client, k["path"], body, block * 2, concurrency=4)
                    out[name]["concurrent4_per_s"] = round(len(lt) / w, 2)
                    out[name]["concurrent4_failed"] = f
                base = out["model_server"]["p50_ms"]
                out["router_added_p50_vs_model_server"] = round(out["router"]["p50_ms"] / base - 1, 4)
                if "router_http_backend" in out:
                    out["router_http_backend_added_p50_vs_model_server"] = round(
                        out["router_http_backend"]["p50_ms"] / base - 1, 4)
                out["model_server_p50_vs_in_process"] = round(base / out["in_process"]["p50_ms"], 3)
                out["router_p50_vs_in_process"] = round(out["router"]["p50_ms"] / out["in_process"]["p50_ms"], 3)
                k["direct"].stop()
                res[kind] = out
                print(f"{kind}: {json.dumps(out)}", flush=True)

            # ---- 20 flips under steady load (encoder task)
            stop = asyncio.Event()
            log: list[tuple[float, float, int, str | None]] = []   # (sent, received, status, version)

            async def load_client(i0):
                i = i0
                async with httpx.AsyncClient(base_url=main.url, timeout=60) as c:
                    while not stop.is_set():
                        t = time.perf_counter()
                        try:
                            r = await c.post("/classify", json=e_body(i))
                            log.append((t, time.perf_counter(), r.status_code, r.headers.get("x-flywheel-version")))
                        except Exception:
                            log.append((t, time.perf_counter(), 0, None))
                        i += 2

            clients = [asyncio.create_task(load_client(k)) for k in range(args.load_clients)]
            await asyncio.sleep(1.0)
            flips = {"promote": [], "rollback": []}
            decide_s = {"promote": [], "rollback": []}
            for n in range(args.flips):
                action, target = ("promote", v2e) if n % 2 == 0 else ("rollback", v1e)
                t0 = time.perf_counter()
                await apply(store, settings.kafka, action, TASK_E, v2e if action == "promote" else None,
                            decided_by="bench", reason=f"flip {n}", producer=producer)
                t_pub = time.perf_counter()
                decide_s[action].append(t_pub - t0)
                while True:
                    hit = [rcv for snt, rcv, st, v in list(log) if snt >= t0 and v == target]
                    if hit:
                        flips[action].append(min(hit) - t0)
                        break
                    if time.perf_counter() - t0 > 30:
                        raise RuntimeError(f"flip {n} to {target} not seen in 30 s")
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.3)
            stop.set()
            await asyncio.gather(*clients)
            failed = sum(1 for _, _, st, _ in log if st != 200)
            res["flips"] = {
                "flips": args.flips, "load_clients": args.load_clients, "requests_during": len(log),
                "failed_requests": failed,
                "promote_to_first_answer": summary_ms(flips["promote"]),
                "rollback_to_first_answer": summary_ms(flips["rollback"]),
                "promote_command_part": summary_ms(decide_s["promote"]),
                "rollback_command_part": summary_ms(decide_s["rollback"]),
                "note": "time from calling streams.promote.apply.apply (decide from ClickHouse, publish model.config, "
                        "write history + lifecycle, publish model.events) to the first response sent after that "
                        "moment and answered by the new version; the *_command_part is apply() alone",
            }
            print(f"flips: {json.dumps(res['flips'])}", flush=True)
            metrics = (await router.get("/metrics")).text
            res["router_metrics_at_end"] = {ln.split()[0]: float(ln.split()[1]) for ln in metrics.splitlines()
                                            if ln and not ln.startswith("#") and "{" not in ln}
    finally:
        main.stop()
        front.stop()
        await producer.stop()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve.json"))
    args = ap.parse_args()
    args.rounds = 4
    args.n_enc = 80 if args.quick else 160
    args.n_gen = 8 if args.quick else 12
    args.gen_tokens = 8
    args.flips = 20
    args.load_clients = 2

    os.environ.setdefault("FLYWHEEL_ARTIFACTS_DIR", tempfile.mkdtemp())
    from kernel.broker import EmbeddedBroker, ensure_topics
    from kernel.settings import load_settings
    from tests.conftest import free_port
    from tests.helpers.adapters import make_adapter, minilm
    from tests.helpers.testing import owned_store

    import torch

    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    tasks = tmp / "tasks"
    tasks.mkdir()
    (tasks / f"{TASK_E}.toml").write_text(f'name = "{TASK_E}"\nlabels = {json.dumps(LABELS)}\n')
    (tasks / f"{TASK_C}.toml").write_text(f'name = "{TASK_C}"\nlabels = {json.dumps(LABELS)}\n'
                                          '[train]\nstudent = "causal_lm"\n')
    adapters = {"encoder": [], "causal": []}
    for i in range(1, 6):
        v = f"{TASK_E}-v{i}-bench00{i}"
        d = make_adapter(tmp / "artifacts", v, "encoder_classifier", minilm(), LABELS, seed=i, r=8)
        adapters["encoder"].append((v, str(d / "adapter")))
        v = f"{TASK_C}-v{i}-bench00{i}"
        d = make_adapter(tmp / "artifacts", v, "causal_lm", "smollm2", seed=i, r=8, max_new_tokens=8,
                         targets=["q_proj", "k_proj", "v_proj", "o_proj"])
        adapters["causal"].append((v, str(d / "adapter")))
    print(f"adapters ready in {time.monotonic() - t_start:.0f}s", flush=True)

    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "torch": torch.__version__, "gpu": None,
                                 "note": "no GPU was available to this run: CPU figures only"},
                     "params": {k: v for k, v in vars(args).items() if k != "out"}}
    results["memory"] = {"encoder_classifier (MiniLM-L6, LoRA r8 q,v + head)": memory(adapters["encoder"]),
                         "causal_lm (SmolLM2-135M float32, LoRA r8 q,k,v,o)": memory(adapters["causal"])}
    print(f"memory: {json.dumps(results['memory'])}", flush=True)

    with EmbeddedBroker(f"127.0.0.1:{free_port()}", log_path=tmp / "broker.log") as broker:
        settings = load_settings({}, data_dir=tmp / "data", tasks_dir=tasks)
        settings = replace(settings, kafka=replace(settings.kafka, bootstrap=broker.bootstrap))
        asyncio.run(ensure_topics(settings.kafka))
        with owned_store(settings) as store:
            for task, key, student, base in ((TASK_E, "encoder", "encoder_classifier", minilm()),
                                             (TASK_C, "causal", "causal_lm", "smollm2")):
                for v, path in adapters[key][:2]:
                    register(store, task, v, Path(path).parent, student, base)
            results.update(asyncio.run(bench(args, settings, store, tmp, adapters)))
    f = results["flips"]
    results["targets"] = {
        "flip_p99_le_1s": max(f["promote_to_first_answer"]["p99_ms"], f["rollback_to_first_answer"]["p99_ms"]) <= 1000,
        "flip_zero_failed": f["failed_requests"] == 0,
        "router_added_p50_le_10pct_encoder": results["encoder_classifier"]["router_added_p50_vs_model_server"] <= 0.10,
        "router_added_p50_le_10pct_causal": results["causal_lm"]["router_added_p50_vs_model_server"] <= 0.10,
    }
    results["elapsed_s"] = round(time.monotonic() - t_start, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["targets"]), f"\nwrote {args.out} in {results['elapsed_s']} s")


if __name__ == "__main__":
    main()
