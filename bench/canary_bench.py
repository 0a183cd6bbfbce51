"""Canary benchmark: the judge's sequential test against a fixed-sample test polled at the same
cadence (pure simulation), the canary stage's cost on live.requests consumption, and serving
latency while the candidate is deliberately slow.

    python bench/canary_bench.py [--runs 1000] [--out bench/results/canary.json]

1. Statistics (seeded; every look is after a window of WINDOW pairs, up to HORIZON pairs):
   * detection: the candidate disagrees with the serving version 5 points more often than the
     bound (max_disagreement 0.05, true rate 0.10): pairs until the first abort;
   * false decisions: canaries with no difference (the true rate sits on the bound, the worst
     case of the null; and a paired comparison with equal win/loss rates): the share of runs that
     ever decide. The anytime-valid test must stay under alpha; a fixed-sample z-test polled after
     every window does not.
   * the full judge (4 slices, Bonferroni, min_pairs) on no-difference canaries: false aborts.
2. Stage cost: live.requests messages through the drift stage's consumer (what the worker does
   with live.requests today) with the canary stage off, and on at 30% with a slow candidate
   (answers after 2 s; the canary's timeout is 0.5 s) and with a dead one (connection refused),
   in the same event loop -- the worst case: in the worker the agents share one loop.
3. Serving latency: the router answering a real MiniLM adapter (in-process engine), with the
   canary stage in the same event loop shadowing every request against the slow candidate, vs off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.canary.judge import ABORT, SliceCounts, judge, log_wealth, rejects  # noqa: E402

ALPHA = 0.05
P0 = 0.05          # max_disagreement
WINDOW = 50        # pairs per look
HORIZON = 5000     # pairs per simulated canary
Z = 1.6448536269514722  # one-sided 95%


def z_rejects(d: int, n: int, p0: float) -> bool:
    return n > 0 and (d / n - p0) / math.sqrt(p0 * (1 - p0) / n) > Z


def simulate_rate(p: float, runs: int, seed: int) -> dict:
    """Per run: the first look at which each test says 'rate above P0' (None: never)."""
    rng = np.random.default_rng(seed)
    looks = np.arange(WINDOW, HORIZON + 1, WINDOW)
    seq, fixed = [], []
    for _ in range(runs):
        d_cum = np.cumsum(rng.random(HORIZON) < p)[looks - 1]
        s = f = None
        for n, d in zip(looks, d_cum):
            if s is None and rejects(log_wealth({1.0: int(d), 0.0: int(n - d)}, P0, 0.0, 1.0, True), ALPHA):
                s = int(n)
            if f is None and z_rejects(int(d), int(n), P0):
                f = int(n)
            if s is not None and f is not None:
                break
        seq.append(s)
        fixed.append(f)
    return {"anytime_valid": summarise(seq, runs), "fixed_sample_polled": summarise(fixed, runs)}


def simulate_paired(runs: int, seed: int, win: float = 0.05) -> dict:
    """No difference in the paired comparison: candidate-right/incumbent-wrong as likely as the
    reverse. A decision = 'the candidate is worse' (tolerance 0)."""
    rng = np.random.default_rng(seed)
    looks = np.arange(WINDOW, HORIZON + 1, WINDOW)
    seq = fixed = 0
    for _ in range(runs):
        u = rng.random(HORIZON)
        z = np.where(u < win, 1, np.where(u < 2 * win, -1, 0))
        b, c = np.cumsum(z == 1)[looks - 1], np.cumsum(z == -1)[looks - 1]
        s_hit = f_hit = False
        for n, bb, cc in zip(looks, b, c):
            if not s_hit and rejects(log_wealth({1.0: int(bb), -1.0: int(cc), 0.0: int(n - bb - cc)}, 0.0, -1, 1, False),
                                     ALPHA):
                s_hit = True
            mean = (bb - cc) / n
            var = (bb + cc) / n - mean ** 2
            if not f_hit and var > 0 and mean / math.sqrt(var / n) < -Z:
                f_hit = True
        seq += s_hit
        fixed += f_hit
    return {"anytime_valid_false_rate": seq / runs, "fixed_sample_polled_false_rate": fixed / runs}


def simulate_judge(runs: int, seed: int) -> dict:
    """The full judge, 4 equally busy slices, on the null's edge everywhere: one slice on its bound
    (0.05 + 0.05 = 0.10), the others at 0.0333 so that the task-wide rate is on its bound (0.05).
    False aborts over all looks; and a polled fixed-sample analogue (z-tests per slice and
    task-wide, Bonferroni over the same k tests)."""
    rng = np.random.default_rng(seed)
    slices, per_look = 4, WINDOW
    rates = np.array([0.10, 0.05 * 4 / 3 - 0.10 / 3, 0.05 * 4 / 3 - 0.10 / 3, 0.05 * 4 / 3 - 0.10 / 3])
    bounds = np.array([0.10] * slices)
    from statistics import NormalDist
    zk = NormalDist().inv_cdf(1 - ALPHA / (2 * slices + 1))
    false_seq = false_fixed = 0
    for _ in range(runs):
        d = np.zeros(slices, int)
        n = np.zeros(slices, int)
        s_hit = f_hit = False
        for _look in range(HORIZON // per_look):
            idx = rng.integers(0, slices, per_look)
            dis = rng.random(per_look) < rates[idx]
            np.add.at(n, idx, 1)
            np.add.at(d, idx, dis)
            counts = {f"s{i}": SliceCounts(pairs=int(n[i]), disagree=int(d[i])) for i in range(slices)}
            if not s_hit and judge(counts, 1e9, min_pairs=100, min_duration=0, max_disagreement=0.05,
                                   slice_tolerance=0.05, alpha=ALPHA).outcome == ABORT:
                s_hit = True
            if not f_hit and n.sum() >= 100:
                zs = [(d[i] / n[i] - bounds[i]) / math.sqrt(bounds[i] * (1 - bounds[i]) / n[i])
                      for i in range(slices) if n[i]]
                zs.append((d.sum() / n.sum() - 0.05) / math.sqrt(0.05 * 0.95 / n.sum()))
                if max(zs) > zk:
                    f_hit = True
            if s_hit and f_hit:
                break
        false_seq += s_hit
        false_fixed += f_hit
    return {"slices": slices, "judge_false_abort_rate": false_seq / runs,
            "fixed_sample_polled_bonferroni_false_abort_rate": false_fixed / runs}


def summarise(first: list, runs: int) -> dict:
    hit = [x for x in first if x is not None]
    return {"decided_share": round(len(hit) / runs, 4),
            "median_pairs": int(statistics.median(hit)) if hit else None,
            "mean_pairs": round(statistics.fmean(hit), 1) if hit else None,
            "p90_pairs": int(np.percentile(hit, 90)) if hit else None}


def fixed_sample_size(p0: float, p1: float, alpha: float = ALPHA, power: float = 0.8) -> int:
    from statistics import NormalDist

    za, zb = NormalDist().inv_cdf(1 - alpha), NormalDist().inv_cdf(power)
    return math.ceil(((za * math.sqrt(p0 * (1 - p0)) + zb * math.sqrt(p1 * (1 - p1))) / (p1 - p0)) ** 2)


# ------------------------------------------------------------------ the stage against a slow candidate

async def slow_server(delay_s: float):
    """A model server that answers /classify after ``delay_s`` (raw asyncio HTTP)."""
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                await asyncio.sleep(delay_s)
                body = b'{"data":[{"label":"a","confidence":0.9}]}'
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
        except (Exception, asyncio.CancelledError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def live_messages(n: int, version: str):
    from serving.live import live_record
    from streams.curate.policy import Message

    rng = random.Random(3)
    return [Message(json.dumps(live_record(id=f"r{i}", task="tx", input=f"shop {rng.randrange(10**6)} payment",
                                           output=rng.choice("abcd"), model_version=version,
                                           latency_ms=3.0)).encode(), 0, i, "live.requests") for i in range(n)]


def canary_stage(task, url: str, store):
    from serving.config import Route, VersionRef
    from streams.canary.config import CanaryConfig
    from streams.canary.stage import CanaryStage

    st = CanaryStage({"tx": task}, {"tx": CanaryConfig(pct=30)}, store, model_url=url, timeout_s=0.5, concurrency=8)
    ref = VersionRef("tx-v2", "/nowhere", "encoder_classifier")
    st.routes["tx"] = Route("tx", 2, "tx-v1", canary="tx-v2", canary_share=0.3,
                            versions={"tx-v1": VersionRef("tx-v1", "/nowhere", "encoder_classifier"), "tx-v2": ref})
    return st


def stage_cost(n: int = 20_000, batch: int = 500) -> dict:
    from kernel.settings import load_settings
    from kernel.tasks import parse_task
    from kernel.warehouse import open_warehouse
    from kernel.warehouse.migrate import apply_ddl
    from streams.drift.config import stage_config
    from streams.drift.stage import DriftStage

    task = parse_task({"name": "tx", "labels": list("abcd")})
    msgs = live_messages(n, "tx-v1")
    out = {}
    with tempfile.TemporaryDirectory() as d:
        store = open_warehouse(load_settings({}, data_dir=Path(d)))
        apply_ddl(store)

        async def run(mode: str) -> dict:
            drift = DriftStage({"tx": task}, stage_config({"tx": task}), store)
            drift.restore()
            server, port = await slow_server(2.0)
            url = f"http://127.0.0.1:{port if mode != 'on_dead_candidate' else 1}"
            cs = canary_stage(task, url, store) if mode != "off" and not mode.startswith("off") else None
            t = time.perf_counter()
            for s in range(0, n, batch):
                chunk = msgs[s:s + batch]
                await drift.process_live(chunk)
                if cs is not None:
                    for m in chunk:
                        await cs.offer(m.value, m.partition, m.offset)
                await asyncio.sleep(0)
            rate = n / (time.perf_counter() - t)
            res = {"events_per_s": round(rate)}
            if cs is not None:
                await asyncio.sleep(1.0)
                res.update({k: cs.counters[k] for k in ("shadowed", "shed", "paused", "answered", "timeouts", "errors")})
                await cs.close()
            server.close()
            return res

        for mode in ("off", "on_slow_candidate", "on_dead_candidate", "off_again"):
            out[mode] = asyncio.run(run(mode))
        store.close()
    base = (out["off"]["events_per_s"] + out["off_again"]["events_per_s"]) / 2
    out["ratio_slow_over_off"] = round(out["on_slow_candidate"]["events_per_s"] / base, 3)
    out["ratio_dead_over_off"] = round(out["on_dead_candidate"]["events_per_s"] / base, 3)
    return out


def serving_latency(requests: int = 200) -> dict:
    """Router latency (in-process engine, a real MiniLM adapter) with the canary shadowing every
    request against a candidate that answers after 2 s, vs the canary off."""
    from kernel.tasks import parse_task
    from serving.config import Route, VersionRef
    from serving.engine import Engine
    from serving.live import live_record
    from serving.router import EngineBackend, Router
    from tests.helpers.adapters import make_adapter, minilm

    task = parse_task({"name": "tx", "labels": list("abcd")})
    out = {}
    with tempfile.TemporaryDirectory() as d:
        vdir = make_adapter(Path(d), "tx-v1", "encoder_classifier", minilm(), labels=list("abcd"), seed=1)
        engine = Engine()
        ref = VersionRef("tx-v1", str(vdir / "adapter"), "encoder_classifier")

        async def run(mode: str) -> dict:
            router = Router({"encoder_classifier": EngineBackend(engine)}, None, warm_up=True)
            await router.apply(Route("tx", 1, "tx-v1", versions={"tx-v1": ref}))
            server, port = await slow_server(2.0)
            cs = canary_stage(task, f"http://127.0.0.1:{port}", None) if mode == "canary_on_slow_candidate" else None
            if cs is not None:
                cs.configs["tx"] = cs.configs["tx"].__class__(pct=100)
                cs.routes["tx"] = Route("tx", 2, "tx-v1", canary="tx-v2", canary_share=1.0,
                                        versions=cs.routes["tx"].versions)
            lat = []
            for i in range(requests):
                t = time.perf_counter()
                out_, v = await router.classify("tx", [f"shop {i} payment ref {i * 7}"], f"q{i}")
                lat.append((time.perf_counter() - t) * 1000)
                if cs is not None:     # the live.requests message the router would publish
                    rec = live_record(id=f"q{i}", task="tx", input=f"shop {i}", output=out_["data"][0]["label"],
                                      model_version=v, latency_ms=lat[-1])
                    await cs.offer(json.dumps(rec).encode())
            res = {"p50_ms": round(float(np.percentile(lat, 50)), 2), "p95_ms": round(float(np.percentile(lat, 95)), 2),
                   "p99_ms": round(float(np.percentile(lat, 99)), 2)}
            if cs is not None:
                res.update({k: cs.counters[k] for k in ("shadowed", "shed", "timeouts")})
                await cs.close()
            server.close()
            return res

        rounds: dict[str, list] = {"canary_off": [], "canary_on_slow_candidate": []}
        for _ in range(3):                      # interleaved: the machine's load drifts
            for mode in rounds:
                rounds[mode].append(asyncio.run(run(mode)))
    for mode, rs in rounds.items():
        out[mode] = {k: round(statistics.median(r[k] for r in rs), 2) for k in rs[0]}
        out[mode]["rounds_p50_ms"] = [r["p50_ms"] for r in rs]
    out["p50_ratio_on_over_off"] = round(out["canary_on_slow_candidate"]["p50_ms"] / out["canary_off"]["p50_ms"], 3)
    out["p95_ratio_on_over_off"] = round(out["canary_on_slow_candidate"]["p95_ms"] / out["canary_off"]["p95_ms"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "canary.json"))
    ap.add_argument("--skip-io", action="store_true", help="only the simulations")
    args = ap.parse_args()
    t0 = time.perf_counter()
    detect = simulate_rate(P0 + 0.05, args.runs, seed=1)
    print("5-point increase, pairs to abort:", json.dumps(detect), flush=True)
    null = simulate_rate(P0, args.runs, seed=2)
    print("no difference (rate on the bound), false decisions:", json.dumps(null), flush=True)
    paired = simulate_paired(args.runs, seed=3)
    print("no difference (paired comparison), false 'worse':", json.dumps(paired), flush=True)
    full = simulate_judge(min(args.runs, 300), seed=4)
    print("full judge, 4 slices on the null's edge:", json.dumps(full), flush=True)
    sim_s = time.perf_counter() - t0
    res = {
        "settings": {"alpha": ALPHA, "max_disagreement": P0, "window_pairs": WINDOW, "horizon_pairs": HORIZON,
                     "runs": args.runs},
        "detect_5_point_increase": {**detect, "fixed_sample_single_look_n_for_80pct_power": fixed_sample_size(P0, P0 + 0.05)},
        "false_decisions_no_difference": {
            "anytime_valid": null["anytime_valid"]["decided_share"],
            "fixed_sample_polled": null["fixed_sample_polled"]["decided_share"], "paired": paired,
            "full_judge": full},
        "simulation_seconds": round(sim_s, 1),
    }
    if not args.skip_io:
        res["stage_cost_live_requests"] = stage_cost()
        print("stage cost:", json.dumps(res["stage_cost_live_requests"]), flush=True)
        res["serving_latency_slow_candidate"] = serving_latency()
        print("serving latency:", json.dumps(res["serving_latency_slow_candidate"]), flush=True)
    res["machine"] = {"python": platform.python_version(), "cpus": __import__("os").cpu_count()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
