"""`flywheel gate --predictions` and `flywheel models` against the real chdb store and broker."""

import json

import orjson
import pytest
from click.testing import CliRunner

from flywheel.cli import main
from kernel.gold import import_gold
from kernel.tasks import load_tasks
from tests.helpers.synthetic import gold_lines
from tests.helpers.testing import add_sections, owned_store, read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
def gold_store(settings, tasks_dir, tmp_path):
    add_sections(tasks_dir)
    task = load_tasks(tasks_dir)["transactions"]
    # 3 big slices of 20, one small slice of 4; the teacher is wrong on 1 in 10 everywhere
    lines = gold_lines(60, countries=["DE", "FR", "US"], teacher_wrong_every=10)
    lines += [{**g, "id": f"lu{i}", "slice": "LU"} for i, g in enumerate(gold_lines(4, seed=5))]
    path = tmp_path / "gold.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(g) for g in lines))
    with owned_store(settings) as store:
        imp = import_gold(store, task, path)
        yield store, lines, imp.version


def run(settings, *args):
    return CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "--tasks", str(settings.tasks_dir),
                                     *args], catch_exceptions=False,
                             env={"FLYWHEEL_KAFKA_BOOTSTRAP": settings.kafka.servers})


def write_preds(path, lines, wrong_ids=()):
    other = {"groceries": "rent"}
    path.write_bytes(b"\n".join(orjson.dumps({"id": g["id"], "output": other.get(g["output"], "groceries")
                                              if g["id"] in wrong_ids else g["output"]}) for g in lines))
    return path


def test_better_overall_but_worse_on_a_slice_is_rejected(settings, gold_store, tmp_path):
    store, lines, gv = gold_store
    us = [g["id"] for g in lines if g["slice"] == "US"][:4]          # US 0.80 vs teacher 0.90
    res = run(settings, "gate", "--task", "transactions", "--predictions",
              str(write_preds(tmp_path / "p.jsonl", lines, us)), "--json")
    assert res.exit_code == 1, res.output
    v = json.loads(res.stdout)
    assert not v["approved"] and v["gold_version"] == gv
    assert v["overall"] > v["baseline_overall"]
    assert any("slice 'US' regressed: 0.8000 vs baseline 0.9000" in r for r in v["reasons"])
    assert any("slice 'LU' has 4 gold examples" in r for r in v["reasons"])  # insufficient: fail by default
    assert {s["slice"]: s["status"] for s in v["slices"]} == {"DE": "ok", "FR": "ok", "US": "regressed",
                                                                "LU": "insufficient"}
    name = v["model_version"]
    assert name.startswith("predictions:p.jsonl:")
    rows = store.rows(f"SELECT slice, n, score, baseline_score, status FROM eval_results FINAL "
                      f"WHERE model_version = '{name}' AND gold_version = {gv} ORDER BY slice")
    assert [r["slice"] for r in rows] == ["DE", "FR", "LU", "US", "__overall__"]
    verdict = store.rows("SELECT approved, reasons FROM gate_verdicts FINAL")
    assert verdict[0]["approved"] == 0 and len(verdict[0]["reasons"]) == 2
    events = read_topic(settings, "model.events")
    assert [e["kind"] for e in events] == ["candidate_rejected"]
    assert events[0]["gold_version"] == gv and events[0]["verdict"]["reasons"] == v["reasons"]


def test_worse_overall_rejected_table_output_and_pinned_baseline(settings, gold_store, tmp_path, tasks_dir):
    store, lines, gv = gold_store
    # warn on insufficient slices for this one
    p = tasks_dir / "transactions.toml"
    p.write_text(p.read_text().replace("slice_tolerance = 0.02", 'slice_tolerance = 0.02\ninsufficient_slice = "warn"'))
    wrong = [g["id"] for g in lines if g["slice"] != "LU"][::5]        # 0.80 overall vs 0.90
    res = run(settings, "gate", "--task", "transactions", "--predictions",
              str(write_preds(tmp_path / "p.jsonl", lines, wrong)), "--no-publish")
    assert res.exit_code == 1
    assert "REJECTED" in res.output and "overall score" in res.output and "warnings:" in res.output
    assert "slice 'LU' has 4 gold examples" in res.output
    res = run(settings, "gate", "--task", "transactions", "--predictions",
              str(write_preds(tmp_path / "good.jsonl", lines)), "--no-publish")
    assert res.exit_code == 0, res.output
    assert "APPROVED" in res.output
    # the baseline was scored once and reused
    assert store.scalar("SELECT count() FROM gate_baselines") == 1
    assert read_topic(settings, "model.events", timeout=1.0) == []


def test_bad_arguments_name_the_fix(settings, gold_store, tmp_path):
    res = run(settings, "gate", "--task", "transactions")
    assert res.exit_code == 2 and "--model VERSION or --predictions" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "nope", "output": "rent"}\n')
    res = run(settings, "gate", "--task", "transactions", "--predictions", str(bad), "--no-publish")
    assert res.exit_code == 1 and "not in this gold version" in res.output
    res = run(settings, "gate", "--task", "transactions", "--model", "transactions-v9-x", "--no-publish")
    assert res.exit_code == 2 and "no model version" in res.output
    res = run(settings, "models", "--task", "transactions")
    assert res.exit_code == 0 and "no model versions" in res.output
