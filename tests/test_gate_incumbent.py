"""The incumbent baseline ([gate] baseline = "incumbent", or the teacher fallback when the gold
rows carry no teacher_output), on the real chdb and broker with real MiniLM adapters trained by
the worker: scored once with the incumbent's own predictions, pinned, reused, and scored afresh
only when another version becomes the incumbent."""

import asyncio
import json
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from flywheel.cli import main
from kernel.gold import import_gold, load_gold
from kernel.lifecycle import ModelState, TransitionError
from kernel.tasks import load_tasks
from tests.helpers.synthetic import examples, gold_lines
from tests.helpers.testing import add_sections, insert_examples, owned_store, publish_requests, read_topic, request
from training.gate.policy import Scores, score_answers
from training.registry import store as st
from training.students import load as artifacts
from training.train import runs, worker
from training.train.worker import WorkerOptions, run_worker

pytestmark = pytest.mark.integration
WATERMARK = "2025-01-01 00:01:19.000"   # the first 80 examples
LATER = "2025-01-01 00:03:19.000"       # all 200

SECTIONS = """
[train]
student = "encoder_classifier"
epochs = 1
min_steps = 1
max_length = 32
batch_size = 16
learning_rate = 3e-3
validation_share = 0.15

[gate]
min_slice_examples = 10
slice_tolerance = 0.02
baseline = "incumbent"
"""


def cli(settings, *args):
    return CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "--tasks", str(settings.tasks_dir),
                                     *args], catch_exceptions=False,
                              env={"FLYWHEEL_KAFKA_BOOTSTRAP": settings.kafka.servers})


def verdict_of(res) -> dict:
    """The --json verdict (from its first line: log lines may come before it under pytest -o log_cli)."""
    out = res.stdout
    return json.loads(out[out.index("{\n"):])


def write_gold(path: Path, lines: list[dict]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(g) for g in lines))
    return path


def gold_preds(row: dict, gv: int) -> Path:
    return Path(row["adapter_uri"]).parent / f"gold_predictions_v{gv}.jsonl"


def scores_of(path: Path, gold_rows: list[dict]) -> Scores:
    answers = {o["id"]: o["output"] for o in map(orjson.loads, path.read_bytes().splitlines())}
    return score_answers(gold_rows, answers, False)


def pinned(store) -> list[dict]:
    return store.rows("SELECT gold_version, baseline, overall, n, scores FROM gate_baselines ORDER BY pinned_at")


def train_one(settings, tasks_dir, store, gv, watermark, detail, n_requests):
    """Publish a request and run a worker until it is done. Each call is a fresh consumer group,
    which reads the earlier (done) requests again and skips them: no wait for a rebalance."""
    req = request("transactions", watermark, gv, detail=detail)
    publish_requests(settings, [req])
    opts = WorkerOptions(group=f"flywheel-training-{detail}", max_requests=n_requests, idle_exit_seconds=30)
    out = asyncio.run(run_worker(settings, load_tasks(tasks_dir), store, opts))
    assert [o.status for o in out if o.request_id == req["request_id"]] == ["done"], out
    assert all(o.status == "skipped" for o in out if o.request_id != req["request_id"]), out
    return next(o for o in out if o.request_id == req["request_id"])


@pytest.fixture
def world(settings, tasks_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    add_sections(tasks_dir, SECTIONS)
    task = load_tasks(tasks_dir)["transactions"]
    gold = gold_lines(60, countries=["DE", "FR", "US"], teacher_wrong_every=10)
    with owned_store(settings) as store:
        insert_examples(store, examples(200))
        gv = import_gold(store, task, write_gold(tmp_path / "gold.jsonl", gold)).version
        yield store, gv, gold


def test_gate_against_the_incumbent_scored_once_pinned_and_reused(settings, world, tasks_dir, tmp_path,
                                                                  monkeypatch):
    store, gv, gold = world
    _, gold_rows = load_gold(store, "transactions", gv)
    calls: list[str] = []   # versions the gate loads a predictor for
    real = artifacts.load_predictor

    def counting(row):
        calls.append(row["version"])
        return real(row)

    monkeypatch.setattr(worker, "load_predictor", counting)

    # 1. no incumbent yet: the first candidate is rejected with the fix named, nothing pinned
    o1 = train_one(settings, tasks_dir, store, gv, WATERMARK, "first", 1)
    v1 = o1.model_version
    assert not o1.verdict.approved and o1.verdict.baseline == "none"
    assert any("no incumbent to gate against" in r and 'baseline = "teacher"' in r
               and "Promote or approve a version first" in r for r in o1.verdict.reasons), o1.verdict.reasons
    assert calls == [v1] and pinned(store) == []
    m1 = st.get_model(store, "transactions", v1)
    assert m1["status"] == "rejected"
    run1 = runs.get_run(store, "transactions", o1.request_id)
    assert run1["status"] == "done" and "no incumbent to gate against" in run1["message"]

    # 2. v1 approved by hand (the operator's override of the first model) and promoted, through
    # the lifecycle: the next candidate is gated against it, its real predictions scored once
    with pytest.raises(TransitionError, match="only a gate-approved version can be promoted"):
        st.transition(store, "transactions", v1, ModelState.SERVING)
    st.transition(store, "transactions", v1, ModelState.APPROVED)
    st.transition(store, "transactions", v1, ModelState.SERVING)
    assert st.incumbent(store, "transactions")["version"] == v1
    # (the next candidate: more data and epochs, so its predictions differ from the incumbent's)
    toml = tasks_dir / "transactions.toml"
    toml.write_text(toml.read_text().replace("epochs = 1", "epochs = 3"))
    calls.clear()
    o2 = train_one(settings, tasks_dir, store, gv, LATER, "second", 2)
    v2 = o2.model_version
    assert calls == [v2, v1]                       # the candidate, then the incumbent (once)
    inc_scores = scores_of(gold_preds(m1, gv), gold_rows)   # v1's own gold predictions from its run
    m2 = st.get_model(store, "transactions", v2)
    cand_scores = scores_of(gold_preds(m2, gv), gold_rows)
    assert cand_scores != inc_scores and o2.verdict.overall == cand_scores.overall
    pins = pinned(store)
    assert [(p["gold_version"], p["baseline"]) for p in pins] == [(gv, f"incumbent:{v1}")]
    assert Scores.from_dict(orjson.loads(pins[0]["scores"])) == inc_scores and pins[0]["n"] == 60
    assert o2.verdict.baseline == f"incumbent:{v1}" and o2.verdict.baseline_overall == inc_scores.overall
    assert {s.slice: s.baseline for s in o2.verdict.slices} == {k: v[0] for k, v in inc_scores.slices.items()}
    assert not any("no incumbent" in r for r in o2.verdict.reasons)
    assert m2["baseline_score"] == inc_scores.overall and m2["status"] == ("approved" if o2.verdict.approved
                                                                           else "rejected")
    rec = store.rows(f"SELECT baseline, baseline_score FROM eval_results FINAL WHERE model_version = '{v2}' "
                     f"AND slice = '__overall__'")
    assert rec == [{"baseline": f"incumbent:{v1}", "baseline_score": inc_scores.overall}]
    events = read_topic(settings, "model.events")
    assert [e["model_version"] for e in events] == [v1, v2]
    assert events[0]["verdict"]["baseline"] == "none" and events[1]["verdict"]["baseline"] == f"incumbent:{v1}"

    # 3. a second gate call reuses the pinned baseline: no predictor is loaded at all
    def no_scoring(row):
        raise AssertionError(f"the baseline was re-scored ({row['version']})")

    monkeypatch.setattr(artifacts, "load_predictor", no_scoring)
    res = cli(settings, "gate", "--task", "transactions", "--model", v2, "--json", "--no-publish")
    v = verdict_of(res)
    assert res.exit_code == (0 if v["approved"] else 1)
    assert v["baseline"] == f"incumbent:{v1}" and v["baseline_overall"] == inc_scores.overall
    assert v["overall"] == o2.verdict.overall and v["reasons"] == list(o2.verdict.reasons)
    assert len(pinned(store)) == 1

    # 4. v2 promoted: the incumbent changed, so it is scored (once) and pinned in its turn ...
    monkeypatch.setattr(artifacts, "load_predictor", counting)
    if not o2.verdict.approved:
        st.transition(store, "transactions", v2, ModelState.APPROVED)
    st.transition(store, "transactions", v2, ModelState.SERVING)
    st.transition(store, "transactions", v1, ModelState.RETIRED)
    calls.clear()
    p1 = gold_preds(m1, gv)
    res = cli(settings, "gate", "--task", "transactions", "--predictions", str(p1), "--json", "--no-publish")
    v = verdict_of(res)
    assert calls == [v2] and v["baseline"] == f"incumbent:{v2}"
    assert v["baseline_overall"] == cand_scores.overall
    assert v["overall"] == inc_scores.overall
    assert [p["baseline"] for p in pinned(store)] == [f"incumbent:{v1}", f"incumbent:{v2}"]
    # ... and a version is never its own baseline: gating v2 again compares it with v1 (pinned)
    res = cli(settings, "gate", "--task", "transactions", "--model", v2, "--json", "--no-publish")
    assert verdict_of(res)["baseline"] == f"incumbent:{v1}" and calls == [v2]
    assert len(pinned(store)) == 2
    # re-gating leaves a serving version serving (it stays the incumbent)
    assert st.get_model(store, "transactions", v2)["status"] == "serving"

    # 5. baseline = "teacher" but the new gold version has no teacher_output: the incumbent
    toml.write_text(toml.read_text().replace('baseline = "incumbent"', 'baseline = "teacher"'))
    task = load_tasks(tasks_dir)["transactions"]
    gv2 = import_gold(store, task, write_gold(tmp_path / "g2.jsonl", [{k: g[k] for k in ("id", "input", "output", "slice")}
                                                                       for g in gold])).version
    assert gv2 == gv + 1
    calls.clear()
    res = cli(settings, "gate", "--task", "transactions", "--gold-version", str(gv2), "--predictions", str(p1),
              "--json", "--no-publish")
    v = verdict_of(res)
    assert calls == [v2] and v["baseline"] == f"incumbent:{v2}" and v["gold_version"] == gv2
    assert pinned(store)[-1]["gold_version"] == gv2 and pinned(store)[-1]["baseline"] == f"incumbent:{v2}"
    # the teacher baseline of gold v1 is pinned on its own, next to the incumbent ones
    res = cli(settings, "gate", "--task", "transactions", "--gold-version", str(gv), "--predictions", str(p1),
              "--json", "--no-publish")
    v = verdict_of(res)
    assert v["baseline"] == "teacher" and abs(v["baseline_overall"] - 0.9) < 1e-9 and calls == [v2]


def test_no_baseline_rejects_naming_the_fix(settings, tasks_dir, tmp_path):
    add_sections(tasks_dir, SECTIONS)
    task = load_tasks(tasks_dir)["transactions"]
    gold = gold_lines(30, countries=["DE", "FR", "US"])
    preds = tmp_path / "p.jsonl"
    preds.write_bytes(b"\n".join(orjson.dumps({"id": g["id"], "output": g["output"]}) for g in gold))
    with owned_store(settings) as store:
        import_gold(store, task, write_gold(tmp_path / "gold.jsonl", gold))
        # baseline = "incumbent" and no model approved or promoted: rejected even with a teacher at hand
        res = cli(settings, "gate", "--task", "transactions", "--predictions", str(preds), "--json")
        v = verdict_of(res)
        assert res.exit_code == 1 and not v["approved"] and v["baseline"] == "none" and v["overall"] == 1.0
        assert "no incumbent to gate against" in v["reasons"][0] and "transactions.toml" in v["reasons"][0]
        assert read_topic(settings, "model.events")[0]["kind"] == "candidate_rejected"
        # baseline = "teacher", the gold rows carry no teacher_output and there is no incumbent
        p = tasks_dir / "transactions.toml"
        p.write_text(p.read_text().replace('baseline = "incumbent"', 'baseline = "teacher"'))
        import_gold(store, task, write_gold(tmp_path / "g2.jsonl",
                                            [{k: g[k] for k in ("id", "input", "output", "slice")} for g in gold]))
        res = cli(settings, "gate", "--task", "transactions", "--predictions", str(preds), "--json", "--no-publish")
        v = verdict_of(res)
        assert res.exit_code == 1 and not v["approved"]
        assert "carry no teacher_output" in v["reasons"][0] and "flywheel gold import" in v["reasons"][0]
        assert store.scalar("SELECT count() FROM gate_baselines") == 0
        assert store.scalar("SELECT count() FROM gate_verdicts FINAL") == 2
