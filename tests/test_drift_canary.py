"""The canary's disagreement, error and candidate-wrong rates as drift metrics: the pure values of
a pair, the detectors they feed (restarted for a new pair of versions), and end to end on the real
broker, ClickHouse and stream worker: a planted jump in disagreement on canary.pairs becomes a
drift_alerts row and a drift.alerts message naming the versions, shown by `flywheel drift`."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timezone

import orjson
import pytest

from kernel.tasks import parse_task
from schemas.events import InvalidMessage, validate
from schemas.timefmt import rfc3339
from streams.drift.config import drift_config
from streams.drift.stage import decode_pair
from streams.drift.state import TaskDrift, canary_values

TASK = parse_task({"name": "transactions", "labels": ["groceries", "transport", "dining"]})
NOW = datetime(2026, 11, 21, 10, 0, tzinfo=timezone.utc)


def pair(i, disagree=False, error=False, teacher=None, cand="v2", inc="v1", task="transactions", ts=None):
    answer = None if error else ("transport" if disagree else "groceries")
    obj = {"request_id": f"r{i}", "task": task, "input": f"text {i}", "slice": "groceries",
           "incumbent_version": inc, "incumbent_answer": "groceries", "candidate_version": cand,
           "candidate_answer": answer, "teacher_answer": teacher, "agree": None if error else not disagree,
           "ts": ts or rfc3339(NOW.timestamp() + i * 0.01), "schema_version": 1}
    if error:
        obj["error"] = "timeout after 5.0s"
    validate("canary.pairs.schema.json", obj)
    return obj


def items(pairs):
    return [decode_pair(orjson.dumps(p), {"transactions": TASK})[1] for p in pairs]


def stream(rng, start, n, p_disagree, cand="v2", inc="v1", p_error=0.0):
    return [pair(i, disagree=rng.random() < p_disagree, error=rng.random() < p_error, cand=cand, inc=inc)
            for i in range(start, start + n)]


def test_canary_values_of_a_pair():
    assert canary_values(pair(1)) == (False, False, None)
    assert canary_values(pair(1, disagree=True)) == (True, False, None)
    assert canary_values(pair(1, error=True)) == (True, True, None)              # a failure disagrees, as in the judge
    assert canary_values(pair(1, teacher="Groceries ")) == (False, False, False)  # compared as the canary compares
    assert canary_values(pair(1, disagree=True, teacher="groceries")) == (True, False, True)
    assert canary_values(pair(1, error=True, teacher="groceries")) == (True, True, True)


def test_decode_pair_rejects_bad_messages_naming_the_problem():
    tasks = {"transactions": TASK}
    with pytest.raises(InvalidMessage, match="unknown task 'other'"):
        decode_pair(orjson.dumps(pair(1, task="other")), tasks)
    with pytest.raises(InvalidMessage):
        decode_pair(b"{not json", tasks)
    with pytest.raises(InvalidMessage):
        decode_pair(orjson.dumps({**pair(1), "agree": "yes"}), tasks)
    task, item = decode_pair(orjson.dumps(pair(7, disagree=True)), tasks)
    assert task == "transactions" and item[:6] == ("v2:r7", "v1", "v2", True, False, None)


def test_a_jump_in_disagreement_alerts_naming_the_versions_and_a_steady_canary_is_quiet():
    rng = random.Random(1)
    td = TaskDrift(TASK, drift_config(TASK), 60)
    quiet = td.observe_canary_batch(items(stream(rng, 0, 1500, 0.02)), NOW)
    assert quiet == []
    alerts = td.observe_canary_batch(items(stream(rng, 1500, 800, 0.25)), NOW)
    assert [a["metric"] for a in alerts] == ["canary_disagreement_rate"]
    a = alerts[0]
    validate("drift.alerts.schema.json", a)
    assert a["reference"] < 0.06 and a["value"] > 0.12 and a["detector"] == "adwin"
    assert a["evidence"]["serving_version"] == "v1" and a["evidence"]["candidate_version"] == "v2"
    rows = {r["metric"]: r for r in td.window_rows("2026-11-21 10:00:00.000")}
    assert set(rows) == {"canary_disagreement_rate", "canary_error_rate"}     # no teacher answers: no wrong rate
    assert orjson.loads(rows["canary_disagreement_rate"]["detail"])["candidate_version"] == "v2"
    assert rows["canary_disagreement_rate"]["n"] == 2300 and rows["canary_error_rate"]["value"] == 0.0
    # replayed pairs are not counted again
    n = td.monitors["canary_disagreement_rate"].n
    assert td.observe_canary_batch(items(stream(rng, 0, 100, 0.9)), NOW) == [] and \
        td.monitors["canary_disagreement_rate"].n == n


def test_errors_and_wrong_answers_are_their_own_metrics():
    rng = random.Random(2)
    td = TaskDrift(TASK, drift_config(TASK), 60)
    ok = [pair(i, error=rng.random() < 0.01, teacher="groceries") for i in range(1000)]
    bad = [pair(i, error=rng.random() < 0.3, teacher="groceries") for i in range(1000, 1800)]
    assert td.observe_canary_batch(items(ok), NOW) == []
    metrics = {a["metric"] for a in td.observe_canary_batch(items(bad), NOW)}
    assert {"canary_error_rate", "canary_wrong_rate", "canary_disagreement_rate"} == metrics


def test_a_new_candidate_restarts_the_canary_detectors_and_state_keeps_the_versions():
    rng = random.Random(3)
    td = TaskDrift(TASK, drift_config(TASK), 60)
    td.observe_canary_batch(items(stream(rng, 0, 1000, 0.02)), NOW)
    assert td.monitors["canary_disagreement_rate"].n == 1000
    # v3 disagrees far more than v2 did: not a change of v2's stream, a new stream (warm-up again)
    alerts = td.observe_canary_batch(items(stream(rng, 0, 150, 0.4, cand="v3", inc="v2")), NOW)
    assert alerts == [] and td.canary_versions == ("v2", "v3")
    assert td.monitors["canary_disagreement_rate"].n == 150
    back = TaskDrift.loads(td.dumps(), TASK, drift_config(TASK), 60)
    assert back.canary_versions == ("v2", "v3") and back.monitors["canary_disagreement_rate"].n == 150
    assert back.observe_canary_batch(items(stream(rng, 0, 10, 0.4, cand="v3", inc="v2")), NOW) == [] and \
        back.monitors["canary_disagreement_rate"].n == 150        # v3's pairs seen before the snapshot: skipped
    old = orjson.loads(td.dumps())
    del old["canary_versions"], old["seen"]["canary"]            # a snapshot from before the canary metrics
    assert TaskDrift.from_state(old, TASK, drift_config(TASK), 60).canary_versions is None


TASK_TOML = """
name = "transactions"
labels = ["groceries", "transport", "dining"]
min_confidence = 0.6
"""


@pytest.mark.integration
def test_a_planted_jump_in_canary_disagreement_becomes_a_drift_alert(settings, tmp_path):
    from tests.helpers.kafka import publish, read_topic
    from tests.helpers.serving import cli
    from tests.worker import WorkerProcess, wait_for

    (settings.tasks_dir / "transactions.toml").write_text(TASK_TOML)
    servers = settings.kafka.servers
    rng = random.Random(4)
    now = datetime.now(timezone.utc).timestamp()
    before = [pair(i, disagree=rng.random() < 0.02, ts=rfc3339(now)) for i in range(1200)]
    after = [pair(i, disagree=rng.random() < 0.30, ts=rfc3339(now)) for i in range(1200, 1800)]
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        store = worker.store()
        asyncio.run(publish(servers, [orjson.dumps(p) for p in before] + [b"{not a pair"], topic="canary.pairs"))
        wait_for(lambda: store.scalar("SELECT sum(n) FROM drift_windows FINAL "
                                      "WHERE metric = 'canary_disagreement_rate'") == 1200, 60, what="1200 pairs")
        assert store.scalar("SELECT count() FROM drift_alerts") == 0
        asyncio.run(publish(servers, [orjson.dumps(p) for p in after], topic="canary.pairs"))
        rows = wait_for(lambda: store.rows("SELECT * FROM drift_alerts FINAL"), 60, what="a drift alert")
        assert [r["metric"] for r in rows] == ["canary_disagreement_rate"]
        ev = orjson.loads(rows[0]["evidence"])
        assert ev["candidate_version"] == "v2" and ev["serving_version"] == "v1"
        assert rows[0]["reference"] < 0.06 and rows[0]["value"] > 0.12
        res = cli(settings, "drift", "--task", "transactions")
        assert res.exit_code == 0 and "canary_disagreement_rate" in res.output, res.output
        assert rows[0]["alert_id"] in res.output, res.output
    alerts = asyncio.run(read_topic(servers, "drift.alerts", 1, timeout=10))
    assert [a["alert_id"] for a in alerts] == [rows[0]["alert_id"]]
    validate("drift.alerts.schema.json", alerts[0])
    dead = asyncio.run(read_topic(servers, "dead.letters", 1, timeout=5))
    assert [d["source_topic"] for d in dead] == ["canary.pairs"]
