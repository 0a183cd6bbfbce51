"""Canary end to end, on the real broker, the real embedded ClickHouse, a real `flywheel serve`
process and a real stream worker, with real MiniLM encoder students (a linear probe trained on
the synthetic task, in the training worker's adapter format) and the real gate: every approval
is a `flywheel gate` verdict on a gold set with teacher answers, never an inserted row.

The gold set never had one label (SILENCED): the gate approves v1, a good candidate v2 (a retrain
that answers as v1 does) and a planted bad candidate v3 that never answers SILENCED -- on the gold
set it scores as v1 does -- and rejects v4, which never answers a label the gold set has
(REGRESSED). Then: gate approval (auto_promote) → canary at 30% → too little traffic:
inconclusive → more traffic: pairs and windows land, the judge promotes v2 → v3 approved →
canary → the SILENCED slice disagrees completely → the judge aborts it (rejected), the incumbent
keeps serving; disagreements are on review.queue with both answers; an invalid live.requests
message sent while the canary runs is dead-lettered once (by the drift stage alone)."""

import asyncio
import json
import random
import shutil
import time

import httpx
import pytest

from schemas.events import validate
from tests.helpers.adapters import minilm, probe_adapter
from tests.helpers.kafka import publish
from tests.helpers.synthetic import LABELS, text_for
from tests.helpers.testing import owned_store, read_topic
from tests.helpers.serving import Serve, answered_by, cli
from tests.worker import WorkerProcess, wait_for
from training.registry import store as reg

pytestmark = pytest.mark.integration
TASK = "transactions"

TASK_FILE = f"""
name = "{TASK}"
labels = {json.dumps(list(LABELS))}
min_confidence = 0.6
near_duplicate_threshold = 0.8
slice = "label"

[canary]
pct = 30
min_pairs = 40
min_duration = "2s"
max_disagreement = 0.2
slice_tolerance = 0.2
alpha = 0.2
auto_promote = true
auto_rollback = true

[gate]
min_slice_examples = 10
slice_tolerance = 0.1
"""
SILENCED = "utilities"   # not in the gold set: the failure the canary finds and the gate cannot
REGRESSED = "rent"       # in the gold set: a candidate that never answers it is rejected by the gate


def examples(seed, n, labels=LABELS):
    rng = random.Random(seed)
    return [{"input": text_for(labels[i % len(labels)], rng), "output": labels[i % len(labels)]} for i in range(n)]


def gold_file(path):
    """48 gold rows of the labels other than SILENCED; the teacher is wrong on every 8th (so the
    teacher baseline scores 0.875 and a good student can match it)."""
    labels = [lab for lab in LABELS if lab != SILENCED]
    rows = []
    for i, ex in enumerate(examples(5, 48, labels)):
        teacher = ex["output"] if i % 8 else labels[(labels.index(ex["output"]) + 1) % len(labels)]
        rows.append({"id": f"g{i:03d}", **ex, "teacher_output": teacher})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def gate(settings, version):
    """`flywheel gate --model VERSION`: the exit code and the verdict."""
    res = cli(settings, "gate", "--task", TASK, "--model", version, "--json", "--no-publish")
    assert res.exit_code in (0, 1), res.output
    return res.exit_code, json.loads(res.stdout)


def register(store, vdir, version, seq):
    """Registered as the training worker leaves a sealed version: not gated yet."""
    reg.register(store, {
        "task": TASK, "version": version, "seq": seq, "request_id": f"r{seq}", "student": "encoder_classifier",
        "base_model": minilm(), "base_model_identity": "minilm", "adapter_uri": str(vdir / "adapter"),
        "dataset_manifest": "", "dataset_hash": f"h{seq}", "hyperparameters": "{}", "gold_version": 1,
        "eval_results": "{}", "overall_score": 0.0, "baseline_score": 0.0, "status": "registered",
        "created_at": "2026-01-01 00:00:00.000"})


def copy_version(src, root, name, silence_label=None):
    """A copy of an adapter under another version name; ``silence_label``: that label's logit
    bias is set to -100 (the copy never answers it: the planted failure)."""
    dst = root / name
    shutil.copytree(src, dst)
    if silence_label is not None:
        from safetensors.torch import load_file, save_file

        f = dst / "adapter" / "adapter_model.safetensors"
        w = load_file(str(f))
        keys = [k for k in w if "classifier" in k and k.endswith("bias")]
        assert keys, sorted(w)
        for k in keys:
            w[k][LABELS.index(silence_label)] = -100.0
        save_file(w, str(f))
    return dst


def traffic(serve, n, seed):
    rng = random.Random(seed)
    texts = [text_for(LABELS[i % len(LABELS)], rng) for i in range(n)]
    served = []
    with httpx.Client(base_url=serve.url, timeout=60) as c:
        for i in range(0, n, 16):
            r = c.post("/v1/predict", json={"model": TASK, "input": texts[i:i + 16]},
                       headers={"x-request-id": f"s{seed}-{i}"})
            assert r.status_code == 200, r.text
            served += r.json()["outputs"]
    return served, r.json()["model_version"]


def status(settings):
    res = cli(settings, "canary", "status", "--task", TASK, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_canary_promotes_a_good_candidate_and_aborts_a_bad_one(settings, tasks_dir, tmp_path, monkeypatch):
    t0 = time.monotonic()
    (tasks_dir / "transactions.toml").write_text(TASK_FILE)
    root = tmp_path / "artifacts"
    v1 = f"{TASK}-v1-aaaa0001"
    v1dir = probe_adapter(root, v1, minilm(), LABELS, examples(11, 150))
    v2 = f"{TASK}-v2-bbbb0002"
    v2dir = copy_version(v1dir, root, v2)
    with owned_store(settings) as store:
        res = cli(settings, "gold", "import", "--task", TASK, str(gold_file(tmp_path / "gold.jsonl")))
        assert res.exit_code == 0, res.output
        register(store, v1dir, v1, 1)
        code, verdict = gate(settings, v1)
        assert code == 0 and verdict["approved"] and verdict["n"] == 48 and verdict["baseline"] == "teacher", verdict
        assert verdict["overall"] >= verdict["baseline_overall"] == pytest.approx(0.875)
        assert reg.get_model(store, TASK, v1)["status"] == "approved"
        t_gate = time.monotonic()
        serve = Serve(settings, tmp_path / "serve.log")
        worker = None
        try:
            serve.wait_ready()
            res = cli(settings, "promote", "--task", TASK, "--model", v1, "--reason", "first")
            assert res.exit_code == 0, res.output
            answered_by(serve, "warm-up text", v1)
            worker = WorkerProcess(settings, tmp_path / "worker.log", worker_only=True, extra_env={
                "FLYWHEEL_CANARY_MODEL_URL": f"http://127.0.0.1:{serve.model_port}",
                "FLYWHEEL_CANARY_TIMEOUT_SECONDS": "10"}).start()

            # the gate approves v2: with auto_promote the canary starts by itself, at [canary] pct
            register(store, v2dir, v2, 2)
            code, verdict = gate(settings, v2)
            assert code == 0 and verdict["approved"], verdict
            wait_for(lambda: status(settings)["canary"] == v2, 30, what="auto canary start")
            st = status(settings)
            assert st["serving"] == v1 and st["canary_share"] == pytest.approx(0.3)
            assert reg.get_model(store, TASK, v2)["status"] == "canary"

            # too little traffic: pairs land, the judge stays inconclusive (never a pass)
            traffic(serve, 32, seed=1)
            wait_for(lambda: (status(settings)["now"] or {}).get("pairs", 0) >= 3, 30, what="first pairs")
            # an invalid live request while the canary runs: both agents read it, one dead letter
            asyncio.run(publish(settings.kafka.servers, [b"{not json"], topic="live.requests"))
            time.sleep(2.5)          # the judge has looked (every 2 s) and min_duration has passed
            st = status(settings)
            assert st["now"]["outcome"] == "inconclusive" and "min_pairs" in st["now"]["reason"], st["now"]
            assert st["serving"] == v1 and st["canary"] == v2
            assert st["decisions"] and all(d["outcome"] == "inconclusive" for d in st["decisions"])

            # enough traffic: identical answers → promote, carried out through the promotion path
            served, _ = traffic(serve, 320, seed=2)
            deadline, seed = time.monotonic() + 60, 100
            while time.monotonic() < deadline and status(settings)["serving"] != v2:
                served += traffic(serve, 48, seed=seed)[0]
                seed += 1
                time.sleep(1.0)
            st = status(settings)
            assert st["serving"] == v2, f"{json.dumps(st, default=str)[:3000]}\n{worker.log()[-3000:]}"
            st = status(settings)
            promoted = [d for d in st["decisions"] if d["action"] == "promote"]
            assert promoted and promoted[0]["outcome"] == "promote" and promoted[0]["candidate_version"] == v2
            assert promoted[0]["evidence"]["slices"]["*"]["disagree"] == 0
            assert promoted[0]["pairs"] >= 40
            assert reg.get_model(store, TASK, v2)["status"] == "serving"
            assert reg.get_model(store, TASK, v1)["status"] == "retired"
            answered_by(serve, "after promotion", v2)
            windows = store.rows(f"SELECT sum(pairs) AS n, sum(disagree) AS d FROM canary_windows "
                                 f"WHERE task = '{TASK}' AND candidate_version = '{v2}'")
            assert windows[0]["n"] >= 40 and windows[0]["d"] == 0

            # two planted bad candidates: v4 never answers REGRESSED, a label the gold set has: the
            # gate rejects it; v3 never answers SILENCED, which the gold set lacks: the gate approves
            # it (it scores as v1 on the gold set) and the canary must catch it
            top = SILENCED
            assert served.count(top) >= len(served) // 10, "the traffic must reach the silenced slice"
            v3, v4 = f"{TASK}-v3-cccc0003", f"{TASK}-v4-dddd0004"
            register(store, copy_version(v1dir, root, v4, silence_label=REGRESSED), v4, 4)
            code, verdict = gate(settings, v4)
            assert code == 1 and not verdict["approved"], verdict
            assert any(f"slice '{REGRESSED}' regressed" in r for r in verdict["reasons"]), verdict["reasons"]
            assert reg.get_model(store, TASK, v4)["status"] == "rejected"
            v3dir = copy_version(v1dir, root, v3, silence_label=top)
            register(store, v3dir, v3, 3)
            code, verdict = gate(settings, v3)
            assert code == 0 and verdict["approved"] and SILENCED not in {s["slice"] for s in verdict["slices"]}, verdict
            wait_for(lambda: status(settings)["canary"] == v3, 30, what="auto canary start of v3")
            deadline = time.monotonic() + 90
            seed = 10
            while time.monotonic() < deadline and reg.get_model(store, TASK, v3)["status"] == "canary":
                traffic(serve, 96, seed=seed)
                seed += 1
                time.sleep(1.0)
            st = status(settings)
            assert reg.get_model(store, TASK, v3)["status"] == "rejected", st
            aborted = [d for d in st["decisions"] if d["action"] == "canary_abort"]
            assert aborted and aborted[0]["candidate_version"] == v3, st["decisions"][:3]
            assert f"slice {top!r}" in aborted[0]["reason"]
            ev = aborted[0]["evidence"]["slices"]
            assert ev[top]["disagreement_rate"] == 1.0
            assert all(e["disagree"] == 0 for s, e in ev.items() if s not in (top, "*")), ev
            assert st["serving"] == v2 and st["canary"] is None
            answered_by(serve, "still the incumbent", v2, timeout=5)
            res = cli(settings, "canary", "status", "--task", TASK)
            assert res.exit_code == 0 and f"serving {v2}; canary none" in res.output, res.output
            assert f"{v3} vs {v2}: abort -> canary_abort" in res.output and f"{v2} vs {v1}: promote -> promote" \
                in res.output, res.output
        finally:
            if worker is not None:
                worker.stop()
            serve.stop()

        pairs = read_topic(settings, "canary.pairs")
        for p in pairs:
            validate("canary.pairs.schema.json", p)
        assert {p["candidate_version"] for p in pairs} == {v2, v3}          # the rejected v4 never ran
        dead = [d for d in read_topic(settings, "dead.letters") if d["source_topic"] == "live.requests"]
        assert len(dead) == 1 and "JSON" in dead[0]["reason"], dead
        assert all(p["agree"] for p in pairs if p["candidate_version"] == v2)
        review = [r for r in read_topic(settings, "review.queue") if r["kind"] == "canary_disagreement"]
        assert review and all(r["slice"] == top and r["answers"]["incumbent"] == top
                              and r["answers"]["candidate"] != top for r in review)
        assert store.scalar(f"SELECT count() FROM canary_pairs FINAL WHERE candidate_version = '{v3}' "
                            f"AND slice = '{top}' AND agree = 0") == len({r["id"] for r in review})
    print(f"\ncanary e2e: {time.monotonic() - t0:.1f}s ({t_gate - t0:.1f}s to train v1, import gold and gate it), "
          f"{len(pairs)} pairs, {len(review)} disagreements")
