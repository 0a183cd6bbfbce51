"""The student kinds that are not LoRA adapters, served end to end: a frozen-encoder + linear head
(embedding_head) and a fully fine-tuned MiniLM (encoder_full), each trained (tiny) by the real
training worker, registered and gated, promoted with the CLI and answered by a real
`flywheel serve` process, on the real broker and the real embedded ClickHouse. The served
answers must be exactly the gate's answers (one inference path), and the model server must
load both kinds by name as it loads LoRA adapters."""

import asyncio

import httpx
import orjson
import pytest

from kernel.gold import import_gold
from kernel.tasks import load_tasks
from tests.helpers.serving import Serve, answered_by, cli
from tests.helpers.synthetic import examples, gold_lines
from tests.helpers.testing import insert_examples, owned_store, publish_requests, request
from training.registry import store as reg
from training.students.load import load_predictor
from training.train.worker import WorkerOptions, run_worker

pytestmark = pytest.mark.integration
TASK = "transactions"

TRAIN = """
[train]
student = "{kind}"
steps = 3
eval_every = 1
batch_size = 8
max_length = 24
full_learning_rate = 5e-4
validation_share = 0.2
early_stopping_patience = 1

[gate]
min_slice_examples = 1000
insufficient_slice = "warn"
"""

TEXTS = ["Metro train ticket payment 12.00 EUR ref 1234", "sushi bar dinner", "monthly rent", "Acme supermarket"]


def train_one(settings, tasks_dir, store, kind, gold_version, watermark, base_text):
    (tasks_dir / "transactions.toml").write_text(base_text + "\n" + TRAIN.format(kind=kind))
    tasks = load_tasks(tasks_dir)
    publish_requests(settings, [request(TASK, watermark, gold_version, detail=kind)])
    outcomes = asyncio.run(run_worker(settings, tasks, store, WorkerOptions(max_requests=1, idle_exit_seconds=30)))
    assert [o.status for o in outcomes] == ["done"], outcomes
    assert outcomes[0].verdict.approved, outcomes[0].verdict
    row = reg.get_model(store, TASK, outcomes[0].model_version)
    assert row["student"] == kind
    return row


def test_embedding_head_and_encoder_full_versions_are_promoted_and_answered_by_flywheel_serve(
        settings, tasks_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    base_text = (tasks_dir / "transactions.toml").read_text()
    with owned_store(settings) as store:
        insert_examples(store, examples(24))
        watermark = "2025-01-01 00:00:23.000"
        gold = tmp_path / "gold.jsonl"          # the teacher is always wrong: any student is approved
        gold.write_bytes(b"\n".join(orjson.dumps(g) for g in gold_lines(8, countries=["DE", "FR"],
                                                                        teacher_wrong_every=1)))
        gv = import_gold(store, load_tasks(tasks_dir)[TASK], gold).version
        head = train_one(settings, tasks_dir, store, "embedding_head", gv, watermark, base_text)
        full = train_one(settings, tasks_dir, store, "encoder_full", gv, watermark, base_text)
        # what the gate scored with: the reference each served answer must equal
        expected = {r["version"]: load_predictor(r)(TEXTS) for r in (head, full)}
        labels = set(load_tasks(tasks_dir)[TASK].labels)
        assert all(set(v) <= labels for v in expected.values())

        serve = Serve(settings, tmp_path / "serve.log")
        try:
            serve.wait_ready()
            for row in (head, full):
                v = row["version"]
                res = cli(settings, "promote", "--task", TASK, "--model", v, "--reason", row["student"])
                assert res.exit_code == 0 and f"promoted {v}" in res.output, res.output
                answered_by(serve, TEXTS[0], v)
                with httpx.Client(base_url=serve.url, timeout=60) as c:
                    r = c.post("/v1/predict", json={"model": TASK, "input": TEXTS})
                    assert r.status_code == 200 and r.headers["x-flywheel-version"] == v, r.text
                    assert r.json()["outputs"] == expected[v]
                    r = c.post("/classify", json={"model": TASK, "input": TEXTS})
                    data = r.json()["data"]
                    assert r.status_code == 200 and [d["label"] for d in data] == expected[v]
                    assert all(len(d["probs"]) == len(labels) and abs(sum(d["probs"]) - 1) < 1e-4 for d in data)
                    r = c.post("/v1/chat/completions", json={"model": TASK, "messages": [
                        {"role": "user", "content": "hi"}]})
                    assert r.status_code == 400 and "use /classify" in r.text
            with httpx.Client(base_url=serve.url, timeout=60) as c:   # the previous version, named explicitly
                r = c.post("/v1/predict", json={"model": head["version"], "input": TEXTS})
                assert r.status_code == 200 and r.json()["outputs"] == expected[head["version"]]
            with httpx.Client(base_url=f"http://127.0.0.1:{serve.model_port}", timeout=60) as c:
                kinds = {m["id"]: m.get("flywheel", {}).get("student") for m in c.get("/v1/models").json()["data"]}
                assert kinds[head["version"]] == "embedding_head" and kinds[full["version"]] == "encoder_full"
                r = c.post("/classify", json={"model": full["version"], "input": TEXTS})
                assert [d["label"] for d in r.json()["data"]] == expected[full["version"]]
                metrics = httpx.get(f"{serve.url}/metrics").text
            assert "flywheel_router_failed_total 0" in metrics, metrics
        finally:
            serve.stop()
        assert reg.get_model(store, TASK, full["version"])["status"] == "serving"
        assert reg.get_model(store, TASK, head["version"])["status"] == "retired"
