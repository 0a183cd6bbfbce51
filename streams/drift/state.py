"""Per-task drift state: monitors, open windows, recently seen event ids, unpublished alerts.

Pure (no I/O). ``TaskDrift.dumps()`` writes a versioned snapshot (JSON of ``to_state()``:
plain data, ``state_version`` 2) into ``drift_state`` after every batch, before the batch's
offsets are committed, so after a crash the restored state already holds every committed
event; the ids of the last ``seen_capacity`` events per source are part of it, so events
replayed after the crash are recognised and skipped (the statistics count each event once).
The training reference (label shares, vocabulary) is not in it: it is re-read from the
warehouse. Snapshots of the older pickle format (state format 1) are converted on load by
``streams.drift.legacy``; one that cannot be read raises ``StateError`` and the caller starts
fresh detectors, saying so.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import xxhash

from kernel.tasks import TaskConfig
from schemas.events import SCHEMA_VERSION
from schemas.timefmt import ch_time, rfc3339
from streams.canary.pairs import agree
from streams.drift.config import CANARY_METRICS, DriftConfig
from streams.drift.detectors import Change, Monitor, StateError, js_divergence, severity

STATE_VERSION = 2  # of TaskDrift.to_state(); 1 was the pickle of the whole object graph
_TOKEN = re.compile(r"\w+")
_VERDICT_RANK = {"no_reference": 0, "warmup": 1, "ok": 2, "suppressed": 3, "drift": 4}


def tokens(text: str) -> list[str]:
    """The tokenisation shared by the vocabulary (training pool) and live inputs."""
    return _TOKEN.findall(text.lower())


def oov_share(text: str, vocab: frozenset[str]) -> float | None:
    toks = tokens(text)
    if not toks:
        return None
    return sum(1 for t in toks if t not in vocab) / len(toks)




class SeenIds:
    """The last ``capacity`` event-id hashes (a ring and a set)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.ring = np.zeros(capacity, dtype=np.uint64)
        self.pos = 0
        self.full = False
        self.set: set[int] = set()

    def add(self, event_id: str) -> bool:
        """True if new (and remembers it), False if seen among the last ``capacity``."""
        h = xxhash.xxh3_64_intdigest(event_id.encode())
        if h in self.set:
            return False
        if self.full:
            self.set.discard(int(self.ring[self.pos]))
        self.ring[self.pos] = h
        self.set.add(h)
        self.pos += 1
        if self.pos == self.capacity:
            self.pos, self.full = 0, True
        return True

    def to_state(self) -> dict:
        """The ring as base64 of little-endian uint64 (xxh3-64 of the ids), oldest slot first."""
        used = self.ring if self.full else self.ring[:self.pos]
        return {"capacity": self.capacity, "pos": self.pos, "full": self.full,
                "ring_u64le": base64.b64encode(used.astype("<u8").tobytes()).decode()}

    @classmethod
    def from_state(cls, s: dict, capacity: int | None = None) -> "SeenIds":
        """Restore; with a different ``capacity`` the newest ids that fit are kept."""
        used = np.frombuffer(base64.b64decode(s["ring_u64le"]), dtype="<u8").astype(np.uint64)
        return cls.from_ring(used, int(s["pos"]), bool(s["full"]), int(s["capacity"]), capacity)

    @classmethod
    def from_ring(cls, used: np.ndarray, pos: int, full: bool, saved_capacity: int,
                  capacity: int | None = None) -> "SeenIds":
        capacity = capacity or saved_capacity
        if len(used) != (saved_capacity if full else pos) or not 0 <= pos <= saved_capacity:
            raise StateError(f"seen-ids snapshot is inconsistent ({len(used)} ids, pos {pos}, "
                             f"capacity {saved_capacity})")
        out = cls(capacity)
        if capacity == saved_capacity:  # the same ring
            out.ring[:len(used)] = used
            out.pos, out.full = pos, full
            out.set = set(int(x) for x in used)
            return out
        ordered = np.concatenate([used[pos:], used[:pos]]) if full else used  # oldest first
        for h in ordered[-capacity:]:
            h = int(h)
            if h in out.set:
                continue
            if out.full:
                out.set.discard(int(out.ring[out.pos]))
            out.ring[out.pos] = h
            out.set.add(h)
            out.pos += 1
            if out.pos == capacity:
                out.pos, out.full = 0, True
        return out


@dataclass
class WindowAcc:
    n: int = 0
    total: float = 0.0
    verdict: str = ""
    alerts: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    dirty: bool = True

    def note(self, ch: Change) -> None:
        v = "drift" if ch.alert else "suppressed"
        if _VERDICT_RANK[v] > _VERDICT_RANK.get(self.verdict, -1):
            self.verdict = v
        self.alerts += ch.alert


class TaskDrift:
    def __init__(self, task: TaskConfig, cfg: DriftConfig, window_seconds: int = 60,
                 seen_capacity: int = 32768) -> None:
        self.task = task.name
        self.labels = task.labels
        self.cfg = cfg
        self.window_seconds = window_seconds
        self.monitors: dict[str, Monitor] = {}
        self.seen = {"curation": SeenIds(seen_capacity), "live": SeenIds(seen_capacity),
                     "canary": SeenIds(seen_capacity)}
        # the (serving, candidate) versions the canary metrics are of; another pair restarts them
        self.canary_versions: tuple[str, str] | None = None
        self.windows: dict[str, dict[int, WindowAcc]] = {}
        self.unpublished: list[dict] = []  # alerts made but not yet sent and stored
        self.version = 0
        self.vocab: frozenset[str] | None = None
        self.label_reference: dict[str, int] = {}
        self.restore_notes: list[str] = []  # what a restore could not keep (metrics started fresh)
        self.reconfigure(cfg)

    # -- configuration and persistence ---------------------------------------------------
    def reconfigure(self, cfg: DriftConfig) -> None:
        """Apply the current config: a metric whose detector settings changed restarts."""
        self.cfg = cfg
        from streams.drift.config import METRICS

        for metric in METRICS:
            c = cfg.active(metric)
            if c is None:
                self.monitors.pop(metric, None)
            elif metric not in self.monitors or self.monitors[metric].cfg != c:
                self.monitors[metric] = Monitor(c, self.labels)
                if metric == "label_mix":
                    self.monitors[metric].det.set_reference(self.label_reference)
            self.windows.setdefault(metric, {})

    def to_state(self) -> dict:
        """Plain JSON-able data (``state_version`` 2); the training reference is not part of it."""
        return {
            "kind": "task_drift", "state_version": STATE_VERSION, "task": self.task,
            "window_seconds": self.window_seconds, "version": self.version,
            "monitors": {m: mon.to_state() for m, mon in self.monitors.items()},
            "seen": {src: ids.to_state() for src, ids in self.seen.items()},
            "windows": {m: [[w, a.n, a.total, a.verdict, a.alerts, a.labels] for w, a in wins.items()]
                        for m, wins in self.windows.items()},
            "unpublished": list(self.unpublished),
            "canary_versions": list(self.canary_versions) if self.canary_versions else None,
        }

    @classmethod
    def from_state(cls, state: dict, task: TaskConfig, cfg: DriftConfig, window_seconds: int,
                   seen_capacity: int = 32768) -> "TaskDrift":
        """Restore under today's task and config: a metric whose detector settings changed, or
        whose detector snapshot cannot be read, starts fresh (listed in ``restore_notes``);
        windows are kept only if ``window_seconds`` is unchanged."""
        if not isinstance(state, dict) or state.get("kind") != "task_drift":
            raise StateError("not a drift state snapshot")
        if state.get("state_version") != STATE_VERSION:
            raise StateError(f"drift state_version {state.get('state_version')!r} is not {STATE_VERSION} "
                             "(written by another flywheel version)")
        if state["task"] != task.name:
            raise StateError(f"the snapshot is of task {state['task']!r}, not {task.name!r}")
        td = cls(task, cfg, window_seconds, seen_capacity)
        td.version = int(state.get("version", 0))
        for metric, ms in state["monitors"].items():
            c = cfg.active(metric)
            if c is None:
                continue
            try:
                mon = Monitor.from_state(ms, c, td.labels)
            except (StateError, KeyError, TypeError, ValueError) as exc:
                td.restore_notes.append(f"{metric} starts fresh: {exc}")
                continue
            td.monitors[metric] = mon
            if metric == "label_mix":
                mon.det.set_reference(td.label_reference)
        for src, s in state["seen"].items():
            if src in td.seen:
                td.seen[src] = SeenIds.from_state(s, seen_capacity)
        if state["window_seconds"] == window_seconds:
            for metric, rows in state["windows"].items():
                if metric in td.windows:
                    td.windows[metric] = {int(w): WindowAcc(n, total, verdict, alerts, dict(labels), True)
                                          for w, n, total, verdict, alerts, labels in rows}
        td.unpublished = list(state["unpublished"])
        cv = state.get("canary_versions")  # absent in snapshots written before the canary metrics
        td.canary_versions = (str(cv[0]), str(cv[1])) if cv else None
        return td

    def dumps(self) -> bytes:
        """The snapshot written to drift_state: JSON of ``to_state()``."""
        return orjson.dumps(self.to_state())

    @classmethod
    def loads(cls, blob: bytes, task: TaskConfig, cfg: DriftConfig, window_seconds: int,
              seen_capacity: int = 32768) -> "TaskDrift":
        """A snapshot from drift_state: the JSON of ``dumps()``, or the older pickle format
        (converted). Raises ``StateError`` naming the problem when it cannot be used."""
        if blob[:1] == b"{":
            try:
                state = orjson.loads(blob)
            except orjson.JSONDecodeError as exc:
                raise StateError(f"drift state snapshot is not valid JSON ({exc})") from None
            return cls.from_state(state, task, cfg, window_seconds, seen_capacity)
        from streams.drift.legacy import convert_format1

        state, notes = convert_format1(blob)
        td = cls.from_state(state, task, cfg, window_seconds, seen_capacity)
        td.restore_notes[:0] = notes
        return td

    # -- the training reference ----------------------------------------------------------
    def set_reference(self, label_counts: dict[str, int], vocab: frozenset[str] | None) -> None:
        self.label_reference = dict(label_counts)
        self.vocab = vocab
        mon = self.monitors.get("label_mix")
        if mon is not None:
            mon.det.set_reference(self.label_reference)

    # -- events ----------------------------------------------------------------------------
    def observe_curation(self, event_id: str, outcome: str, confidence: float, label: str,
                         ts: float, now: datetime) -> list[dict]:
        """One curated teacher log (not invalid). Returns the alerts it raised."""
        return self.observe_curation_batch([(event_id, outcome, confidence, label, ts)], now)

    def observe_curation_batch(self, items: list[tuple[str, str, float, str, float]], now: datetime) -> list[dict]:
        """Curated teacher logs (id, outcome, confidence, label, ts), in order. Events seen
        before (a replay) are skipped. Returns the alerts raised."""
        add = self.seen["curation"].add
        items = [it for it in items if add(it[0])]
        if not items:
            return []
        ws = self.window_seconds
        out: list[dict] = []
        mons = self.monitors
        if "off_schema_rate" in mons:
            self._feed_many("off_schema_rate", [(1.0 if it[1] == "off_schema" else 0.0) for it in items],
                            items, ws, now, out)
        valid = [it for it in items if it[1] != "off_schema"]
        if "low_conf_rate" in mons:
            self._feed_many("low_conf_rate", [(1.0 if it[1] == "low_conf" else 0.0) for it in valid],
                            valid, ws, now, out)
        if "confidence_mean" in mons:
            self._feed_many("confidence_mean", [it[2] for it in valid], valid, ws, now, out)
        if "label_mix" in mons:
            self._feed_many("label_mix", [it[3] for it in valid], valid, ws, now, out)
        return out

    def observe_live(self, event_id: str, text: str, agree: bool | None, ts: float, now: datetime) -> list[dict]:
        """One live request. ``agree``: served answer equals the teacher's (None: not sampled)."""
        return self.observe_live_batch([(event_id, text, agree, ts)], now)

    def observe_live_batch(self, items: list[tuple[str, str, bool | None, float]], now: datetime) -> list[dict]:
        add = self.seen["live"].add
        items = [it for it in items if add(it[0])]
        if not items:
            return []
        ws = self.window_seconds
        out: list[dict] = []
        mons = self.monitors
        if "input_length" in mons:
            lengths = [float(len(it[1])) for it in items]
            self._feed_many("input_length", [math.log1p(n) for n in lengths], items, ws, now, out, raw=lengths)
        if "oov_rate" in mons and self.vocab is not None:
            vocab = self.vocab
            shares = [oov_share(it[1], vocab) for it in items]
            keep = [i for i, v in enumerate(shares) if v is not None]
            self._feed_many("oov_rate", [shares[i] for i in keep], [items[i] for i in keep], ws, now, out)
        if "agreement_rate" in mons:
            sampled = [it for it in items if it[2] is not None]
            self._feed_many("agreement_rate", [1.0 if it[2] else 0.0 for it in sampled], sampled, ws, now, out)
        return out

    def observe_canary_batch(self, items: list[tuple[str, str, str, bool, bool, bool | None, float]],
                             now: datetime) -> list[dict]:
        """Canary pairs (event id, serving version, candidate version, disagree, error, wrong
        or None without a teacher answer, ts), in order; see ``canary_values``. The canary
        metrics are of one (serving, candidate) pair of versions: a pair of other versions
        restarts their detectors (a new candidate is a new stream, not a change of the old one)
        -- the alerts and windows name the versions. Replayed pairs are skipped."""
        add = self.seen["canary"].add
        items = [it for it in items if add(it[0])]
        out: list[dict] = []
        start = 0
        while start < len(items):   # runs of one pair of versions
            key = (items[start][1], items[start][2])
            end = start
            while end < len(items) and (items[end][1], items[end][2]) == key:
                end += 1
            if key != self.canary_versions:
                self._restart_canary(key)
            run = items[start:end]
            ws = self.window_seconds
            mons = self.monitors
            if "canary_disagreement_rate" in mons:
                self._feed_many("canary_disagreement_rate", [float(it[3]) for it in run], run, ws, now, out)
            if "canary_error_rate" in mons:
                self._feed_many("canary_error_rate", [float(it[4]) for it in run], run, ws, now, out)
            if "canary_wrong_rate" in mons:
                taught = [it for it in run if it[5] is not None]
                self._feed_many("canary_wrong_rate", [float(it[5]) for it in taught], taught, ws, now, out)
            start = end
        return out

    def _restart_canary(self, key: tuple[str, str]) -> None:
        for metric in CANARY_METRICS:
            c = self.cfg.active(metric)
            if c is not None:
                self.monitors[metric] = Monitor(c, self.labels)
        self.canary_versions = key

    def _feed_many(self, metric: str, xs: list, items: list, ws: int, now: datetime, out: list,
                   raw: list[float] | None = None) -> None:
        """Feed one metric's values (items[i] is the event of xs[i]: id first, ts last)."""
        if not xs:
            return
        mon = self.monitors[metric]
        changes = mon.update_many(xs)
        wins = self.windows[metric]
        vals = raw if raw is not None else xs
        is_mix = metric == "label_mix"
        last_w, acc = None, None
        for i, it in enumerate(items):
            w = int(it[-1] // ws) * ws
            if w != last_w:
                acc = wins.get(w)
                if acc is None:
                    acc = wins[w] = WindowAcc()
                acc.dirty = True
                last_w = w
            acc.n += 1
            if is_mix:
                acc.labels[vals[i]] = acc.labels.get(vals[i], 0) + 1
            else:
                acc.total += vals[i]
        for i, ch in changes:
            it = items[i]
            w = int(it[-1] // ws) * ws
            wins[w].note(ch)
            if ch.alert:
                out.append(self._alert(metric, mon, ch, it[0], it[-1], w, now))

    def _alert(self, metric: str, mon: Monitor, ch: Change, event_id: str, ts: float, w: int,
               now: datetime) -> dict:
        before, after = ch.before, ch.after
        if metric == "input_length":  # detected on log1p(chars); report characters
            before, after = math.expm1(before), math.expm1(after)
        h = xxhash.xxh3_128()
        for part in (self.task, metric, mon.cfg.detector, str(ch.at), event_id):
            h.update(part.encode())
            h.update(b"\0")
        alert = {
            "alert_id": f"da-{h.hexdigest()[:24]}",
            "task": self.task,
            "metric": metric,
            "detector": mon.cfg.detector,
            "detected_at": rfc3339(now),
            "value": float(after),
            "reference": float(before),
            "severity": severity(metric, ch),
            "evidence": {
                "before": float(before), "after": float(after), "statistic": float(ch.statistic),
                "window_events": int(ch.window), "events_seen": ch.at, "event_id": event_id,
                "event_ts": rfc3339(ts, "auto"),
                "window_start": rfc3339(w, "auto"),
                "window_seconds": self.window_seconds,
                "config": {k: getattr(mon.cfg, k) for k in type(mon.det).config_keys},
                **{k: v for k, v in ch.detail.items()},
                **self._versions(metric),
            },
            "schema_version": SCHEMA_VERSION,
        }
        if metric == "label_mix":
            alert["reference"] = 0.0  # the divergence of the reference from itself
        self.unpublished.append(alert)
        return alert

    def _versions(self, metric: str) -> dict[str, str]:
        """The versions a canary metric is of (for alerts and windows); nothing for the others."""
        if not metric.startswith("canary_") or self.canary_versions is None:
            return {}
        return {"serving_version": self.canary_versions[0], "candidate_version": self.canary_versions[1]}

    # -- windows to rows -------------------------------------------------------------------
    def window_rows(self, updated_at: str, keep_windows: int = 3) -> list[dict]:
        """Rows of drift_windows for every window changed since the last call; forgets old
        windows (older than ``keep_windows`` windows before the newest)."""
        rows = []
        for metric, wins in self.windows.items():
            mon = self.monitors.get(metric)
            if mon is None:
                continue
            for w, acc in wins.items():
                if not acc.dirty:
                    continue
                acc.dirty = False
                rows.append(self._row(metric, mon, w, acc, updated_at))
            if wins:
                newest = max(wins)
                for w in [w for w in wins if w < newest - keep_windows * self.window_seconds and not wins[w].dirty]:
                    del wins[w]
        return rows

    def _row(self, metric: str, mon: Monitor, w: int, acc: WindowAcc, updated_at: str) -> dict:
        detail: dict[str, Any] = {}
        verdict = acc.verdict
        if metric == "label_mix":
            det = mon.det
            reference: float | None = mon.cfg.min_jsd
            if det.ref is not None and acc.n:
                counts = np.array([acc.labels.get(lab, 0) for lab in det.labels], dtype=float)
                value = js_divergence(counts + 1e-12, det.ref)
                detail["shares"] = {lab: round(acc.labels.get(lab, 0) / acc.n, 4) for lab in det.labels}
            else:
                value = 0.0
                verdict = verdict or "no_reference"
            statistic: float | None = det.last_stat
        else:
            value = acc.total / acc.n if acc.n else 0.0
            reference = mon.reference
            if reference is not None and metric == "input_length":
                reference = math.expm1(reference)
            statistic = mon.statistic()
        if not verdict:
            verdict = "warmup" if mon.n < mon.cfg.warmup else "ok"
        detail.update(self._versions(metric))
        return {
            "task": self.task, "metric": metric, "detector": mon.cfg.detector,
            "window_start": ch_time(w, 0),
            "window_seconds": self.window_seconds, "n": acc.n, "value": float(value),
            "reference": None if reference is None else float(reference),
            "statistic": None if statistic is None or not math.isfinite(statistic) else float(statistic),
            "verdict": verdict, "alerts": acc.alerts,
            "detail": _json(detail), "updated_at": updated_at,
        }


def canary_values(pair: dict) -> tuple[bool, bool, bool | None]:
    """The canary metrics' values of one canary.pairs message: (disagree, error, wrong).
    disagree: the candidate's answer differs from the serving version's, or the candidate
    failed (the judge counts it so too); error: the candidate call failed or timed out; wrong:
    the candidate's answer differs from the teacher's (a failure is wrong), None without a
    teacher answer."""
    error = bool(pair.get("error"))
    disagree = error or pair.get("agree") is False
    teacher, cand = pair.get("teacher_answer"), pair.get("candidate_answer")
    if teacher is None:
        wrong = None
    elif error or cand is None:
        wrong = True
    else:
        wrong = not agree(cand, teacher)  # compared as the canary compares answers
    return disagree, error, wrong


def _json(obj) -> str:
    import orjson

    return orjson.dumps(obj).decode()
