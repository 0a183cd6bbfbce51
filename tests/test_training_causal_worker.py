"""The causal-LM student through the worker, end to end on CPU: a retrain request on the real
broker, examples and gold in the real chdb, a LoRA adapter on a tiny randomly initialised Qwen2
(offline word-level tokenizer) trained, registered with lineage and gated."""

import asyncio
import json
import time
from pathlib import Path

import orjson
import pytest

from kernel.gold import import_gold
from kernel.tasks import load_tasks
from tests.helpers.synthetic import LABELS, MERCHANTS, WORDS, examples, gold_lines
from tests.helpers.testing import (
    add_sections,
    insert_examples,
    owned_store,
    publish_requests,
    read_topic,
    request,
    tiny_causal_lm,
)
from training.registry import store as st
from training.train import runs
from training.train.worker import WorkerOptions, run_worker

pytestmark = pytest.mark.integration
WATERMARK = "2025-01-01 00:00:39.000"   # the first 40 examples (one a second from midnight)
SYSTEM = "answer with the label only"


def causal_sections(model_dir: Path, tok_dir: Path) -> str:
    return f"""
[train]
student = "causal_lm"
base_model = "{model_dir}"
tokenizer = "{tok_dir}"
target_modules = ["q_proj", "v_proj"]
lora_r = 4
lora_alpha = 8
lora_dropout = 0.0
epochs = 1
min_steps = 1
batch_size = 8
max_length = 48
learning_rate = 2e-2
warmup_share = 0.0
validation_share = 0.2
quantization = "none"
max_new_tokens = 3
system_prompt = "{SYSTEM}"

[gate]
min_slice_examples = 10
"""


def test_causal_lm_request_to_registered_gated_adapter(settings, tasks_dir, tmp_path, monkeypatch):
    t0 = time.monotonic()
    monkeypatch.setenv("FLYWHEEL_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    words = sorted({w for ws in WORDS.values() for p in ws for w in p.split()} | set(MERCHANTS) | set(LABELS)
                   | {"payment", "EUR", "ref", "gold", "."} | set(SYSTEM.split()))
    model_dir, tok_dir = tiny_causal_lm(tmp_path / "base", words)
    add_sections(tasks_dir, causal_sections(model_dir, tok_dir))
    tasks = load_tasks(tasks_dir)
    gold = gold_lines(30, countries=["DE", "FR", "US"])
    path = tmp_path / "gold.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(g) for g in gold))
    with owned_store(settings) as store:
        insert_examples(store, examples(60))
        gv = import_gold(store, tasks["transactions"], path).version
        req = request("transactions", WATERMARK, gv, detail="causal")
        publish_requests(settings, [req])
        outcomes = asyncio.run(run_worker(settings, tasks, store, WorkerOptions(max_requests=1, idle_exit_seconds=30)))
        assert [o.status for o in outcomes] == ["done"], outcomes
        out = outcomes[0]

        run = runs.get_run(store, "transactions", req["request_id"])
        assert run["status"] == "done" and run["model_version"] == out.model_version and run["progress"] == 1.0
        timings = json.loads(run["timings"])
        assert timings["train_s"] > 0 and timings["gold_inference_s"] > 0
        manifest = json.loads(run["dataset_manifest"])
        assert manifest["n_rows"] == 40 and manifest["gold_version"] == gv

        # lineage in the registry
        m = st.get_model(store, "transactions", out.model_version)
        assert m["version"].startswith("transactions-v1-") and m["student"] == "causal_lm"
        assert m["base_model"] == str(model_dir) and m["request_id"] == req["request_id"]
        assert m["dataset_hash"] == manifest["content_hash"] and json.loads(m["dataset_manifest"]) == manifest
        hp = json.loads(m["hyperparameters"])
        assert (hp["student"], hp["tokenizer"], hp["epochs"], hp["max_length"], hp["target_modules"]) == \
            ("causal_lm", str(tok_dir), 1, 48, ["q_proj", "v_proj"])
        ident = json.loads(m["base_model_identity"])
        assert ident["name_or_path"] == str(model_dir)
        assert "model.safetensors" in ident["files_sha256"] and ident["weights_sha256"]
        assert m["status"] in ("approved", "rejected") and m["status"] == ("approved" if out.verdict.approved
                                                                             else "rejected")
        assert m["gold_version"] == gv and m["overall_score"] == out.verdict.overall
        assert json.loads(m["eval_results"])["fit"]["steps"] == (manifest["n_train"] + 7) // 8

        # the artifacts folder
        vdir = Path(m["adapter_uri"]).parent
        assert vdir.name == m["version"] and vdir.parent.name == "transactions"
        for f in ("COMPLETE", "train_config.json", "dataset_manifest.json", "base_model.json", "eval.json",
                  f"gold_predictions_v{gv}.jsonl", "adapter/adapter_model.safetensors", "adapter/adapter_config.json",
                  "adapter/chat.json", "adapter/tokenizer.json"):
            assert (vdir / f).is_file(), f
        assert json.loads((vdir / "base_model.json").read_text()) == ident
        assert json.loads((vdir / "dataset_manifest.json").read_text()) == manifest
        tc = json.loads((vdir / "train_config.json").read_text())
        assert tc["student"] == "causal_lm" and tc["hyperparameters"] == hp and tc["request"] == req
        acfg = json.loads((vdir / "adapter/adapter_config.json").read_text())
        assert acfg["base_model_name_or_path"] == str(model_dir) and acfg["r"] == 4
        assert sorted(acfg["target_modules"]) == ["q_proj", "v_proj"]
        assert json.loads((vdir / "adapter/chat.json").read_text()) == {"system_prompt": SYSTEM, "max_new_tokens": 3}
        preds = [orjson.loads(line) for line in (vdir / f"gold_predictions_v{gv}.jsonl").read_bytes().splitlines()]
        assert sorted(p["id"] for p in preds) == sorted(g["id"] for g in gold)
        assert all(isinstance(p["output"], str) for p in preds)

        # eval results and the verdict (against the teacher, pinned)
        v = store.rows("SELECT model_version, gold_version, approved, overall, baseline, reasons FROM gate_verdicts FINAL")
        assert len(v) == 1 and v[0]["model_version"] == m["version"] and v[0]["gold_version"] == gv
        assert v[0]["baseline"] == "teacher" and bool(v[0]["approved"]) == out.verdict.approved
        assert list(v[0]["reasons"]) == list(out.verdict.reasons)
        ev = store.rows(f"SELECT slice, n FROM eval_results FINAL WHERE model_version = '{m['version']}' ORDER BY slice")
        assert [(r["slice"], r["n"]) for r in ev] == [("DE", 10), ("FR", 10), ("US", 10), ("__overall__", 30)]
        assert store.scalar("SELECT count() FROM gate_baselines") == 1
        events = read_topic(settings, "model.events")
        assert len(events) == 1 and events[0]["model_version"] == m["version"]
        assert events[0]["kind"] == ("candidate_approved" if out.verdict.approved else "candidate_rejected")
    assert time.monotonic() - t0 < 60
