"""Serve and promote end to end, on the real broker, the real embedded ClickHouse and a real
`flywheel serve` process, with real models: the MiniLM encoder student and the causal student on
the packaged SmolLM2-135M-Instruct (GGUF). Training is tiny (one or two steps): the gold set's
teacher answers are all wrong, so any candidate clears the teacher baseline and is approved; a
second gold version with a perfect teacher rejects a one-step candidate."""

import asyncio
import json
import time

import httpx
import orjson
import pytest

from kernel.gold import import_gold
from kernel.tasks import load_tasks
from schemas.events import validate
from streams.drift.stage import decode_live
from tests.helpers.serving import Serve, answered_by, cli
from tests.helpers.synthetic import examples, gold_lines
from tests.helpers.testing import add_sections, insert_examples, owned_store, publish_requests, read_topic, request
from training.registry import store as reg
from training.train.worker import WorkerOptions, run_worker

pytestmark = pytest.mark.integration
TASK = "transactions"

ENCODER = """
[train]
epochs = 1
batch_size = 16
max_length = 24
learning_rate = 3e-3
validation_share = 0.2
early_stopping_patience = 1

[gate]
min_slice_examples = 1000
insufficient_slice = "warn"
"""

CAUSAL = """
[train]
student = "causal_lm"
target_modules = ["q_proj", "v_proj"]
lora_r = 4
lora_alpha = 8
lora_dropout = 0.0
epochs = 1
batch_size = 4
max_length = 48
learning_rate = 1e-3
warmup_share = 0.0
validation_share = 0.2
quantization = "none"
max_new_tokens = 2
system_prompt = "Answer with the category only."

[gate]
min_slice_examples = 1000
insufficient_slice = "warn"
"""


def write_gold(path, n, teacher_wrong_every):
    path.write_bytes(b"\n".join(orjson.dumps(g) for g in gold_lines(n, countries=["DE", "FR"],
                                                                       teacher_wrong_every=teacher_wrong_every)))
    return path


@pytest.mark.parametrize("student", ["encoder", "causal"])
def test_promote_serve_second_promotion_rollback_and_a_rejected_version(student, settings, tasks_dir, tmp_path,
                                                                        monkeypatch):
    t_start = time.monotonic()
    monkeypatch.setenv("FLYWHEEL_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    add_sections(tasks_dir, ENCODER if student == "encoder" else CAUSAL)
    tasks = load_tasks(tasks_dir)
    n_examples, n_gold = (20, 10) if student == "encoder" else (8, 4)
    with owned_store(settings) as store:
        insert_examples(store, examples(n_examples))
        watermark = f"2025-01-01 00:00:{n_examples - 1:02d}.000"
        gv1 = import_gold(store, tasks[TASK], write_gold(tmp_path / "g1.jsonl", n_gold, 1)).version  # teacher all wrong
        reqs = [request(TASK, watermark, gv1, detail="a"), request(TASK, watermark, gv1, detail="b")]
        if student == "encoder":
            gv2 = import_gold(store, tasks[TASK], write_gold(tmp_path / "g2.jsonl", n_gold, 0)).version  # perfect
            reqs.append(request(TASK, watermark, gv2, detail="c"))
        publish_requests(settings, reqs)
        outcomes = asyncio.run(run_worker(settings, tasks, store,
                                          WorkerOptions(max_requests=len(reqs), idle_exit_seconds=30)))
        assert [o.status for o in outcomes] == ["done"] * len(reqs), outcomes
        v1, v2 = outcomes[0].model_version, outcomes[1].model_version
        assert outcomes[0].verdict.approved and outcomes[1].verdict.approved
        t_trained = time.monotonic()

        serve = Serve(settings, tmp_path / "serve.log")
        try:
            serve.wait_ready()
            text = "Metro train ticket payment 12.00 EUR ref 1234"
            res = cli(settings, "promote", "--task", TASK, "--model", v1, "--reason", "first")
            assert res.exit_code == 0, res.output
            assert f"promoted {v1}" in res.output
            answered_by(serve, text, v1)

            res = cli(settings, "predict", "--task", TASK, "--url", serve.url, text)
            assert res.exit_code == 0 and f"({v1})" in res.output, res.output
            res = cli(settings, "predict", "--task", TASK, "--url", serve.url, "-",
                      input='{"id": "q1", "input": "sushi bar"}\n"monthly rent"\n')
            lines = [json.loads(x) for x in res.output.splitlines()]
            assert res.exit_code == 0 and [x.get("id") for x in lines] == ["q1", None]
            assert all(x["model_version"] == v1 and isinstance(x["output"], str) for x in lines)

            res = cli(settings, "promote", "--task", TASK, "--model", v2, "--reason", "second")
            assert res.exit_code == 0 and f"previous: {v1}" in res.output, res.output
            answered_by(serve, text, v2)
            with httpx.Client(base_url=serve.url) as c:                 # the incumbent, named explicitly
                r = c.post("/v1/predict", json={"model": v1, "input": text})
                assert r.status_code == 200 and r.headers["x-flywheel-version"] == v1

            res = cli(settings, "rollback", "--task", TASK, "--reason", "bad answers")
            assert res.exit_code == 0 and f"rolled back to {v1}" in res.output, res.output
            answered_by(serve, text, v1, timeout=5)                      # still loaded: fast
            res = cli(settings, "rollback", "--task", TASK)
            assert res.exit_code == 1 and "nothing to roll back to" in res.output

            if student == "encoder":
                v3 = outcomes[2].model_version
                assert not outcomes[2].verdict.approved
                res = cli(settings, "promote", "--task", TASK, "--model", v3)
                assert res.exit_code == 1 and "rejected by the gate" in res.output, res.output
                assert f"flywheel gate --task {TASK} --model {v3}" in res.output

            # lifecycle and history
            assert reg.get_model(store, TASK, v1)["status"] == "serving"
            assert reg.get_model(store, TASK, v2)["status"] == "rolled_back"
            res = cli(settings, "models", "--task", TASK)
            assert res.exit_code == 0 and "promotion history" in res.output and "bad answers" in res.output
            hist = store.rows(f"SELECT revision, action, serving_version, previous_version FROM model_config FINAL "
                              f"WHERE task = '{TASK}' ORDER BY revision")
            assert [(h["revision"], h["action"], h["serving_version"], h["previous_version"]) for h in hist] == [
                (1, "promote", v1, None), (2, "promote", v2, v1), (3, "rollback", v1, None)]
            with httpx.Client(base_url=serve.url) as c:
                metrics = c.get("/metrics").text
            assert "flywheel_router_failed_total 0" in metrics, metrics
        finally:
            serve.stop()

        # what was served is on live.requests, valid for the drift stage that consumes it
        live = read_topic(settings, "live.requests")
        assert {x["model_version"] for x in live} == {v1, v2}
        for x in live:
            validate("live.requests.schema.json", x)
            decode_live(orjson.dumps(x), tasks)
        assert any(x["input"] == "sushi bar" and x["model_version"] == v1 for x in live)
        events = [e for e in read_topic(settings, "model.events") if e["kind"] in ("promoted", "rolled_back")]
        assert [(e["kind"], e["model_version"]) for e in events] == [("promoted", v1), ("promoted", v2),
                                                                     ("rolled_back", v1)]
        configs = read_topic(settings, "model.config")
        assert [c["revision"] for c in configs] == [1, 2, 3]
    print(f"\n{student}: training {t_trained - t_start:.1f}s, serving part {time.monotonic() - t_trained:.1f}s")
