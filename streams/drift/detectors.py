"""Drift detectors and the alert gate: pure, per-event, snapshotted as versioned plain data.

Every detector follows one small protocol in river's style (``Detector``): hyperparameters are
constructor arguments, ``update(x)`` takes one value, the read-only ``drift_detected`` says
whether that value completed a change, and ``change`` then says what moved: the value before and
after, the detector's statistic and the window it judged. ``to_state()`` returns plain JSON-able
data with a ``state_version``; ``from_state(state)`` rebuilds the detector from it. The detector
class of a metric is chosen once, from its config, through ``DETECTORS``.

``Monitor`` wraps a detector with the policy that turns changes into alerts: a warm-up, the
direction that matters, a minimum effect, a cooldown in events, and hysteresis (after an alert,
a further move re-alerts only when it settles ``rearm_effect`` beyond the in-drift level, or
after a return towards the pre-alert reference) so that one change in the world produces one
alert.

| detector         | used for                         | per event                                    | snapshot |
| ---------------- | -------------------------------- | -------------------------------------------- | -------- |
| ``adwin``        | rates (0/1 or shares in [0, 1])  | river ADWIN, ~0.4 µs                         | the river object, pickled (below) |
| ``page_hinkley`` | means (confidence, log length)   | the Page-Hinkley test on values standardised by a warm-up, ~1 µs | its running sums |
| ``kswin``        | whole distributions              | a KS test on every ``sample_every``-th value (147 µs a test) | its window and RNG state |
| ``chi2_jsd``     | label mix vs training reference  | a count; one chi-square + Jensen-Shannon test per ``window`` labels | its counts |

ADWIN is the one detector whose state is not plain data: river's ADWIN (compiled, ~0.4 µs an
event; a pure-Python ADWIN would cost several times that on the hottest metrics) keeps its
exponential-histogram buckets behind no public accessor, and its window is every value since
the last change (10^6 and more on a quiet stream), so it can neither be rebuilt from public
state nor replayed from a bounded window. Its snapshot therefore carries the river object
pickled, and only that, inside the versioned envelope, tagged with river's version; if it
cannot be unpickled (a river upgrade), ``StateError`` says so and the caller starts that metric
fresh. Page-Hinkley and KSWIN are implemented here (river's algorithms, same results on the
same values) so that their whole state is public and exact.
"""

from __future__ import annotations

import base64
import itertools
import math
import pickle
import random
import warnings
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol, Self

import numpy as np
import river
from river import drift as rdrift

from streams.drift.config import RATE_METRICS, DetectorConfig

STATE_VERSION = 1  # of the detector and monitor snapshots


class StateError(ValueError):
    """A snapshot that cannot be restored: the caller starts the detector fresh and says why."""


def _check(state: dict, kind: str, version: int = STATE_VERSION) -> None:
    if not isinstance(state, dict) or state.get("kind") != kind:
        got = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise StateError(f"a {got!r} snapshot cannot restore a {kind!r} detector")
    if state.get("state_version") != version:
        raise StateError(f"{kind} snapshot state_version {state.get('state_version')!r} is not {version} "
                         "(written by another flywheel version)")


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

    def to_state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, s: dict) -> "Change":
        return cls(**s)


class Welford:
    __slots__ = ("n", "mean", "m2")

    def __init__(self, n: int = 0, mean: float = 0.0, m2: float = 0.0) -> None:
        self.n, self.mean, self.m2 = n, mean, m2

    def add(self, x: float) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)

    @property
    def sd(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0

    def to_state(self) -> list:
        return [self.n, self.mean, self.m2]

    def __getstate__(self):
        return (self.n, self.mean, self.m2)

    def __setstate__(self, s):
        self.n, self.mean, self.m2 = s


class Detector(Protocol):
    """What ``Monitor`` needs of a detector. ``categorical`` detectors take labels and keep
    their own hysteresis (the gate applies no direction, min_effect or rearm to them);
    ``refine_after`` asks the monitor to re-estimate a change's ``after`` from its recent
    values (ADWIN's own estimate is the mean of its whole kept window)."""

    kind: ClassVar[str]
    categorical: ClassVar[bool]
    refine_after: ClassVar[bool]
    config_keys: ClassVar[tuple[str, ...]]  # the DetectorConfig keys shown in an alert's evidence

    def update(self, x) -> None: ...

    @property
    def drift_detected(self) -> bool: ...

    @property
    def change(self) -> Change | None: ...

    def statistic(self) -> float: ...

    def to_state(self) -> dict: ...

    @classmethod
    def from_config(cls, cfg: DetectorConfig, labels: tuple[str, ...] | None) -> "Detector": ...

    @classmethod
    def from_state(cls, state: dict) -> "Detector": ...


class _Base:
    """What the detectors share: ``drift_detected`` and ``change`` (of the last ``update``), and
    the snapshot envelope. ``to_state()`` is ``{"kind", "state_version", "params"}`` (``params``:
    the constructor arguments named in ``param_names``, each kept in the attribute of its name,
    tuples written as lists), then the detector's own ``_state()``; ``from_state`` checks kind
    and version, calls the constructor with ``params`` and hands the snapshot to ``_restore``."""

    kind: ClassVar[str]
    param_names: ClassVar[tuple[str, ...]]
    _change: Change | None

    @property
    def drift_detected(self) -> bool:
        return self._change is not None

    @property
    def change(self) -> Change | None:
        return self._change

    def to_state(self) -> dict:
        params = {k: getattr(self, k) for k in self.param_names}
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}  # LabelMix's labels
        return {"kind": self.kind, "state_version": STATE_VERSION, "params": params, **self._state()}

    @classmethod
    def from_state(cls, state: dict) -> Self:
        _check(state, cls.kind)
        det = cls(**state["params"])
        det._restore(state)
        return det

    def _state(self) -> dict:
        raise NotImplementedError

    def _restore(self, state: dict) -> None:
        raise NotImplementedError


class Adwin(_Base):
    """river's ADWIN; a change is what ADWIN dropped (``before``) against what it kept."""

    kind = "adwin"
    categorical = False
    refine_after = True
    config_keys = ("delta", "clock", "direction", "min_effect", "cooldown_events")
    param_names = ("delta", "clock")

    def __init__(self, delta: float = 1e-4, clock: int = 32) -> None:
        self.delta, self.clock = delta, clock
        self._ad = rdrift.ADWIN(delta=delta, clock=clock)
        self._change: Change | None = None

    @classmethod
    def from_config(cls, cfg: DetectorConfig, labels=None) -> "Adwin":
        return cls(delta=cfg.delta, clock=cfg.clock)

    def update(self, x: float) -> None:
        ad = self._ad
        w0 = ad.width
        total0 = ad.total
        ad.update(x)
        if not ad.drift_detected:
            self._change = None
            return
        w1 = ad.width
        after = ad.estimation
        dropped = w0 + 1 - w1
        before = (total0 + x - ad.total) / dropped if dropped > 0 else after
        self._change = Change(before, after, abs(after - before), w1, {"dropped": dropped, "kept": w1})

    def statistic(self) -> float:
        return float(self._ad.width)

    def _state(self) -> dict:
        return {"river_version": river.__version__,
                "river_adwin_pickle": base64.b64encode(pickle.dumps(self._ad, protocol=4)).decode()}

    def _restore(self, state: dict) -> None:
        try:
            ad = pickle.loads(base64.b64decode(state["river_adwin_pickle"]))
        except Exception as exc:
            raise StateError(f"river {river.__version__} cannot read the ADWIN pickled by river "
                             f"{state.get('river_version')} ({exc})") from None
        if not isinstance(ad, rdrift.ADWIN):
            raise StateError(f"the ADWIN snapshot holds a {type(ad).__name__}")
        self._ad = ad

    @classmethod
    def adopt(cls, ad: rdrift.ADWIN, delta: float, clock: int) -> "Adwin":
        """Wrap an existing river ADWIN (a legacy snapshot's)."""
        det = cls(delta=delta, clock=clock)
        det._ad = ad
        return det


class PageHinkley(_Base):
    """The Page-Hinkley test (river's ``PageHinkley`` with ``alpha=1``, ``min_instances=1``: the
    same sums, the same decisions) on z-scores: the first ``warmup`` values calibrate mean and
    sd, so ``delta`` and ``threshold`` are in standard deviations whatever the metric's scale.
    Re-calibrates after each detection (the new regime becomes the reference)."""

    kind = "page_hinkley"
    categorical = False
    refine_after = False
    config_keys = ("delta", "threshold", "warmup", "direction", "min_effect", "cooldown_events")
    param_names = ("delta", "threshold", "warmup", "mode")
    RECENT = 100  # the last values: the "after" of a change

    def __init__(self, delta: float = 0.25, threshold: float = 50.0, warmup: int = 500, mode: str = "both") -> None:
        if mode not in ("up", "down", "both"):
            raise ValueError(f"mode must be up, down or both, got {mode!r}")
        self.delta, self.threshold, self.warmup, self.mode = delta, threshold, warmup, mode
        self._up = mode in ("up", "both")
        self._down = mode in ("down", "both")
        self.recent: deque[float] = deque(maxlen=self.RECENT)
        self._change: Change | None = None
        self._restart()

    @classmethod
    def from_config(cls, cfg: DetectorConfig, labels=None) -> "PageHinkley":
        return cls(delta=cfg.delta, threshold=cfg.threshold, warmup=cfg.warmup, mode=cfg.direction)

    def _restart(self) -> None:
        self.calib = Welford()
        self.calibrated = False
        self.mu, self.sd = 0.0, 1.0
        self._reset_test()

    def _reset_test(self) -> None:
        self.n = 0  # values tested since calibration
        self.mean = 0.0  # their running mean (z units)
        self.sum_inc, self.sum_dec = 0.0, 0.0
        self.min_inc, self.max_dec = math.inf, -math.inf

    def update(self, x: float) -> None:
        self._change = None
        self.recent.append(x)
        if not self.calibrated:
            c = self.calib
            c.add(x)
            if c.n >= max(self.warmup, 2):
                self.mu = c.mean
                self.sd = max(c.sd, 1e-9 + abs(self.mu) * 1e-6)
                self.calibrated = True
            return
        z = (x - self.mu) / self.sd
        self.n += 1
        self.mean += (1.0 / self.n) * (z - self.mean)
        dev = z - self.mean
        self.sum_inc = self.sum_inc + dev - self.delta
        self.sum_dec = self.sum_dec + dev + self.delta
        if self.sum_inc < self.min_inc:
            self.min_inc = self.sum_inc
        if self.sum_dec > self.max_dec:
            self.max_dec = self.sum_dec
        t = self.threshold
        if not ((self._up and self.sum_inc - self.min_inc > t) or (self._down and self.max_dec - self.sum_dec > t)):
            return
        stat = self.statistic()
        after = sum(self.recent) / len(self.recent)
        self._change = Change(self.mu, after, stat, self.calib.n + self.n,
                              {"sd": self.sd, "shift_sd": (after - self.mu) / self.sd})
        self._restart()
        self.recent.clear()

    def statistic(self) -> float:
        if not self.n:
            return 0.0
        return float(max(self.sum_inc - self.min_inc, self.max_dec - self.sum_dec, 0.0))

    def _state(self) -> dict:
        return {"recent": list(self.recent), "calibration": self.calib.to_state(), "calibrated": self.calibrated,
                "mu": self.mu, "sd": self.sd,
                # min_inc/max_dec are infinite until the first tested value (n = 0): not written then
                "test": [self.n, self.mean, self.sum_inc, self.sum_dec, self.min_inc, self.max_dec] if self.n else None}

    def _restore(self, state: dict) -> None:
        self.recent.extend(state["recent"])
        self.calib = Welford(*state["calibration"])
        self.calibrated, self.mu, self.sd = bool(state["calibrated"]), state["mu"], state["sd"]
        if state["test"] is not None:
            self.n, self.mean, self.sum_inc, self.sum_dec, self.min_inc, self.max_dec = state["test"]


class Kswin(_Base):
    """KSWIN (river's algorithm: a two-sample KS test of the newest ``stat_size`` values
    against ``stat_size`` drawn from the older rest of a ``window_size`` window; a change needs
    p <= ``alpha`` and a KS statistic above 0.1) on every ``sample_every``-th value. After a
    change it starts over with an empty window, as river's does."""

    kind = "kswin"
    categorical = False
    refine_after = False
    config_keys = ("alpha", "window_size", "stat_size", "sample_every", "direction", "min_effect", "cooldown_events")
    param_names = ("alpha", "window_size", "stat_size", "sample_every", "seed")

    def __init__(self, alpha: float = 1e-5, window_size: int = 300, stat_size: int = 100, sample_every: int = 10,
                 seed: int = 7) -> None:
        if not 0 < stat_size < window_size:
            raise ValueError(f"stat_size ({stat_size}) must be in (0, window_size={window_size})")
        self.alpha, self.window_size, self.stat_size = alpha, window_size, stat_size
        self.sample_every, self.seed = sample_every, seed
        self.i = 0  # values seen (1 in sample_every is tested)
        self.p_value = 0.0
        self._start()
        self._change: Change | None = None

    @classmethod
    def from_config(cls, cfg: DetectorConfig, labels=None) -> "Kswin":
        return cls(alpha=cfg.alpha, window_size=cfg.window_size, stat_size=cfg.stat_size,
                   sample_every=cfg.sample_every)

    def _start(self) -> None:
        self.window: deque[float] = deque(maxlen=self.window_size)
        self._rng = random.Random(self.seed)
        self._restart_due = False

    def update(self, x: float) -> None:
        self._change = None
        self.i += 1
        if self.i % self.sample_every:
            return
        if self._restart_due:
            self._start()
            self.p_value = 0.0
        window, size, stat = self.window, self.window_size, self.stat_size
        older = list(window)
        window.append(x)
        if len(window) < size:
            return
        from scipy import stats

        sampled = [window[r] for r in self._rng.sample(range(size - stat), stat)]
        newest = list(itertools.islice(window, size - stat, size))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            st, p = stats.ks_2samp(sampled, newest, method="auto")
        self.p_value = float(p)
        if not (p <= self.alpha and st > 0.1):
            return
        self._restart_due = True
        old = older[: len(older) - stat + 1] or older
        self._change = Change(sum(old) / len(old), sum(newest) / len(newest), self.p_value, len(older) + 1,
                              {"p_value": self.p_value, "sample_every": self.sample_every})

    def statistic(self) -> float:
        return self.p_value

    def _state(self) -> dict:
        version, internal, gauss = self._rng.getstate()
        return {"i": self.i, "p_value": self.p_value, "window": list(self.window), "restart_due": self._restart_due,
                "rng": [version, list(internal), gauss]}

    def _restore(self, state: dict) -> None:
        self.i, self.p_value, self._restart_due = state["i"], state["p_value"], bool(state["restart_due"])
        self.window.extend(state["window"])
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))


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


def chi2_two_sample(counts: np.ndarray, ref_counts: np.ndarray) -> tuple[float, float]:
    """(statistic, p-value) of the chi-square test of homogeneity between two samples of
    labels (a 2 x K contingency table). Unlike ``chi2_test`` it treats the reference as the
    sample it is: against a reference of ~250 examples, the one-sample test's statistic is
    inflated by about 1 + window/reference (5x for 1,000-label windows) and alarms on noise."""
    from scipy.stats import chi2

    table = np.vstack([counts, ref_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or table[0].sum() == 0 or table[1].sum() == 0:
        return 0.0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    return stat, float(chi2.sf(stat, table.shape[1] - 1))


class LabelMix(_Base):
    """Every ``window`` labels, test their mix against the training reference: a change needs
    both a two-sample chi-square p-value below ``alpha`` (it is not noise in the window nor in
    the reference, which is itself a sample) and a Jensen-Shannon divergence
    of at least ``min_jsd`` (it is big enough to matter). Hysteresis: after a change, it stays
    in drift (no new change) until ``clear_windows`` windows in a row pass. The reference
    (``set_reference``) is not part of the snapshot: it is re-read from the warehouse."""

    kind = "chi2_jsd"
    categorical = True
    refine_after = False
    config_keys = ("window", "alpha", "min_jsd", "clear_windows", "cooldown_events")
    param_names = ("labels", "window", "alpha", "min_jsd", "clear_windows", "smoothing", "min_reference")

    def __init__(self, labels: tuple[str, ...], window: int = 1000, alpha: float = 1e-6, min_jsd: float = 0.01,
                 clear_windows: int = 3, smoothing: float = 0.5, min_reference: int = 200) -> None:
        self.labels = tuple(labels)
        self.window, self.alpha, self.min_jsd = window, alpha, min_jsd
        self.clear_windows, self.smoothing, self.min_reference = clear_windows, smoothing, min_reference
        self.index = {lab: i for i, lab in enumerate(self.labels)}
        self.counts = [0] * len(self.labels)
        self.n = 0
        self.in_drift = False
        self.clear = 0
        self.last_stat = 0.0
        self.last_jsd = 0.0
        self.ref: np.ndarray | None = None  # smoothed shares; set by set_reference
        self.ref_counts: np.ndarray | None = None  # the reference's label counts (a sample, not truth)
        self.ref_n = 0
        self._change: Change | None = None

    @classmethod
    def from_config(cls, cfg: DetectorConfig, labels: tuple[str, ...] | None = None) -> "LabelMix":
        return cls(labels or (), window=cfg.window, alpha=cfg.alpha, min_jsd=cfg.min_jsd,
                   clear_windows=cfg.clear_windows, smoothing=cfg.smoothing, min_reference=cfg.min_reference)

    def set_reference(self, label_counts: dict[str, int]) -> None:
        n = sum(label_counts.get(lab, 0) for lab in self.labels)
        self.ref_n = n
        if n < self.min_reference:
            self.ref = None
            return
        self.ref_counts = np.array([label_counts.get(lab, 0) for lab in self.labels], dtype=float)
        raw = self.ref_counts + self.smoothing
        self.ref = raw / raw.sum()

    def update(self, label: str) -> None:
        self._change = None
        i = self.index.get(label)
        if i is None:
            return
        self.counts[i] += 1
        self.n += 1
        if self.n < self.window:
            return
        counts = np.array(self.counts, dtype=float)
        self.counts = [0] * len(self.labels)
        self.n = 0
        if self.ref is None:
            return
        stat, p = chi2_two_sample(counts, self.ref_counts)
        jsd = js_divergence(counts + 1e-12, self.ref)
        self.last_stat, self.last_jsd = stat, jsd
        drifted = p < self.alpha and jsd >= self.min_jsd
        if drifted and not self.in_drift:
            self.in_drift, self.clear = True, 0
            shares = counts / counts.sum()
            moved = sorted(zip(self.labels, shares - self.ref), key=lambda t: -abs(t[1]))[:3]
            self._change = Change(0.0, jsd, stat, int(counts.sum()),
                                  {"p_value": p, "jsd": jsd,
                                   "shares": {lab: round(float(s), 4) for lab, s in zip(self.labels, shares)},
                                   "reference": {lab: round(float(s), 4) for lab, s in zip(self.labels, self.ref)},
                                   "moved": {lab: round(float(d), 4) for lab, d in moved}})
            return
        if self.in_drift:
            self.clear = 0 if drifted else self.clear + 1
            if self.clear >= self.clear_windows:
                self.in_drift, self.clear = False, 0

    def statistic(self) -> float:
        return self.last_stat

    def _state(self) -> dict:
        return {"counts": list(self.counts), "n": self.n, "in_drift": self.in_drift, "clear": self.clear,
                "last_stat": self.last_stat, "last_jsd": self.last_jsd}

    def _restore(self, state: dict) -> None:
        if len(state["counts"]) != len(self.labels):
            raise StateError(f"label_mix snapshot has {len(state['counts'])} counts for {len(self.labels)} labels")
        self.counts, self.n = [int(c) for c in state["counts"]], int(state["n"])
        self.in_drift, self.clear = bool(state["in_drift"]), int(state["clear"])
        self.last_stat, self.last_jsd = float(state["last_stat"]), float(state["last_jsd"])


# the detector of each config name: chosen once, when a monitor is built or restored
DETECTORS: dict[str, type] = {cls.kind: cls for cls in (Adwin, PageHinkley, Kswin, LabelMix)}


def make_detector(cfg: DetectorConfig, labels: tuple[str, ...] | None = None) -> Detector:
    try:
        cls = DETECTORS[cfg.detector]
    except KeyError:
        raise ValueError(f"unknown detector {cfg.detector!r}; known: {sorted(DETECTORS)}") from None
    return cls.from_config(cfg, labels)


def detector_from_state(state: dict) -> Detector:
    cls = DETECTORS.get(state.get("kind")) if isinstance(state, dict) else None
    if cls is None:
        raise StateError(f"unknown detector kind in snapshot: {state.get('kind') if isinstance(state, dict) else state!r}")
    return cls.from_state(state)


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

    def __init__(self, cfg: DetectorConfig, labels: tuple[str, ...] | None = None,
                 detector: Detector | None = None) -> None:
        self.cfg = cfg
        self.labels = labels
        self.det = detector if detector is not None else make_detector(cfg, labels)
        # what the detector's kind asks of the gate, decided once
        self._categorical = type(self.det).categorical
        self._refine = type(self.det).refine_after
        self.n = 0
        self.last_alert_n: int | None = None
        self.baseline = Welford()  # values since the last alert: the "before" of drift_windows
        self.alerts = 0
        self.buf = [0.0] * self.RECENT
        self.k = 0
        # hysteresis
        self.drift_sign = 0  # +1 / -1 while in drift after an alert up / down; 0 when not in drift
        self.drift_from = 0.0  # the pre-alert reference (the alert's ``before``)
        self.drift_level = 0.0  # the alert's ``after``: the in-drift level until RECENT values are seen
        self.pending: tuple | None = None  # (change, due event, level, baseline n and sum at detection)
        self.due = -1  # the event count at which the pending change is measured; -1 if none

    def update(self, x) -> Change | None:
        out = self.update_many([x])
        return out[0][1] if out else None

    def update_many(self, xs) -> list[tuple[int, Change]]:
        """Feed values in order; returns (index, change) for each change (alert or suppressed)."""
        out: list[tuple[int, Change]] = []
        det = self.det
        upd = det.update
        if self._categorical:
            for i, x in enumerate(xs):
                self.n += 1
                upd(x)
                if det.drift_detected:
                    out.append((i, self.gate(det.change)))
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
            upd(x)
            if det.drift_detected:
                ch = det.change
                self.n, self.k = n, k
                b.n, b.mean, b.m2 = bn, bmean, bm2
                if self._refine:
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
        gated = not self._categorical  # a categorical detector has its own hysteresis, no direction
        hyst = gated and self.drift_sign != 0
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
        elif gated and cfg.direction == "up" and move <= 0:
            ch.suppressed = "direction"
        elif gated and cfg.direction == "down" and move >= 0:
            ch.suppressed = "direction"
        elif gated and abs(move) < cfg.min_effect:
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
        if not self._categorical:
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

    # -- snapshot ----------------------------------------------------------------------------
    def to_state(self) -> dict:
        """Plain JSON-able data: the config it ran under, the detector's snapshot, the gate."""
        pending = None
        if self.pending is not None:
            ch, due, level, n0, sum0 = self.pending
            pending = {"change": ch.to_state(), "due": due, "level": level, "n0": n0, "sum0": sum0}
        return {"kind": "monitor", "state_version": STATE_VERSION, "config": asdict(self.cfg),
                "detector": self.det.to_state(), "n": self.n, "last_alert_n": self.last_alert_n,
                "baseline": self.baseline.to_state(), "alerts": self.alerts, "recent": list(self.buf), "k": self.k,
                "drift_sign": self.drift_sign, "drift_from": self.drift_from, "drift_level": self.drift_level,
                "pending": pending, "due": self.due}

    @classmethod
    def from_state(cls, state: dict, cfg: DetectorConfig, labels: tuple[str, ...] | None = None) -> "Monitor":
        """The monitor saved in ``state`` if it ran under ``cfg``; ``StateError`` otherwise (a
        changed config restarts the metric, as does a detector snapshot that cannot be read)."""
        _check(state, "monitor")
        try:
            saved = DetectorConfig(**state["config"])
        except TypeError as exc:
            raise StateError(f"monitor snapshot config does not fit this flywheel ({exc})") from None
        if saved != cfg:
            raise StateError(f"{cfg.metric}: detector settings changed since the snapshot")
        det = detector_from_state(state["detector"])
        if type(det).kind != cfg.detector:
            raise StateError(f"{cfg.metric}: snapshot holds a {type(det).kind} detector, config says {cfg.detector}")
        if isinstance(det, LabelMix) and det.labels != tuple(labels or ()):
            raise StateError(f"{cfg.metric}: the task's labels changed since the snapshot")
        mon = cls(cfg, labels, detector=det)
        recent = state["recent"]
        if len(recent) != cls.RECENT:
            raise StateError(f"monitor snapshot keeps {len(recent)} recent values, not {cls.RECENT}")
        mon.n, mon.last_alert_n, mon.alerts = int(state["n"]), state["last_alert_n"], int(state["alerts"])
        mon.baseline = Welford(*state["baseline"])
        mon.buf, mon.k = [float(v) for v in recent], int(state["k"])
        mon.drift_sign, mon.drift_from, mon.drift_level = state["drift_sign"], state["drift_from"], state["drift_level"]
        p = state["pending"]
        mon.pending = None if p is None else (Change.from_state(p["change"]), p["due"], p["level"], p["n0"], p["sum0"])
        mon.due = state["due"]
        return mon
