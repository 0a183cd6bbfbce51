"""Drift detectors and the alert gate: pure, per-event, picklable (their state is snapshotted).

A detector takes one value at a time and returns a ``Change`` when it decides the stream's
distribution moved: the value before and after, its own statistic and the window it judged.
``Monitor`` wraps a detector with the policy that turns changes into alerts: a warm-up, the
direction that matters, a minimum effect, a cooldown in events, and hysteresis (after an alert,
a further move re-alerts only when it settles ``rearm_effect`` beyond the in-drift level, or
after a return towards the pre-alert reference) so that one change in the world produces one
alert.

| detector       | used for                         | per event                                    |
| -------------- | -------------------------------- | -------------------------------------------- |
| ``adwin``        | rates (0/1 or shares in [0, 1])  | river ADWIN, ~0.4 µs                          |
| ``page_hinkley`` | means (confidence, log length)   | river PageHinkley on values standardised by a warm-up, ~1 µs |
| ``kswin``        | whole distributions              | river KSWIN on every ``sample_every``-th value (147 µs a test) |
| ``chi2_jsd``     | label mix vs training reference  | a count; one chi-square + Jensen-Shannon test per ``window`` labels |
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from river import drift as rdrift

from streams.drift.config import RATE_METRICS, DetectorConfig


@dataclass
class Change:
    before: float
    after: float
    statistic: float
    window: int
    detail: dict[str, Any] = field(default_factory=dict)
    alert: bool = False
    suppressed: str = ""  # why the gate held it back
    at: int = 0  # the monitor's event count when it fired


class Welford:
    __slots__ = ("n", "mean", "m2")

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: float) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)

    @property
    def sd(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0

    def __getstate__(self):
        return (self.n, self.mean, self.m2)

    def __setstate__(self, s):
        self.n, self.mean, self.m2 = s


class AdwinDetector:
    name = "adwin"

    def __init__(self, cfg: DetectorConfig) -> None:
        self.cfg = cfg
        self.ad = rdrift.ADWIN(delta=cfg.delta, clock=cfg.clock)

    def update(self, x: float) -> Change | None:
        ad = self.ad
        w0 = ad.width
        total0 = ad.total
        ad.update(x)
        if not ad.drift_detected:
            return None
        w1 = ad.width
        after = ad.estimation
        dropped = w0 + 1 - w1
        before = (total0 + x - ad.total) / dropped if dropped > 0 else after
        return Change(before, after, abs(after - before), w1, {"dropped": dropped, "kept": w1})

    def statistic(self) -> float:
        return float(self.ad.width)


class PageHinkleyDetector:
    """Page-Hinkley on z-scores: the first ``warmup`` values calibrate mean and sd, so delta
    and threshold are in standard deviations whatever the metric's scale. Re-calibrates after
    each detection (the new regime becomes the reference)."""

    name = "page_hinkley"
    RECENT = 100

    def __init__(self, cfg: DetectorConfig) -> None:
        self.cfg = cfg
        self.mode = cfg.direction
        self.recent: deque[float] = deque(maxlen=self.RECENT)
        self._restart()

    def _restart(self) -> None:
        self.calib = Welford()
        self.ph: rdrift.PageHinkley | None = None
        self.mu = 0.0
        self.sd = 1.0

    def update(self, x: float) -> Change | None:
        self.recent.append(x)
        if self.ph is None:
            self.calib.add(x)
            if self.calib.n >= max(self.cfg.warmup, 2):
                self.mu = self.calib.mean
                self.sd = max(self.calib.sd, 1e-9 + abs(self.mu) * 1e-6)
                self.ph = rdrift.PageHinkley(min_instances=1, delta=self.cfg.delta,
                                             threshold=self.cfg.threshold, alpha=1.0, mode=self.mode)
            return None
        ph = self.ph
        ph.update((x - self.mu) / self.sd)
        if not ph.drift_detected:
            return None
        stat = self.statistic()
        after = sum(self.recent) / len(self.recent)
        change = Change(self.mu, after, stat, self.calib.n + ph._x_mean.n,
                        {"sd": self.sd, "shift_sd": (after - self.mu) / self.sd})
        self._restart()
        self.recent.clear()
        return change

    def statistic(self) -> float:
        ph = self.ph
        if ph is None:
            return 0.0
        return float(max(ph._sum_increase - ph._min_increase, ph._max_decrease - ph._sum_decrease, 0.0))


class KswinDetector:
    name = "kswin"

    def __init__(self, cfg: DetectorConfig) -> None:
        self.cfg = cfg
        self.k = rdrift.KSWIN(alpha=cfg.alpha, window_size=cfg.window_size, stat_size=cfg.stat_size, seed=7)
        self.i = 0

    def update(self, x: float) -> Change | None:
        self.i += 1
        if self.i % self.cfg.sample_every:
            return None
        k = self.k
        older = list(k.window)
        k.update(x)
        if not k.drift_detected:
            return None
        old = older[: len(older) - self.cfg.stat_size + 1] or older
        recent = list(k.window)
        return Change(sum(old) / len(old), sum(recent) / len(recent), float(k.p_value),
                      len(older) + 1, {"p_value": float(k.p_value), "sample_every": self.cfg.sample_every})

    def statistic(self) -> float:
        return float(self.k.p_value)


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0 = same, 1 = disjoint)."""
    p = p / p.sum()
    q = q / q.sum()
    m = (p + q) / 2

    def kl(a, b):
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    return max(0.0, (kl(p, m) + kl(q, m)) / 2)


def chi2_test(counts: np.ndarray, ref_shares: np.ndarray) -> tuple[float, float]:
    """(statistic, p-value) of observed counts against expected shares."""
    from scipy.stats import chi2

    n = counts.sum()
    expected = ref_shares * n
    stat = float(np.sum((counts - expected) ** 2 / expected))
    return stat, float(chi2.sf(stat, len(counts) - 1))


class LabelMixDetector:
    """Every ``window`` labels, test their mix against the training reference: a change needs
    both a chi-square p-value below ``alpha`` (it is not noise) and a Jensen-Shannon divergence
    of at least ``min_jsd`` (it is big enough to matter). Hysteresis: after a change, it stays
    in drift (no new change) until ``clear_windows`` windows in a row pass."""

    name = "chi2_jsd"

    def __init__(self, cfg: DetectorConfig, labels: tuple[str, ...]) -> None:
        self.cfg = cfg
        self.labels = tuple(labels)
        self.index = {lab: i for i, lab in enumerate(self.labels)}
        self.counts = [0] * len(self.labels)
        self.n = 0
        self.in_drift = False
        self.clear = 0
        self.last_stat = 0.0
        self.last_jsd = 0.0
        self.ref: np.ndarray | None = None  # smoothed shares; set by set_reference, not pickled
        self.ref_n = 0

    def __getstate__(self):
        s = dict(self.__dict__)
        s["ref"], s["ref_n"] = None, 0
        return s

    def set_reference(self, label_counts: dict[str, int]) -> None:
        n = sum(label_counts.get(lab, 0) for lab in self.labels)
        self.ref_n = n
        if n < self.cfg.min_reference:
            self.ref = None
            return
        raw = np.array([label_counts.get(lab, 0) for lab in self.labels], dtype=float) + self.cfg.smoothing
        self.ref = raw / raw.sum()

    def update(self, label: str) -> Change | None:
        i = self.index.get(label)
        if i is None:
            return None
        self.counts[i] += 1
        self.n += 1
        if self.n < self.cfg.window:
            return None
        counts = np.array(self.counts, dtype=float)
        self.counts = [0] * len(self.labels)
        self.n = 0
        if self.ref is None:
            return None
        stat, p = chi2_test(counts, self.ref)
        jsd = js_divergence(counts + 1e-12, self.ref)
        self.last_stat, self.last_jsd = stat, jsd
        drifted = p < self.cfg.alpha and jsd >= self.cfg.min_jsd
        if drifted and not self.in_drift:
            self.in_drift, self.clear = True, 0
            shares = counts / counts.sum()
            moved = sorted(zip(self.labels, shares - self.ref), key=lambda t: -abs(t[1]))[:3]
            return Change(0.0, jsd, stat, int(counts.sum()),
                          {"p_value": p, "jsd": jsd,
                           "shares": {lab: round(float(s), 4) for lab, s in zip(self.labels, shares)},
                           "reference": {lab: round(float(s), 4) for lab, s in zip(self.labels, self.ref)},
                           "moved": {lab: round(float(d), 4) for lab, d in moved}})
        if self.in_drift:
            self.clear = 0 if drifted else self.clear + 1
            if self.clear >= self.cfg.clear_windows:
                self.in_drift, self.clear = False, 0
        return None

    def statistic(self) -> float:
        return self.last_stat


def make_detector(cfg: DetectorConfig, labels: tuple[str, ...] | None = None):
    if cfg.detector == "adwin":
        return AdwinDetector(cfg)
    if cfg.detector == "page_hinkley":
        return PageHinkleyDetector(cfg)
    if cfg.detector == "kswin":
        return KswinDetector(cfg)
    if cfg.detector == "chi2_jsd":
        return LabelMixDetector(cfg, labels or ())
    raise ValueError(f"unknown detector {cfg.detector!r}")


def severity(metric: str, change: Change) -> str:
    if metric == "label_mix":
        j = change.after
        return "high" if j >= 0.1 else "medium" if j >= 0.03 else "low"
    if "shift_sd" in change.detail:
        z = abs(change.detail["shift_sd"])
        return "high" if z >= 2 else "medium" if z >= 1 else "low"
    d = abs(change.after - change.before)
    ratio = (max(change.after, change.before) + 1e-9) / (min(change.after, change.before) + 1e-9)
    if metric in RATE_METRICS:
        return "high" if d >= 0.05 or (d >= 0.01 and ratio >= 3) else "medium" if d >= 0.02 or ratio >= 2 else "low"
    return "high" if ratio >= 2 else "medium" if ratio >= 1.25 else "low"


class Monitor:
    """One metric of one task: a detector plus the gate that makes alerts out of changes.

    The gate, in order: no alert during ``warmup`` events; a change in the direction that
    does not matter is ignored; a change smaller than ``min_effect`` is ignored; no new alert
    within ``cooldown_events`` events of the last one; and hysteresis (below). Suppressed
    changes are kept for the window's verdict. ``before`` of a change is also kept as the
    reference shown in drift_windows.

    Hysteresis (not chi2_jsd, whose detector has its own): after an alert the monitor is in
    drift, in the alert's direction, at the in-drift level: the mean of the values since the
    alert (the alert's ``after`` until ``RECENT`` values have been seen). A further change in
    the same direction is suppressed ("hysteresis") unless the metric settles at least
    ``rearm_effect`` beyond that level: the detector fires early, on a short and selected
    stretch of values, so its ``after`` says little about where the metric is going; the
    level over the ``rearm_events`` values after the detection does. That level is measured
    (the change is held back as "rearm_pending" meanwhile) and, if far enough, alerts at the
    last of those values. A ramp alerts once (mid-ramp); the rest of the ramp stays within
    ``rearm_effect`` of the in-drift level; a second step of the world alerts again. A change
    in the other direction that brings the metric back nearer the pre-alert reference than
    the in-drift level (past the midpoint) ends the drift: the next rise is a new change.
    ``rearm_effect = 0`` turns hysteresis off (the cooldown only)."""

    RECENT = 512  # the last values, for the "after" of a rate change

    # hysteresis state; class-level defaults so that snapshots pickled before it still load
    drift_sign = 0  # +1 / -1 while in drift after an alert up / down; 0 when not in drift
    drift_from = 0.0  # the pre-alert reference (the alert's ``before``)
    drift_level = 0.0  # the alert's ``after``: the in-drift level until RECENT values are seen
    pending: tuple | None = None  # (change, due event, level, baseline n and sum at detection)
    due = -1  # the event count at which the pending change is measured; -1 if none

    def __init__(self, cfg: DetectorConfig, labels: tuple[str, ...] | None = None) -> None:
        self.cfg = cfg
        self.labels = labels
        self.det = make_detector(cfg, labels)
        self.n = 0
        self.last_alert_n: int | None = None
        self.baseline = Welford()  # values since the last alert: the "before" of drift_windows
        self.alerts = 0
        self.buf = [0.0] * self.RECENT
        self.k = 0
        self.drift_sign, self.drift_from, self.drift_level = 0, 0.0, 0.0
        self.pending, self.due = None, -1

    def update(self, x) -> Change | None:
        out = self.update_many([x])
        return out[0][1] if out else None

    def update_many(self, xs) -> list[tuple[int, Change]]:
        """Feed values in order; returns (index, change) for each change (alert or suppressed)."""
        out: list[tuple[int, Change]] = []
        upd = self.det.update
        if self.cfg.detector == "chi2_jsd":
            for i, x in enumerate(xs):
                self.n += 1
                ch = upd(x)
                if ch is not None:
                    out.append((i, self.gate(ch)))
            return out
        b = self.baseline
        bn, bmean, bm2 = b.n, b.mean, b.m2
        buf, k, mask = self.buf, self.k, self.RECENT - 1
        n, due = self.n, self.due
        for i, x in enumerate(xs):
            n += 1
            bn += 1
            d = x - bmean
            bmean += d / bn
            bm2 += d * (x - bmean)
            buf[k & mask] = x
            k += 1
            if n == due:  # a further change's level is measured: re-alert or not
                self.n, self.k = n, k
                b.n, b.mean, b.m2 = bn, bmean, bm2
                ch = self._settle()
                if ch is not None:
                    out.append((i, ch))
                b = self.baseline
                bn, bmean, bm2 = b.n, b.mean, b.m2
                due = self.due
            ch = upd(x)
            if ch is not None:
                self.n, self.k = n, k
                b.n, b.mean, b.m2 = bn, bmean, bm2
                if self.cfg.detector == "adwin":
                    ch.after = self._recent_after(ch, k)
                out.append((i, self.gate(ch)))
                b = self.baseline
                bn, bmean, bm2 = b.n, b.mean, b.m2
                due = self.due
        self.n, self.k = n, k
        b.n, b.mean, b.m2 = bn, bmean, bm2
        return out

    def _recent_after(self, ch: Change, k: int) -> float:
        """The mean since the likely change point: of the last r values (r = 16, 32, ... up to the
        detector's window), the r whose mean departs most from ``before`` in standard errors."""
        buf, mask = self.buf, self.RECENT - 1
        limit = max(1, min(ch.window, self.RECENT, k))
        best, best_score, total, r = ch.after, -1.0, 0.0, 0
        for target in (16, 32, 64, 128, 256, 512):
            target = min(target, limit)
            while r < target:
                r += 1
                total += buf[(k - r) & mask]
            score = abs(total / r - ch.before) * math.sqrt(r)
            if score > best_score:
                best, best_score = total / r, score
            if target == limit:
                break
        return best

    def in_drift_level(self) -> float:
        """The level the monitor is in drift at: the mean since the last alert, once there are
        RECENT values of it; the alert's ``after`` before that."""
        b = self.baseline
        return b.mean if b.n >= self.RECENT else self.drift_level

    def gate(self, ch: Change) -> Change:
        cfg = self.cfg
        ch.at = self.n
        move = ch.after - ch.before
        hyst = cfg.detector != "chi2_jsd" and self.drift_sign != 0
        sign = (move > 0) - (move < 0)
        if hyst and sign == -self.drift_sign:
            # back past the midpoint between the pre-alert reference and the in-drift level: out of drift
            level = self.in_drift_level()
            if (ch.after - self.drift_from) * self.drift_sign <= (level - self.drift_from) * self.drift_sign / 2:
                self.drift_sign, self.pending, self.due = 0, None, -1
            elif self.pending is not None:
                self.pending, self.due = None, -1  # the further change it waited on went back
        if self.n < cfg.warmup:
            ch.suppressed = "warmup"
        elif cfg.direction == "up" and move <= 0 and cfg.detector != "chi2_jsd":
            ch.suppressed = "direction"
        elif cfg.direction == "down" and move >= 0 and cfg.detector != "chi2_jsd":
            ch.suppressed = "direction"
        elif cfg.detector != "chi2_jsd" and abs(move) < cfg.min_effect:
            ch.suppressed = "min_effect"
        elif self.last_alert_n is not None and self.n - self.last_alert_n < cfg.cooldown_events:
            ch.suppressed = "cooldown"
        elif hyst and sign == self.drift_sign and cfg.rearm > 0:
            level = self.in_drift_level()
            if self.pending is not None:
                ch.suppressed = "rearm_pending"  # the change before this one is being measured
            elif (ch.after - level) * sign < cfg.rearm:
                ch.suppressed = "hysteresis"  # even the detector's (early, high) estimate is not far enough
            else:
                ch.suppressed = "rearm_pending"
                b = self.baseline
                self.due = self.n + max(1, cfg.rearm_events)
                self.pending = (ch, self.due, level, b.n, b.n * b.mean)
        else:
            self._alert(ch)
        return ch

    def _alert(self, ch: Change) -> None:
        ch.alert = True
        ch.suppressed = ""
        self.last_alert_n = self.n
        self.alerts += 1
        self.baseline = Welford()
        self.pending, self.due = None, -1
        if self.cfg.detector != "chi2_jsd":
            move = ch.after - ch.before
            sign = (move > 0) - (move < 0)
            if sign != self.drift_sign:
                self.drift_from = ch.before  # a new episode; a re-alert keeps the episode's reference
            self.drift_sign, self.drift_level = sign, ch.after

    def _settle(self) -> Change | None:
        """At the end of a pending change's ``rearm_events``: its level over them against the
        in-drift level it was detected at. Returns the re-alert, or None (it stays suppressed)."""
        first, _, level, n0, sum0 = self.pending
        self.pending, self.due = None, -1
        b = self.baseline
        m = b.n - n0
        if m <= 0:
            return None
        settled = (b.n * b.mean - sum0) / m
        if (settled - level) * self.drift_sign < self.cfg.rearm:
            return None
        ch = Change(level, settled, abs(settled - level), m,
                    {**first.detail, "detected_at": first.at, "detected_before": first.before,
                     "detected_after": first.after, "pre_alert_reference": self.drift_from,
                     "rearm_effect": self.cfg.rearm})
        if "sd" in ch.detail:  # page_hinkley: the shift in its standard deviations, for severity
            ch.detail["shift_sd"] = (settled - level) / ch.detail["sd"]
        ch.at = self.n
        self._alert(ch)
        return ch

    @property
    def reference(self) -> float | None:
        return self.baseline.mean if self.baseline.n else None

    def statistic(self) -> float:
        return self.det.statistic()
