"""Detectors, the alert gate and per-task state on seeded synthetic streams with known change
points: an abrupt shift is detected, a gradual one is detected, a stationary stream is quiet."""

from __future__ import annotations

import base64
import io
import logging
import math
import pickle
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson
import pytest

from kernel.tasks import TaskConfigError, parse_task
from streams.drift import legacy
from streams.drift.config import _DEFAULTS, drift_config
from streams.drift.detectors import Monitor, StateError
from streams.drift.state import TaskDrift, oov_share
from streams.trigger.config import trigger_config

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
CHANGE = 30_000


def alerts_of(mon: Monitor, xs) -> list[int]:
    """Indices where the monitor alerted."""
    out, base = [], 0
    for s in range(0, len(xs), 5000):
        out += [base + i for i, ch in mon.update_many(xs[s:s + 5000]) if ch.alert]
        base += len(xs[s:s + 5000])
    return out


def bernoulli(rng, p_before, p_after, n_after=20_000, ramp=0):
    before = rng.random(CHANGE) < p_before
    if ramp:
        ps = np.concatenate([np.linspace(p_before, p_after, ramp), np.full(n_after, p_after)])
    else:
        ps = np.full(n_after, p_after)
    after = rng.random(len(ps)) < ps
    return np.concatenate([before, after]).astype(float).tolist()


@pytest.mark.parametrize("metric", ["off_schema_rate", "low_conf_rate", "oov_rate"])
def test_rate_metrics_abrupt_gradual_stationary(metric):
    rng = np.random.default_rng(11)
    cfg = _DEFAULTS[metric]
    hits = alerts_of(Monitor(cfg), bernoulli(rng, 0.01, 0.06))
    assert len(hits) == 1 and CHANGE <= hits[0] < CHANGE + 2000, hits
    hits = alerts_of(Monitor(cfg), bernoulli(rng, 0.01, 0.05, ramp=20_000))
    assert len(hits) == 1 and CHANGE < hits[0] < CHANGE + 25_000, hits  # one alert for the whole ramp
    assert alerts_of(Monitor(cfg), (rng.random(200_000) < 0.02).astype(float).tolist()) == []


def test_agreement_rate_alerts_on_drops_only():
    rng = np.random.default_rng(5)
    cfg = _DEFAULTS["agreement_rate"]
    hits = alerts_of(Monitor(cfg), bernoulli(rng, 0.95, 0.85))
    assert len(hits) == 1 and CHANGE <= hits[0] < CHANGE + 2000
    mon = Monitor(cfg)
    assert alerts_of(mon, bernoulli(rng, 0.85, 0.95)) == []  # agreement got better: no alert


@pytest.mark.parametrize("metric,base,sd,shift", [("confidence_mean", 0.9, 0.05, -0.05),
                                                   ("input_length", math.log1p(60), 0.4, 0.35)])
def test_mean_metrics_abrupt_gradual_stationary(metric, base, sd, shift):
    rng = np.random.default_rng(3)
    cfg = _DEFAULTS[metric]

    def stream(ramp=0):
        before = rng.normal(base, sd, CHANGE)
        means = np.concatenate([np.linspace(base, base + shift, ramp), np.full(20_000, base + shift)]) if ramp \
            else np.full(20_000, base + shift)
        return np.concatenate([before, rng.normal(means, sd)]).tolist()

    hits = alerts_of(Monitor(cfg), stream())
    assert len(hits) == 1 and CHANGE <= hits[0] < CHANGE + 1000, hits
    hits = alerts_of(Monitor(cfg), stream(ramp=20_000))
    assert 1 <= len(hits) <= 2 and CHANGE < hits[0] < CHANGE + 25_000, hits
    assert alerts_of(Monitor(cfg), rng.normal(base, sd, 200_000).tolist()) == []


LABELS = ("a", "b", "c", "d")
REF = {"a": 4000, "b": 3000, "c": 2000, "d": 1000}


def label_stream(rng, shares_after, ramp=0, n_after=20_000):
    p0 = np.array([0.4, 0.3, 0.2, 0.1])
    p1 = np.array(shares_after)
    out = list(rng.choice(LABELS, CHANGE, p=p0))
    for i in range(ramp):
        f = i / ramp
        out.append(rng.choice(LABELS, p=(1 - f) * p0 + f * p1))
    return out + list(rng.choice(LABELS, n_after, p=p1))


def test_label_mix_abrupt_gradual_stationary():
    rng = np.random.default_rng(7)
    cfg = _DEFAULTS["label_mix"]

    def mon():
        m = Monitor(cfg, LABELS)
        m.det.set_reference(REF)
        return m

    hits = alerts_of(mon(), label_stream(rng, [0.25, 0.3, 0.2, 0.25]))
    assert len(hits) == 1 and CHANGE <= hits[0] < CHANGE + 2 * cfg.window, hits
    hits = alerts_of(mon(), label_stream(rng, [0.2, 0.3, 0.2, 0.3], ramp=20_000))
    assert len(hits) == 1 and CHANGE < hits[0] < CHANGE + 20_000, hits
    assert alerts_of(mon(), list(rng.choice(LABELS, 200_000, p=[0.4, 0.3, 0.2, 0.1]))) == []
    m = Monitor(cfg, LABELS)  # no reference (pool too small): never alerts
    m.det.set_reference({"a": 5})
    assert alerts_of(m, label_stream(rng, [0.1, 0.1, 0.1, 0.7])) == []


def test_gate_cooldown_direction_and_min_effect():
    rng = np.random.default_rng(1)
    # two changes 5k events apart: the cooldown (20k) holds the second back
    xs = bernoulli(rng, 0.01, 0.10, n_after=5000) + (rng.random(20_000) < 0.30).astype(float).tolist()
    assert len(alerts_of(Monitor(_DEFAULTS["off_schema_rate"]), xs)) == 1
    no_cooldown = replace(_DEFAULTS["off_schema_rate"], cooldown_events=0)
    assert len(alerts_of(Monitor(no_cooldown), xs)) == 2
    down = bernoulli(rng, 0.10, 0.01)
    mon = Monitor(_DEFAULTS["off_schema_rate"])
    suppressed = [ch for x in down if (ch := mon.update(x)) is not None]
    assert suppressed and all(ch.suppressed == "direction" and not ch.alert for ch in suppressed)
    big_effect = replace(_DEFAULTS["off_schema_rate"], min_effect=0.2)
    assert alerts_of(Monitor(big_effect), bernoulli(rng, 0.01, 0.06)) == []


def test_alert_says_what_moved():
    rng = np.random.default_rng(2)
    task = parse_task({"name": "tx", "labels": list(LABELS)})
    td = TaskDrift(task, drift_config(task), window_seconds=60)
    xs = bernoulli(rng, 0.01, 0.10)
    items = [(f"e{i}", "off_schema" if x else "kept", 0.9, "a", 1_700_000_000 + i / 100) for i, x in enumerate(xs)]
    alerts = td.observe_curation_batch(items, NOW)
    assert [a["metric"] for a in alerts] == ["off_schema_rate"]
    a = alerts[0]
    assert a["detector"] == "adwin" and a["severity"] == "high"
    assert 0.005 < a["reference"] < 0.015 and 0.06 < a["value"] < 0.15
    ev = a["evidence"]
    assert ev["before"] == a["reference"] and ev["window_events"] > 0 and ev["event_id"].startswith("e")
    assert ev["config"]["delta"] == 1e-4
    rows = td.window_rows("2026-01-01 00:00:00.000000")
    off = [r for r in rows if r["metric"] == "off_schema_rate"]
    assert sum(r["n"] for r in off) == len(xs)
    assert sum(r["alerts"] for r in off) == 1 and any(r["verdict"] == "drift" for r in off)
    assert td.window_rows("2026-01-01 00:00:01.000000") == []  # nothing changed since


def test_restart_mid_stream_restores_state_and_skips_replays():
    """Snapshot after each batch; crash; the uncommitted batches are delivered again on top of
    the restored state: the same alerts as an uninterrupted run, none twice."""
    rng = np.random.default_rng(4)
    task = parse_task({"name": "tx", "labels": list(LABELS)})
    cfg = drift_config(task)
    xs = bernoulli(rng, 0.01, 0.10)
    items = [(f"e{i}", "off_schema" if x else "kept", 0.9, "a", 1_700_000_000 + i / 100) for i, x in enumerate(xs)]
    batches = [items[s:s + 1000] for s in range(0, len(items), 1000)]

    straight = TaskDrift(task, cfg)
    expected = [a["alert_id"] for b in batches for a in straight.observe_curation_batch(b, NOW)]
    assert len(expected) == 1

    td = TaskDrift(task, cfg)
    got: list[str] = []
    crash_at = CHANGE // 1000 + 1  # the alert is raised in a batch that is then replayed
    for b in batches[:crash_at + 1]:
        got += [a["alert_id"] for a in td.observe_curation_batch(b, NOW)]
        blob = td.dumps()  # the snapshot written before the batch's offsets are committed
    restored = TaskDrift.loads(blob, task, cfg, 60)
    assert restored.monitors["off_schema_rate"].n == td.monitors["off_schema_rate"].n
    for b in batches[crash_at - 2:]:  # the last three batches were never committed: replayed
        got += [a["alert_id"] for a in restored.observe_curation_batch(b, NOW)]
    assert got == expected
    assert restored.monitors["off_schema_rate"].n == len(items)  # each event counted once


def test_reconfigured_metric_restarts_its_detector_only():
    task = parse_task({"name": "tx", "labels": list(LABELS)})
    td = TaskDrift(task, drift_config(task))
    td.observe_curation_batch([(f"e{i}", "kept", 0.9, "a", 1e9) for i in range(100)], NOW)
    changed = parse_task({"name": "tx", "labels": list(LABELS), "drift": {"off_schema_rate": {"delta": 1e-3}}})
    again = TaskDrift.loads(td.dumps(), changed, drift_config(changed), 60)
    assert again.monitors["off_schema_rate"].n == 0 and again.monitors["low_conf_rate"].n == 100


def test_live_metrics_and_oov():
    vocab = frozenset({"uber", "trip", "tesco"})
    assert oov_share("UBER trip to Paris", vocab) == 0.5
    assert oov_share("   ", vocab) is None
    task = parse_task({"name": "tx", "labels": list(LABELS)})
    td = TaskDrift(task, drift_config(task))
    td.set_reference(REF, vocab)
    td.observe_live_batch([("r1", "uber trip", True, 1e9), ("r2", "paris", None, 1e9), ("r1", "dup", False, 1e9)], NOW)
    assert td.monitors["input_length"].n == 2 and td.monitors["oov_rate"].n == 2
    assert td.monitors["agreement_rate"].n == 1  # r2 not sampled, r1's replay skipped


def test_bad_config_names_file_key_and_fix():
    def cfg(drift=None, trigger=None):
        doc = {"name": "tx", "labels": ["a"]}
        if drift is not None:
            doc["drift"] = drift
        if trigger is not None:
            doc["trigger"] = trigger
        return parse_task(doc, "tasks/tx.toml")

    with pytest.raises(TaskConfigError, match=r"tasks/tx.toml: key 'drift.off_schema_rate.delta'.*\(0, 1\)"):
        drift_config(cfg({"off_schema_rate": {"delta": 2}}))
    with pytest.raises(TaskConfigError, match=r"drift.label_mix.detector.*chi2_jsd"):
        drift_config(cfg({"label_mix": {"detector": "adwin"}}))
    with pytest.raises(TaskConfigError, match=r"drift.oov_rate.dleta.*unknown key"):
        drift_config(cfg({"oov_rate": {"dleta": 1}}))
    with pytest.raises(TaskConfigError, match=r"drift.nope"):
        drift_config(cfg({"nope": {}}))
    with pytest.raises(TaskConfigError, match=r"trigger.cooldown.*duration"):
        trigger_config(cfg(trigger={"cooldown": "soon"}))
    with pytest.raises(TaskConfigError, match=r"trigger.metrics.*unknown metric 'latency'"):
        trigger_config(cfg(trigger={"metrics": ["latency"]}))
    t = trigger_config(cfg(trigger={"cooldown": "30m", "min_new_examples": 50}))
    assert t.cooldown_s == 1800 and t.min_new_examples == 50 and t.refresh_every == 5000
    d = drift_config(cfg({"input_length": {"detector": "kswin", "alpha": 1e-6}}))
    assert d.metrics["input_length"].detector == "kswin" and d.metrics["input_length"].alpha == 1e-6
    mon = Monitor(d.metrics["input_length"])
    assert Monitor.from_state(snapshot(mon), d.metrics["input_length"]).det.kind == "kswin"


# -- hysteresis: one change in the world, one alert ------------------------------------------------
def steps(rng, *segments):
    """Bernoulli values over (rate, events) segments; a (rate0, rate1, events) segment is a ramp."""
    ps = [np.linspace(s[0], s[1], s[2]) if len(s) == 3 else np.full(s[1], s[0]) for s in segments]
    return (rng.random(sum(len(p) for p in ps)) < np.concatenate(ps)).astype(float).tolist()


@pytest.mark.parametrize("seed", range(6))
def test_gradual_ramp_alerts_once(seed):
    """1% -> 5% over 20k events: one alert mid-ramp; the rest of the ramp stays within
    rearm_effect of the in-drift level (it used to re-alert after the cooldown)."""
    rng = np.random.default_rng(100 + seed)
    xs = steps(rng, (0.01, CHANGE), (0.01, 0.05, 20_000), (0.05, 40_000))
    mon = Monitor(_DEFAULTS["off_schema_rate"])
    hits = alerts_of(mon, xs)
    assert len(hits) == 1 and CHANGE < hits[0] < CHANGE + 20_000, hits
    assert mon.drift_sign == 1 and 0.005 < mon.drift_from < 0.015


@pytest.mark.parametrize("seed", range(3))
def test_further_step_realerts_once_settled(seed):
    """1% -> 5%, then 60k events later 5% -> 12%: two alerts, the second measured over
    rearm_events after its detection, from the in-drift level to the new one."""
    rng = np.random.default_rng(200 + seed)
    cfg = _DEFAULTS["off_schema_rate"]
    xs = steps(rng, (0.01, CHANGE), (0.05, 60_000), (0.12, 20_000))
    mon = Monitor(cfg)
    changes = []
    for s in range(0, len(xs), 5000):
        changes += [(s + i, ch) for i, ch in mon.update_many(xs[s:s + 5000])]
    alerts = [(i, ch) for i, ch in changes if ch.alert]
    assert [i for i, _ in alerts][0] < CHANGE + 2000
    assert len(alerts) == 2, [(i, ch.before, ch.after, ch.suppressed) for i, ch in changes]
    i, second = alerts[1]
    step = CHANGE + 60_000
    assert step + cfg.rearm_events <= i < step + cfg.rearm_events + 2000
    assert 0.04 < second.before < 0.06 and 0.10 < second.after < 0.14 and second.window == cfg.rearm_events
    assert second.detail["pre_alert_reference"] < 0.015 and second.detail["detected_at"] < second.at
    assert any(ch.suppressed == "rearm_pending" for _, ch in changes)
    # a rearm_effect larger than the step: held back, one alert
    big = replace(cfg, rearm_effect=0.1)
    assert len(alerts_of(Monitor(big), xs)) == 1


@pytest.mark.parametrize("seed", range(3))
def test_rise_return_rise_alerts_twice(seed):
    """Back at the pre-alert reference ends the drift: the next rise is a new change."""
    rng = np.random.default_rng(300 + seed)
    xs = steps(rng, (0.01, CHANGE), (0.05, 25_000), (0.01, 40_000), (0.05, 20_000))
    mon = Monitor(_DEFAULTS["off_schema_rate"])
    hits = alerts_of(mon, xs)
    assert len(hits) == 2, hits
    assert CHANGE <= hits[0] < CHANGE + 2000 and CHANGE + 65_000 <= hits[1] < CHANGE + 67_000, hits


def test_hysteresis_off_and_both_directions():
    rng = np.random.default_rng(9)
    xs = steps(rng, (0.01, CHANGE), (0.01, 0.05, 20_000), (0.05, 40_000))
    off = replace(_DEFAULTS["off_schema_rate"], rearm_effect=0.0, cooldown_events=0)
    assert len(alerts_of(Monitor(off), xs)) >= 2  # the pre-hysteresis behaviour: the ramp alerts again
    # direction "both": a return is itself a change (it alerts), and starts a new episode
    ys = rng.normal(0.9, 0.05, CHANGE).tolist() + rng.normal(0.8, 0.05, 30_000).tolist() \
        + rng.normal(0.9, 0.05, 30_000).tolist()
    mon = Monitor(_DEFAULTS["confidence_mean"])
    hits = alerts_of(mon, ys)
    assert len(hits) == 2 and hits[1] >= CHANGE + 30_000 and mon.drift_sign == 1, hits


def snapshot(obj) -> dict:
    """What drift_state stores of a detector or monitor: its to_state() through JSON."""
    return orjson.loads(orjson.dumps(obj.to_state()))


def test_hysteresis_state_snapshots_and_old_snapshots_load():
    rng = np.random.default_rng(4)
    cfg = _DEFAULTS["off_schema_rate"]
    xs = steps(rng, (0.01, CHANGE), (0.05, 60_000), (0.12, 20_000))
    straight = alerts_of(Monitor(cfg), xs)
    # snapshot while a further change is being measured (rearm_pending), restore, go on
    mon = Monitor(cfg)
    cut = None
    for s in range(0, len(xs), 500):
        mon.update_many(xs[s:s + 500])
        if mon.pending is not None:
            cut = s + 500
            break
    assert cut is not None and mon.due > mon.n
    again = Monitor.from_state(snapshot(mon), cfg)
    assert (again.drift_sign, again.drift_from, again.due) == (mon.drift_sign, mon.drift_from, mon.due)
    got = [h + cut for h in alerts_of(again, xs[cut:])]
    assert got == straight[1:] and len(straight) == 2
    # a monitor of the old pickle format from before hysteresis existed (no such attributes):
    # it loads, not in drift, and raises the alert an uninterrupted run raised
    fixture = legacy_fixture()
    _, old = legacy._Reader(io.BytesIO(base64.b64decode(fixture["state_base64"]))).load()
    old_mon = old.state["monitors"]["off_schema_rate"]
    for key in ("drift_sign", "drift_from", "drift_level", "pending", "due"):
        del old_mon.state[key]
    for key in ("rearm_effect", "rearm_events"):
        del old_mon.state["cfg"].state[key]
    loaded = Monitor.from_state(legacy._monitor(old_mon), cfg)
    assert loaded.drift_sign == 0 and loaded.pending is None and loaded.due == -1
    assert loaded.cfg == cfg and loaded.cfg.rearm == 2 * cfg.min_effect
    assert loaded.n == fixture["monitor_n_at_cut"]["off_schema_rate"]
    items = legacy_items()
    n0 = loaded.n
    off = [1.0 if it[1] == "off_schema" else 0.0 for it in items[n0:]]
    hits = [n0 + i + 1 for i in alerts_of(loaded, off)]  # as the monitor counts events (1-based)
    expected = [a["events_seen"] for a in fixture["alerts_after_cut"] if a["metric"] == "off_schema_rate"]
    assert hits == expected and len(expected) == 1


# -- snapshots: versioned plain data, restored detectors behave as uninterrupted ones -------------
FIXTURE = Path(__file__).parent / "data" / "drift_state_format1.json"


def legacy_fixture() -> dict:
    """A drift_state snapshot in the pickle format (state format 1) written by commit dcf7980's
    TaskDrift.dumps() after 20 batches of ``legacy_items`` (and 3 of ``legacy_live``), with the
    alerts that run raised after that point without interruption."""
    return orjson.loads(FIXTURE.read_bytes())


def legacy_items() -> list[tuple]:
    rng = np.random.default_rng(4)
    off = np.concatenate([rng.random(30_000) < 0.01, rng.random(20_000) < 0.10])
    conf = rng.normal(0.9, 0.05, 50_000).round(4)
    labs = rng.choice(LABELS, 50_000, p=[0.4, 0.3, 0.2, 0.1])
    return [(f"e{i}", "off_schema" if off[i] else "kept", float(conf[i]), str(labs[i]), 1_700_000_000 + i / 100)
            for i in range(50_000)]


def test_old_pickle_snapshot_converts_and_raises_the_uninterrupted_alerts():
    fixture = legacy_fixture()
    task = parse_task({"name": "tx", "labels": list(LABELS)})
    cfg = drift_config(task)
    td = TaskDrift.loads(base64.b64decode(fixture["state_base64"]), task, cfg, 60)
    td.set_reference(REF, frozenset({"w0", "w1", "shop"}))
    from streams.drift.config import CANARY_METRICS

    # the snapshot predates the canary metrics: they start fresh, every other metric is restored
    assert {m: mon.n for m, mon in td.monitors.items() if m not in CANARY_METRICS} == fixture["monitor_n_at_cut"]
    assert {m: td.monitors[m].n for m in CANARY_METRICS} == dict.fromkeys(CANARY_METRICS, 0)
    assert td.canary_versions is None
    notes = " ".join(td.restore_notes)
    assert "pickle format" in notes and "confidence_mean: Page-Hinkley recalibrates" in notes
    items, cut = legacy_items(), fixture["cut_batches"]
    batches = [items[s:s + 1000] for s in range(0, len(items), 1000)]
    # the last batch before the snapshot is delivered again: its events are known, skipped
    assert td.observe_curation_batch(batches[cut - 1], NOW) == []
    assert td.monitors["off_schema_rate"].n == fixture["monitor_n_at_cut"]["off_schema_rate"]
    got = [{"alert_id": a["alert_id"], "metric": a["metric"], "events_seen": a["evidence"]["events_seen"]}
           for b in batches[cut:] for a in td.observe_curation_batch(b, NOW)]
    assert got == fixture["alerts_after_cut"] and len(got) == 1
    # and it is written back in today's format
    assert td.dumps()[:1] == b"{" and TaskDrift.loads(td.dumps(), task, cfg, 60).monitors["off_schema_rate"].n == 50_000


def test_unreadable_snapshots_start_fresh_detectors_and_say_so(store):
    from streams.drift import store as dstore
    from streams.drift.config import stage_config
    from streams.drift.stage import DriftStage

    task = parse_task({"name": "tx", "labels": list(LABELS)})
    cfg = drift_config(task)
    td = TaskDrift(task, cfg)
    td.observe_curation_batch([(f"e{i}", "kept", 0.9, "a", 1e9) for i in range(300)], NOW)
    good = td.to_state()
    # a river upgrade that cannot read the pickled ADWIN: that metric alone starts fresh
    broken = orjson.loads(orjson.dumps(good))
    broken["monitors"]["off_schema_rate"]["detector"]["river_adwin_pickle"] = base64.b64encode(b"junk").decode()
    again = TaskDrift.from_state(broken, task, cfg, 60)
    assert again.monitors["off_schema_rate"].n == 0 and again.monitors["low_conf_rate"].n == 300
    assert any("off_schema_rate starts fresh" in n and "ADWIN" in n for n in again.restore_notes)
    # whole snapshots that cannot be used: fresh detectors and a warning naming why
    newer = dict(good, state_version=99)
    for blob, why in [(pickle.dumps((1, {"not": "a TaskDrift"})), "format"),
                      (pickle.dumps((7, None)), "format"),
                      (b"\x80\x04garbage", "neither JSON nor"),
                      (orjson.dumps(newer), "state_version 99")]:
        with pytest.raises(StateError, match=why):
            TaskDrift.loads(blob, task, cfg, 60)
        dstore.save_states(store, [("tx", 10**6, td.dumps())])
        dstore.save_states(store, [("tx", 10**7, blob)]) if blob[:1] == b"{" else store.insert(
            "drift_state", [{"task": "tx", "version": 10**7, "saved_at": "2026-01-01 00:00:00.000",
                             "state": base64.b64encode(blob).decode()}])
        stage = DriftStage({"tx": task}, stage_config({"tx": task}), store)
        stage.restore()
        assert all(m.n == 0 for m in stage.drift["tx"].monitors.values())
        warnings_ = [n for level, n in stage.notes if level == logging.WARNING]
        assert len(warnings_) == 1 and "unusable" in warnings_[0] and "starting fresh detectors" in warnings_[0]
        store.command("TRUNCATE TABLE drift_state")
    # the snapshot written today restores through the store
    dstore.save_states(store, [("tx", 5, td.dumps())])
    stage = DriftStage({"tx": task}, stage_config({"tx": task}), store)
    stage.restore()
    assert stage.drift["tx"].monitors["off_schema_rate"].n == 300


@pytest.mark.parametrize("metric", ["off_schema_rate", "confidence_mean", "input_length", "label_mix"])
def test_each_detector_kind_restores_to_the_uninterrupted_run(metric):
    """Snapshot mid-stream (JSON), restore, go on: the same changes at the same events."""
    rng = np.random.default_rng(21)
    cfg = _DEFAULTS[metric]
    if metric == "input_length":
        cfg = replace(cfg, detector="kswin", alpha=1e-5, window_size=300, stat_size=100, sample_every=10)
        xs = np.concatenate([rng.normal(4.1, 0.4, CHANGE), rng.normal(4.5, 0.4, 20_000)]).tolist()
    elif metric == "confidence_mean":
        xs = np.concatenate([rng.normal(0.9, 0.05, CHANGE), rng.normal(0.85, 0.05, 20_000)]).tolist()
    elif metric == "label_mix":
        xs = label_stream(rng, [0.25, 0.3, 0.2, 0.25])
    else:
        xs = bernoulli(rng, 0.01, 0.10)
    labels = LABELS if metric == "label_mix" else None

    def changes(mon, ys, base=0):
        out = []
        for s in range(0, len(ys), 5000):
            out += [(base + s + i, ch.before, ch.after, ch.alert, ch.suppressed) for i, ch in mon.update_many(ys[s:s + 5000])]
        return out

    def fresh():
        m = Monitor(cfg, labels)
        if labels:
            m.det.set_reference(REF)
        return m

    straight = changes(fresh(), xs)
    assert any(c[3] for c in straight)
    for cut in (CHANGE - 5000, CHANGE + 15_000):
        first = fresh()
        head = changes(first, xs[:cut])
        state = snapshot(first)
        assert state["state_version"] == 1 and state["detector"]["kind"] == cfg.detector
        again = Monitor.from_state(state, cfg, labels)
        if labels:
            again.det.set_reference(REF)
        assert head + changes(again, xs[cut:], cut) == straight


def test_page_hinkley_and_kswin_match_rivers():
    """The Page-Hinkley and KSWIN implemented here decide as river's do on the same values."""
    from river import drift as rdrift

    from streams.drift.detectors import Kswin, PageHinkley

    rng = np.random.default_rng(8)
    xs = np.concatenate([rng.normal(5, 2, 3000), rng.normal(6.6, 2, 3000), rng.normal(4, 2, 3000)]).tolist()
    for mode in ("up", "down", "both"):
        ours, theirs = PageHinkley(delta=0.25, threshold=20.0, warmup=200, mode=mode), None
        a, b = [], []
        for i, x in enumerate(xs):
            calibrated, mu, sd = ours.calibrated, ours.mu, ours.sd
            ours.update(x)
            a += [i] if ours.drift_detected else []
            if calibrated:  # river's on the same z-scores; a fresh one after each detection, as ours
                theirs = theirs or rdrift.PageHinkley(min_instances=1, delta=0.25, threshold=20.0, alpha=1.0,
                                                      mode=mode)
                theirs.update((x - mu) / sd)
                if theirs.drift_detected:
                    b.append(i)
                    theirs = None
        assert a == b and a, mode
    xs = np.concatenate([rng.normal(0, 1, 2000), rng.normal(1, 1, 2000)]).tolist()
    ours, theirs = Kswin(alpha=1e-4, window_size=100, stat_size=30, sample_every=1, seed=3), \
        rdrift.KSWIN(alpha=1e-4, window_size=100, stat_size=30, seed=3)
    a, b = [], []
    for i, x in enumerate(xs):
        ours.update(x)
        theirs.update(x)
        a += [i] if ours.drift_detected else []
        b += [i] if theirs.drift_detected else []
    assert a == b and a


def test_detectors_follow_one_protocol():
    from streams.drift.detectors import DETECTORS, make_detector

    assert set(DETECTORS) == {"adwin", "page_hinkley", "kswin", "chi2_jsd"}
    for name, cls in DETECTORS.items():
        cfg = next(c for c in _DEFAULTS.values() if c.detector == name) if name != "kswin" \
            else replace(_DEFAULTS["input_length"], detector="kswin")
        det = make_detector(cfg, LABELS)
        assert type(det) is cls and det.drift_detected is False and det.change is None
        with pytest.raises(AttributeError):
            det.drift_detected = True  # read-only
        state = snapshot(det)
        assert state["kind"] == name and state["state_version"] == 1
        assert type(cls.from_state(state)) is cls
        with pytest.raises(StateError, match="cannot restore"):
            cls.from_state(dict(state, kind="other"))
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        make_detector(replace(_DEFAULTS["oov_rate"], detector="nope"))


def test_detector_snapshot_format_is_pinned():
    """drift_state rows written by earlier versions must keep loading: the snapshot's keys, their
    order and their values are the format (a changed byte here is a format change)."""
    from streams.drift.detectors import Adwin, Kswin, LabelMix, PageHinkley

    ph = PageHinkley(warmup=2, threshold=50.0)
    for x in (1.0, 3.0, 2.0):
        ph.update(x)
    pinned = (b'{"kind":"page_hinkley","state_version":1,"params":{"delta":0.25,"threshold":50.0,"warmup":2,'
              b'"mode":"both"},"recent":[1.0,3.0,2.0],"calibration":[2,2.0,2.0],"calibrated":true,"mu":2.0,'
              b'"sd":1.4142135623730951,"test":[1,0.0,-0.25,0.25,-0.25,0.25]}')
    assert orjson.dumps(ph.to_state()) == pinned
    assert orjson.dumps(PageHinkley.from_state(orjson.loads(pinned)).to_state()) == pinned
    lm = LabelMix(("a", "b"), window=10)
    for x in "aab":
        lm.update(x)
    pinned = (b'{"kind":"chi2_jsd","state_version":1,"params":{"labels":["a","b"],"window":10,"alpha":1e-6,'
              b'"min_jsd":0.01,"clear_windows":3,"smoothing":0.5,"min_reference":200},"counts":[2,1],"n":3,'
              b'"in_drift":false,"clear":0,"last_stat":0.0,"last_jsd":0.0}')
    assert orjson.dumps(lm.to_state()) == pinned
    assert orjson.dumps(LabelMix.from_state(orjson.loads(pinned)).to_state()) == pinned
    ks = Kswin().to_state()
    assert list(ks) == ["kind", "state_version", "params", "i", "p_value", "window", "restart_due", "rng"]
    assert list(ks["params"].items()) == [("alpha", 1e-05), ("window_size", 300), ("stat_size", 100),
                                          ("sample_every", 10), ("seed", 7)]
    ad = Adwin().to_state()
    assert list(ad) == ["kind", "state_version", "params", "river_version", "river_adwin_pickle"]
    assert list(ad["params"].items()) == [("delta", 0.0001), ("clock", 32)]


def test_rearm_config_is_validated():
    def drift(d):
        return drift_config(parse_task({"name": "tx", "labels": ["a"], "drift": d}, "tasks/tx.toml"))

    d = drift({"off_schema_rate": {"rearm_effect": 0.05, "rearm_events": 500}})
    c = d.metrics["off_schema_rate"]
    assert c.rearm == 0.05 and c.rearm_events == 500 and d.metrics["oov_rate"].rearm == 0.02
    assert drift({"agreement_rate": {"min_effect": 0.02}}).metrics["agreement_rate"].rearm == 0.04
    with pytest.raises(TaskConfigError, match=r"tasks/tx.toml: key 'drift.off_schema_rate.rearm_effect'.*from 0"):
        drift({"off_schema_rate": {"rearm_effect": -0.01}})
    with pytest.raises(TaskConfigError, match=r"drift.oov_rate.rearm_events.*integer"):
        drift({"oov_rate": {"rearm_events": "2k"}})
    with pytest.raises(TaskConfigError, match=r"drift.label_mix.rearm_effect.*clear_windows"):
        drift({"label_mix": {"rearm_effect": 0.1}})


def test_label_mix_on_a_young_task_does_not_alarm_on_the_references_own_noise():
    """A reference of 250 examples over 12 labels is itself noisy: the one-sample test (shares
    taken as exact) alarms on stationary traffic; the two-sample test does not, and still sees a
    large real shift."""
    from streams.drift.detectors import chi2_test, chi2_two_sample, js_divergence

    labels = tuple(f"l{i}" for i in range(12))
    cfg = _DEFAULTS["label_mix"]
    one_sample_alarms = two_sample_alarms = 0
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        truth = rng.dirichlet(np.ones(len(labels)))
        ref = dict(zip(labels, rng.multinomial(250, truth).tolist()))
        m = Monitor(cfg, labels)
        m.det.set_reference(ref)
        stationary = list(rng.choice(labels, 150_000, p=truth))
        two_sample_alarms += len(alerts_of(m, stationary))
        ref_counts = np.array([ref[lab] for lab in labels], dtype=float)
        shares = (ref_counts + 0.5) / (ref_counts + 0.5).sum()
        for w in range(0, len(stationary), cfg.window):
            counts = np.array([0.0] * len(labels))
            for lab in stationary[w:w + cfg.window]:
                counts[labels.index(lab)] += 1
            if chi2_test(counts, shares)[1] < cfg.alpha and js_divergence(counts + 1e-12, shares) >= cfg.min_jsd:
                one_sample_alarms += 1
        assert chi2_two_sample(counts, ref_counts)[1] > cfg.alpha
    assert two_sample_alarms == 0
    assert one_sample_alarms > 0   # the old test's false alarms, on the same streams
    # a real shift: half the mass onto two labels
    rng = np.random.default_rng(9)
    truth = np.full(len(labels), 1 / len(labels))
    m = Monitor(cfg, labels)
    m.det.set_reference(dict(zip(labels, rng.multinomial(250, truth).tolist())))
    shifted = truth * 0.5
    shifted[:2] += 0.25
    assert len(alerts_of(m, list(rng.choice(labels, 5_000, p=shifted)))) == 1
