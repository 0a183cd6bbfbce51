"""The model server and the router in-process, with real models: MiniLM adapters (encoder
student) and an adapter on the packaged SmolLM2 (GGUF, causal student). No HTTP port: httpx's
ASGI transport drives the Starlette apps."""

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from kernel.settings import load_settings
from serving.config import Route, VersionRef
from serving.engine import Engine
from serving.live import LivePublisher
from serving.router import VERSION_HEADER, EngineBackend, Router, create_router_app
from serving.server import create_app
from tests.helpers.adapters import SYSTEM, make_adapter, minilm

LABELS = ["groceries", "transport", "dining"]
TEXTS = ["Acme supermarket payment 12.00 EUR", "Metro train ticket", "sushi bar dinner", "monthly rent"]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    base = minilm()
    return {f"tx-v{i}-0000000{i}": make_adapter(root, f"tx-v{i}-0000000{i}", "encoder_classifier", base, LABELS, seed=i)
            for i in (1, 2, 3)}


def reference_labels(vdir: Path, texts) -> list[str]:
    """The adapter alone on a fresh base (peft's single-adapter path), for comparison."""
    import torch
    from peft import PeftModel

    from serving.engine import encode_texts, load_encoder_base

    tok, base = load_encoder_base(minilm(), LABELS)
    model = PeftModel.from_pretrained(base, str(vdir / "adapter")).eval()
    with torch.inference_mode():
        ids = model(**encode_texts(tok, texts, 32)).logits.argmax(-1).tolist()
    return [LABELS[i] for i in ids]


def run(coro):
    return asyncio.run(coro)


def test_model_server_speaks_the_vllm_subset_with_several_adapters_on_one_base(adapters):
    engine = Engine()
    app = create_app(engine)

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
            for name, vdir in adapters.items():
                r = await c.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(vdir / "adapter")})
                assert r.status_code == 200 and r.text == f"Success: LoRA adapter '{name}' added successfully."
            assert len(engine.bases()) == 1                      # one base model for the three
            models = (await c.get("/v1/models")).json()
            ids = {m["id"]: m for m in models["data"]}
            assert set(adapters) <= set(ids) and minilm() in ids
            assert all(ids[n]["parent"] == minilm() for n in adapters)

            answers = {}
            for name in adapters:
                r = await c.post("/classify", json={"model": name, "input": TEXTS})
                body = r.json()
                assert r.status_code == 200 and body["object"] == "list" and body["model"] == name
                assert [d["index"] for d in body["data"]] == [0, 1, 2, 3]
                assert all(d["num_classes"] == 3 and abs(sum(d["probs"]) - 1) < 1e-4 for d in body["data"])
                assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["completion_tokens"] == 0
                answers[name] = [d["label"] for d in body["data"]]
            one = (await c.post("/v1/classify", json={"model": "tx-v2-00000002", "input": TEXTS[0]})).json()
            assert len(one["data"]) == 1 and one["data"][0]["label"] == answers["tx-v2-00000002"][0]

            # the same name and path again: a no-op; another path under a used name: refused
            r = await c.post("/v1/load_lora_adapter", json={"lora_name": "tx-v1-00000001",
                                                           "lora_path": str(adapters["tx-v1-00000001"])})
            assert r.status_code == 200 and "already loaded" in r.text
            r = await c.post("/v1/load_lora_adapter", json={"lora_name": "tx-v1-00000001",
                                                           "lora_path": str(adapters["tx-v2-00000002"])})
            assert r.status_code == 400 and "immutable" in r.json()["error"]["message"]

            r = await c.post("/v1/unload_lora_adapter", json={"lora_name": "tx-v3-00000003"})
            assert r.status_code == 200
            r = await c.post("/classify", json={"model": "tx-v3-00000003", "input": "x"})
            assert r.status_code == 404 and r.json()["error"]["type"] == "NotFoundError"
            # unloaded, the name stays bound to its path
            r = await c.post("/v1/load_lora_adapter", json={"lora_name": "tx-v3-00000003",
                                                           "lora_path": str(adapters["tx-v1-00000001"])})
            assert r.status_code == 400

            r = await c.post("/v1/chat/completions", json={"model": "tx-v1-00000001",
                                                          "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 400 and "/classify" in r.json()["error"]["message"]
            r = await c.post("/classify", content=b"{not json")
            assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]
            r = await c.post("/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/nowhere"})
            assert r.status_code == 404 and "no adapter here" in r.json()["error"]["message"]
            metrics = (await c.get("/metrics")).text
            assert 'flywheel_serve_requests_total{endpoint="classify",status="200"} 4' in metrics
        return answers

    answers = run(go())
    # switching adapters per request gives each adapter's own answers
    for name, vdir in adapters.items():
        assert answers[name] == reference_labels(vdir, TEXTS), name
    assert len({tuple(a) for a in answers.values()}) > 1


def _route(rev, serving, adapters, previous=None):
    refs = {v: VersionRef(v, str(adapters[v] / "adapter"), "encoder_classifier", minilm())
            for v in (serving, previous) if v}
    return Route("tx", rev, serving, previous, versions=refs, action="promote", decided_by="test",
                 decided_at="2026-11-21T10:00:00.000Z")


def test_router_switches_versions_without_failing_a_request_and_serves_with_the_broker_down(adapters):
    v1, v2 = "tx-v1-00000001", "tx-v2-00000002"
    settings = load_settings({"FLYWHEEL_KAFKA_BOOTSTRAP": "127.0.0.1:1"})   # nothing listens there

    async def go():
        publisher = LivePublisher(settings.kafka, capacity=5)
        publisher.start()
        router = Router({"encoder_classifier": EngineBackend(Engine())}, publisher)
        app = create_router_app(router)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as c:
            r = await c.post("/classify", json={"model": "tx", "input": "x"})
            assert r.status_code == 404 and "no task or version" in r.json()["error"]["message"]
            assert await router.apply(_route(1, v1, adapters))
            r = await c.post("/classify", json={"model": "tx", "input": TEXTS})
            assert r.status_code == 200 and r.headers[VERSION_HEADER] == v1 and r.json()["model_version"] == v1

            # requests keep flowing while revision 2 loads and warms up; none fails
            statuses, versions = [], []

            async def traffic():
                for _ in range(30):
                    r = await c.post("/classify", json={"model": "tx", "input": TEXTS[0]})
                    statuses.append(r.status_code)
                    versions.append(r.headers.get(VERSION_HEADER))
            await asyncio.gather(traffic(), router.apply(_route(2, v2, adapters, previous=v1)))
            assert set(statuses) == {200}
            r = await c.post("/classify", json={"model": "tx", "input": TEXTS[0]})
            assert r.headers[VERSION_HEADER] == v2
            assert versions == sorted(versions, key=lambda v: v == v2)   # never back to v1 once switched

            # an explicit version; a stale record is ignored
            r = await c.post("/v1/predict", json={"model": v1, "input": TEXTS})
            assert r.status_code == 200 and r.json()["model_version"] == v1 and len(r.json()["outputs"]) == 4
            assert not await router.apply(_route(1, v1, adapters))
            assert router.routes["tx"].serving == v2

            await asyncio.sleep(0.3)
            metrics = (await c.get("/metrics")).text
            state = (await c.get("/v1/flywheel/routes")).json()
        await publisher.stop(drain_s=0.1)
        return metrics, state, publisher

    metrics, state, publisher = run(go())
    # served all along; what could not be published is counted, and said in the metrics
    assert not publisher.connected and publisher.last_error
    assert publisher.unpublished >= 30 and publisher.published == 0
    assert "flywheel_live_unpublished_total" in metrics and "flywheel_live_broker_connected 0" in metrics
    assert state["routes"]["tx"]["serving_version"] == v2 and state["routes"]["tx"]["previous_version"] == v1


def test_causal_adapter_on_the_packaged_smollm2_answers_chat_completions(tmp_path):
    from serving.gguf import packaged_smollm2, resolve_base_model

    assert packaged_smollm2().suffix == ".gguf"
    base_dir = Path(resolve_base_model("smollm2"))        # converted once, cached
    tok_cfg = json.loads((base_dir / "tokenizer_config.json").read_text())
    assert tok_cfg["eos_token"] == "<|im_end|>"            # from the GGUF metadata, not transformers' guess
    vdir = make_adapter(tmp_path, "chat-v1-00000001", "causal_lm", "smollm2", seed=1, max_new_tokens=4)
    engine = Engine()
    app = create_app(engine)

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
            r = await c.post("/v1/load_lora_adapter", json={"lora_name": "chat-v1-00000001", "lora_path": str(vdir)})
            assert r.status_code == 200
            r = await c.post("/v1/chat/completions", json={
                "model": "chat-v1-00000001", "max_tokens": 3,
                "messages": [{"role": "system", "content": SYSTEM},
                             {"role": "user", "content": [{"type": "text", "text": "Metro train ticket"}]}]})
            body = r.json()
            assert r.status_code == 200 and body["object"] == "chat.completion", body
            choice = body["choices"][0]
            assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
            assert choice["finish_reason"] in ("stop", "length") and 1 <= body["usage"]["completion_tokens"] <= 3
            r = await c.post("/v1/chat/completions", json={"model": "chat-v1-00000001", "stream": True,
                                                          "messages": [{"role": "user", "content": "x"}]})
            assert r.status_code == 400 and "stream" in r.json()["error"]["message"]
            r = await c.post("/classify", json={"model": "chat-v1-00000001", "input": "x"})
            assert r.status_code == 400
            return choice["message"]["content"]

    answer = run(go())
    # the gate's path (texts -> answers with the trained system prompt) gives the same greedy answer
    assert engine.predict("chat-v1-00000001", ["Metro train ticket"]) == [
        engine.chat("chat-v1-00000001", [{"role": "system", "content": SYSTEM},
                                         {"role": "user", "content": "Metro train ticket"}], 4).text]
    assert isinstance(answer, str)


def test_a_version_named_like_a_module_loads_beside_others(adapters, tmp_path):
    """peft matches adapter names against module names ('classifier' is the head's); the engine
    gives adapters neutral names of its own, so any version name loads, answers and unloads."""
    vdir = make_adapter(tmp_path, "classifier-v1-00000001", "encoder_classifier", minilm(), LABELS, seed=7)
    engine = Engine()
    engine.load("tx-v1-00000001", adapters["tx-v1-00000001"] / "adapter")
    engine.load("classifier-v1-00000001", vdir / "adapter")
    assert engine.predict("classifier-v1-00000001", TEXTS) == reference_labels(vdir, TEXTS)
    assert engine.predict("tx-v1-00000001", TEXTS) == reference_labels(adapters["tx-v1-00000001"], TEXTS)
    engine.unload("classifier-v1-00000001")
    assert engine.predict("tx-v1-00000001", TEXTS) == reference_labels(adapters["tx-v1-00000001"], TEXTS)
