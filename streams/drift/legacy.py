"""Reads drift_state snapshots of the older format (state format 1: ``pickle.dumps((1, TaskDrift))``
of the whole object graph, written until the versioned snapshot replaced it) and converts them
into today's ``TaskDrift.to_state()`` data, so an upgrade keeps the detectors' history.

The old classes are not needed: every ``streams.drift`` object in the pickle is read into a
plain ``_Old`` record (its pickled attributes) and converted field by field. river objects
inside it (ADWIN, PageHinkley, KSWIN) are unpickled as river objects, so the same river version
must be installed; if not, the caller gets ``StateError`` and starts fresh detectors.

What is kept: every monitor's gate (events seen, cooldown, hysteresis, recent values), ADWIN
detectors (the river object itself), KSWIN windows, label-mix counts, seen event ids, open
windows, unpublished alerts. Page-Hinkley detectors start a new calibration (``warmup`` values):
their running sums sat in river's private attributes, which this code does not read.
"""

from __future__ import annotations

import base64
import io
import pickle
from dataclasses import fields

import numpy as np

from streams.drift.config import DetectorConfig
from streams.drift.detectors import STATE_VERSION as DETECTOR_STATE_VERSION
from streams.drift.detectors import Adwin, Kswin, LabelMix, Monitor, PageHinkley, StateError

FORMAT = 1


class _Old:
    """A pickled ``streams.drift`` object of the old format: its class name and attributes."""

    cls = "?"

    def __setstate__(self, state) -> None:
        self.state = state

    def get(self, key, default=None):
        s = getattr(self, "state", None)
        return s.get(key, default) if isinstance(s, dict) else default


class _Reader(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module.startswith("streams.drift"):
            return type(name, (_Old,), {"cls": name})
        if module.split(".")[0] in ("river", "numpy", "collections", "builtins", "copyreg", "_codecs", "random"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected {module}.{name} in a drift state snapshot")


def convert_format1(blob: bytes) -> tuple[dict, list[str]]:
    """(today's TaskDrift state, notes on what was not kept) of a format-1 snapshot."""
    try:
        fmt, td = _Reader(io.BytesIO(blob)).load()
    except Exception as exc:
        raise StateError(f"drift state snapshot is neither JSON nor a readable format-{FORMAT} pickle "
                         f"({type(exc).__name__}: {exc})") from None
    if fmt != FORMAT or getattr(td, "cls", None) != "TaskDrift":
        raise StateError(f"drift state pickle format {fmt!r} is not {FORMAT}")
    notes = [f"converted from the pickle format ({FORMAT})"]
    monitors = {}
    for metric, mon in td.get("monitors", {}).items():
        try:
            monitors[metric] = _monitor(mon)
        except Exception as exc:  # this metric starts fresh; the rest is kept
            notes.append(f"{metric} starts fresh: its old detector state could not be converted ({exc})")
            continue
        if mon.get("det").cls == "PageHinkleyDetector":
            notes.append(f"{metric}: Page-Hinkley recalibrates over its warm-up")
    seen = {src: _seen(ids) for src, ids in td.get("seen", {}).items()}
    windows = {m: [[int(w), a.get("n", 0), a.get("total", 0.0), a.get("verdict", ""), a.get("alerts", 0),
                    dict(a.get("labels", {}))] for w, a in wins.items()]
               for m, wins in td.get("windows", {}).items()}
    from streams.drift.state import STATE_VERSION

    state = {"kind": "task_drift", "state_version": STATE_VERSION, "task": td.get("task"),
             "window_seconds": td.get("window_seconds"), "version": td.get("version", 0),
             "monitors": monitors, "seen": seen, "windows": windows, "unpublished": list(td.get("unpublished", []))}
    return state, notes


def _config(old: _Old) -> dict:
    s = old.state
    return {f.name: s.get(f.name, f.default) for f in fields(DetectorConfig)}


def _welford(old) -> list:
    n, mean, m2 = old.state
    return [n, mean, m2]


def _change(old) -> dict:
    s = old.state
    return {"before": s["before"], "after": s["after"], "statistic": s["statistic"], "window": s["window"],
            "detail": dict(s.get("detail", {})), "alert": s.get("alert", False), "suppressed": s.get("suppressed", ""),
            "at": s.get("at", 0)}


def _detector(old: _Old, cfg: DetectorConfig, labels) -> dict:
    if old.cls == "AdwinDetector":
        return Adwin.adopt(old.get("ad"), cfg.delta, cfg.clock).to_state()
    if old.cls == "PageHinkleyDetector":
        return PageHinkley.from_config(cfg).to_state()
    if old.cls == "KswinDetector":
        det = Kswin.from_config(cfg)
        k = old.get("k")
        det.window.extend(float(v) for v in k.window)  # public attributes of river's KSWIN
        det.p_value = float(k.p_value)
        det.i = int(old.get("i", 0))
        return det.to_state()
    if old.cls == "LabelMixDetector":
        det = LabelMix.from_config(cfg, tuple(old.get("labels", labels or ())))
        det.counts, det.n = [int(c) for c in old.get("counts")], int(old.get("n"))
        det.in_drift, det.clear = bool(old.get("in_drift")), int(old.get("clear"))
        det.last_stat, det.last_jsd = float(old.get("last_stat", 0.0)), float(old.get("last_jsd", 0.0))
        return det.to_state()
    raise StateError(f"unknown old detector {old.cls}")


def _monitor(old: _Old) -> dict:
    cfg_dict = _config(old.get("cfg"))
    cfg = DetectorConfig(**cfg_dict)
    pending = old.get("pending")
    if pending is not None:
        ch, due, level, n0, sum0 = pending
        pending = {"change": _change(ch), "due": due, "level": level, "n0": n0, "sum0": sum0}
    buf = [float(v) for v in old.get("buf")]
    if len(buf) != Monitor.RECENT:
        raise StateError(f"{len(buf)} recent values, not {Monitor.RECENT}")
    return {"kind": "monitor", "state_version": DETECTOR_STATE_VERSION, "config": cfg_dict,
            "detector": _detector(old.get("det"), cfg, old.get("labels")), "n": int(old.get("n")),
            "last_alert_n": old.get("last_alert_n"), "baseline": _welford(old.get("baseline")),
            "alerts": int(old.get("alerts", 0)), "recent": buf, "k": int(old.get("k")),
            # hysteresis: absent from monitors pickled before it existed (not in drift)
            "drift_sign": old.get("drift_sign", 0), "drift_from": old.get("drift_from", 0.0),
            "drift_level": old.get("drift_level", 0.0), "pending": pending, "due": old.get("due", -1)}


def _seen(old: _Old) -> dict:
    s = old.state
    used = np.frombuffer(s["ring"], dtype=np.uint64)
    return {"capacity": s["capacity"], "pos": s["pos"], "full": s["full"],
            "ring_u64le": base64.b64encode(used.astype("<u8").tobytes()).decode()}


