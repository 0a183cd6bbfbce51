"""CPU training time of the fine-tuned students at 1k kept examples: before and after the
speed-ups, in the same run, on the student benchmark's data (bench/student_bench.py: BBC News
lead sentences, a teacher wrong 10% of the time, a held-out gold set).

Baseline: random batches (each padded to its longest sentence) in fp32. Tuned (the defaults):
length-grouped batches (``length_grouping``: batches of similar length, less padding) and bf16
autocast for the forward and backward passes on a CPU with native bf16 (``precision = "auto"``;
weights and optimizer stay fp32). Same data, seed, steps and learning rates; the pairs run back
to back per kind (baseline then tuned), so both see the same machine load. Reported per run:
CPU seconds and wall seconds of the whole training (model load, steps, evaluations, saving),
CPU milliseconds per optimizer step, the share of padding tokens, validation and gold accuracy,
and the load average around it; per kind the tuned/baseline ratios.

    python bench/student_speed.py [--size 1000] [--kinds encoder_classifier,encoder_full] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from student_bench import LABELS, build, run_one  # noqa: E402


def padding_share(cfg, train: list) -> float:
    """Padding tokens / all tokens over one epoch of this config's batches."""
    from serving.encoders import load_encoder_base
    from training.students.loop import length_grouped_batches, shuffled_batches

    tok, _ = load_encoder_base(cfg.base_model, LABELS)
    lens = [len(x) for x in tok([r["input"] for r in train], truncation=True, max_length=cfg.max_length)["input_ids"]]
    batches = (length_grouped_batches(lens, cfg.batch_size, cfg.seed) if cfg.length_grouping
               else shuffled_batches(len(lens), cfg.batch_size, cfg.seed))(1)
    padded = sum(len(b) * max(lens[i] for i in b) for b in batches)
    return round(1 - sum(lens) / padded, 3)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--kinds", default="encoder_classifier,encoder_full")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "student_speed.json"))
    args = ap.parse_args(argv)

    import torch

    from training.students.config import TrainConfig, packaged_minilm
    from training.students.encoder import use_bf16
    from training.train.dataset import split

    torch.set_num_threads(args.threads)
    gold, kept = build(args.seed)
    rows = [{"id": f"bbc-{i}", "input": r["text"], "output": r["teacher"], "slice": r["teacher"]}
            for i, r in enumerate(kept[:args.size])]
    train, val = split(rows, 0.1)
    tuned = TrainConfig(base_model=packaged_minilm(), max_length=64, seed=args.seed)
    base = replace(tuned, length_grouping=False, precision="fp32")
    teacher = sum(r["teacher"] == r["label"] for r in gold) / len(gold)
    result = {"benchmark": "student CPU training time, baseline vs tuned, same run",
              "kept": args.size, "train": len(train), "validation": len(val), "teacher_gold_accuracy": teacher,
              "baseline": {"length_grouping": False, "precision": "fp32"},
              "tuned": {"length_grouping": True, "precision": tuned.precision,
                        "bf16_in_use": use_bf16(tuned.precision)},
              "padding_share": {"baseline": padding_share(base, train), "tuned": padding_share(tuned, train)},
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "torch_threads": args.threads,
                          "torch": torch.__version__},
              "runs": [], "ratios": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{len(train)} train / {len(val)} validation; padding share {result['padding_share']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in [k for k in args.kinds.split(",") if k]:
            pair = {}
            for name, cfg in (("baseline", base), ("tuned", tuned)):
                load0 = os.getloadavg()
                r = run_one(kind, cfg, train, val, gold, Path(tmp) / f"{kind}-{name}")
                r.update({"config": name, "cpu_ms_per_step": round(1000 * r["train_cpu_s"] / max(1, r["steps"])),
                          "load_average_before": [round(x, 2) for x in load0],
                          "load_average_after": [round(x, 2) for x in os.getloadavg()]})
                pair[name] = r
                result["runs"].append(r)
                print(f"{kind:18s} {name:8s} cpu {r['train_cpu_s']:6.1f} s wall {r['train_wall_s']:6.1f} s "
                      f"{r['steps']} steps ({r['cpu_ms_per_step']} cpu ms/step) val {r['val_accuracy']:.3f} "
                      f"gold {r['gold_accuracy']:.3f} load {load0[0]:.1f}->{os.getloadavg()[0]:.1f}", flush=True)
                out.write_text(json.dumps(result, indent=2) + "\n")
            b, t = pair["baseline"], pair["tuned"]
            result["ratios"][kind] = {
                "cpu_s_tuned_over_baseline": round(t["train_cpu_s"] / b["train_cpu_s"], 3),
                "wall_s_tuned_over_baseline": round(t["train_wall_s"] / b["train_wall_s"], 3),
                "cpu_ms_per_step_tuned_over_baseline": round(t["cpu_ms_per_step"] / b["cpu_ms_per_step"], 3),
                "gold_accuracy_change_points": round(100 * (t["gold_accuracy"] - b["gold_accuracy"]), 1),
                "tuned_cpu_s_within_180": t["train_cpu_s"] <= 180}
            print(f"{kind}: {result['ratios'][kind]}", flush=True)
            out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
