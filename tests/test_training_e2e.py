"""End to end on CPU: curated examples + gold set in the real chdb, retrain requests on the real
broker, a MiniLM LoRA adapter trained, gated and registered with lineage."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from flywheel.cli import main
from kernel.gold import import_gold
from kernel.tasks import load_tasks
from tests.helpers.synthetic import examples, gold_lines
from tests.helpers.testing import (
    add_sections,
    insert_examples,
    owned_store,
    publish_requests,
    read_topic,
    request,
    wait_until,
)
from training.registry import store as st
from training.train import runs
from training.train.worker import WorkerOptions, run_worker

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
WATERMARK = "2025-01-01 00:03:59.000"   # examples are curated one a second from midnight


@pytest.fixture
def world(settings, tasks_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    add_sections(tasks_dir)
    task = load_tasks(tasks_dir)["transactions"]
    gold = gold_lines(60, countries=["DE", "FR", "US"], teacher_wrong_every=10)
    path = tmp_path / "gold.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(g) for g in gold))
    with owned_store(settings) as store:
        rows = examples(300)                       # 240 up to the watermark, 60 after it
        from kernel.similarity import exact_hash, normalise
        g0 = gold[0]["input"]   # a gold overlap by content (same normalised input)
        rows[0] = {**rows[0], "input": g0.upper(), "input_hash": exact_hash(normalise(g0))}
        insert_examples(store, rows)
        # a gold overlap: same id as a gold example
        insert_examples(store, [{**rows[1], "id": gold[1]["id"], "input": gold[1]["input"]}])
        gv = import_gold(store, task, path).version
        yield store, gv


def cli(settings, *args):
    return CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "--tasks", str(settings.tasks_dir),
                                     *args], env={"FLYWHEEL_KAFKA_BOOTSTRAP": settings.kafka.servers})


def test_request_to_registered_gated_adapter_duplicate_runs_once(settings, world, tasks_dir):
    store, gv = world
    req = request("transactions", WATERMARK, gv)
    publish_requests(settings, [req, b"{not json", req])      # delivered twice, plus garbage
    tasks = load_tasks(tasks_dir)
    t0 = time.monotonic()
    outcomes = asyncio.run(run_worker(settings, tasks, store, WorkerOptions(max_requests=3, idle_exit_seconds=30)))
    elapsed = time.monotonic() - t0
    assert [o.status for o in outcomes] == ["done", "skipped", "skipped"], outcomes
    assert elapsed < 600  # a guard against a hang, not a speed target (27 s quiet, 127 s seen on a loaded machine)

    run_rows = runs.list_runs(store, "transactions")
    assert len(run_rows) == 1 and run_rows[0]["status"] == "done" and run_rows[0]["attempt"] == 1
    assert json.loads(run_rows[0]["timings"])["train_s"] > 0
    manifest = json.loads(run_rows[0]["dataset_manifest"])
    assert manifest["n_rows"] == 241 - 2 and manifest["excluded_gold_overlaps"] == 2   # both overlaps dropped
    assert manifest["gold_version"] == gv and sum(manifest["label_counts"].values()) == 239

    models = st.list_models(store, "transactions")
    assert len(models) == 1
    m = st.get_model(store, "transactions", models[0]["version"])
    assert m["version"].startswith("transactions-v1-") and m["status"] in ("approved", "rejected")
    assert m["gold_version"] == gv and m["dataset_hash"] == manifest["content_hash"]
    assert json.loads(m["hyperparameters"])["lora_r"] == 8
    assert "weights_sha256" in json.loads(m["base_model_identity"])
    vdir = Path(m["adapter_uri"]).parent
    for f in ("COMPLETE", "train_config.json", "dataset_manifest.json", "base_model.json",
              f"gold_predictions_v{gv}.jsonl", "adapter/adapter_model.safetensors", "adapter/labels.json"):
        assert (vdir / f).is_file(), f
    # sealed: no write bit for anyone (checked on the mode: root ignores it when writing)
    assert (vdir / "train_config.json").stat().st_mode & 0o222 == 0
    assert (vdir / "adapter" / "adapter_model.safetensors").stat().st_mode & 0o222 == 0

    verdicts = store.rows("SELECT model_version, gold_version, approved, overall FROM gate_verdicts FINAL")
    assert len(verdicts) == 1 and verdicts[0]["model_version"] == m["version"]
    assert verdicts[0]["overall"] > 0.5, "MiniLM should learn the synthetic task"
    assert store.scalar(f"SELECT count() FROM eval_results FINAL WHERE model_version = '{m['version']}'") == 4
    events = read_topic(settings, "model.events")
    assert len(events) == 1 and events[0]["model_version"] == m["version"]
    assert events[0]["request_id"] == req["request_id"]
    assert read_topic(settings, "dead.letters")[0]["offset"] == 1

    res = cli(settings, "models", "--task", "transactions")
    assert res.exit_code == 0 and m["version"] in res.output and m["status"] in res.output
    res = cli(settings, "gate", "--task", "transactions", "--model", m["version"], "--json", "--no-publish")
    v = json.loads(res.stdout)
    assert res.exit_code == (0 if v["approved"] else 1)
    assert v["model_version"] == m["version"] and v["overall"] == verdicts[0]["overall"]


def _worker(settings, tmp_path, name):
    env = {**os.environ, "FLYWHEEL_KAFKA_BOOTSTRAP": settings.kafka.servers,
           "FLYWHEEL_TRAIN_HEARTBEAT_SECONDS": "0.5", "FLYWHEEL_TRAIN_SESSION_TIMEOUT_MS": "6000",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    log = open(tmp_path / f"{name}.log", "wb")
    return subprocess.Popen([sys.executable, "-c", "from flywheel.cli import main; main()",
                             "--data-dir", str(settings.data_dir), "--tasks", str(settings.tasks_dir),
                             "train-worker", "--max-requests", "1", "--lease", "3"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_killed_worker_request_is_retried_and_completes(settings, world, tmp_path):
    store, gv = world
    req = request("transactions", WATERMARK, gv, detail="kill")
    publish_requests(settings, [req])
    first = _worker(settings, tmp_path, "w1")
    try:
        running = wait_until(lambda: (r := runs.get_run(store, "transactions", req["request_id"]))
                                and r["message"].startswith("training") and r, timeout=120, every=0.1)
        assert running, (tmp_path / "w1.log").read_text()
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
    assert runs.get_run(store, "transactions", req["request_id"])["status"] == "running"
    second = _worker(settings, tmp_path, "w2")
    try:
        rc = second.wait(180)
        assert rc in (0, 1), (tmp_path / "w2.log").read_text()
    finally:
        second.kill()
    run = runs.get_run(store, "transactions", req["request_id"])
    assert run["status"] == "done" and run["attempt"] == 2
    models = {m["version"]: m["status"] for m in st.list_models(store, "transactions")}
    # killed before registering: never registered (or marked abandoned), and its name not reused
    assert models.get(running["model_version"], "abandoned") == "abandoned"
    assert run["model_version"] != running["model_version"] and models[run["model_version"]] in ("approved", "rejected")
    assert rc == (0 if models[run["model_version"]] == "approved" else 1)   # train-worker exits 1 on a rejection
    assert run["model_version"].startswith("transactions-v2-")
    killed_dir = Path(os.environ["FLYWHEEL_ARTIFACTS_DIR"]) / "transactions" / running["model_version"]
    assert killed_dir.is_dir() and not (killed_dir / "COMPLETE").exists()
    assert len(read_topic(settings, "model.events")) == 1
