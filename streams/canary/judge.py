"""The canary judge (pure): promote / abort / inconclusive from the paired answers so far.

Evidence per slice (``SliceCounts``): how many live requests both versions were asked, how many
answers differ (a failed or timed-out candidate counts as a disagreement), and, on the pairs
whose request carried the teacher's answer, how often the candidate was right where the
incumbent was wrong (``cand_better``) and the reverse (``cand_worse``).

Every claim is an anytime-valid test: a betting martingale (a mixture over a grid of fixed bets
of  prod_i (1 + lambda (X_i - m))  , each a nonnegative supermartingale when the null holds) is
compared with 1/alpha'. By Ville's inequality the chance that it EVER crosses, at any of the
judge's looks, is at most alpha' -- so the judge may look after every window without inflating
its false decisions, unlike a fixed-sample test polled at the same cadence (bench/canary_bench.py
measures both). With outcomes taking a few values, a bet's wealth depends only on the counts.

* abort (a union over slices, Bonferroni: each test at alpha / k, k = 2 x slices + 1):
  - a slice's disagreement rate is confidently above max_disagreement + slice_tolerance, unless
    the teacher says the candidate is confidently better there; or the task-wide rate is
    confidently above max_disagreement (same exception, task-wide);
  - a slice's paired comparison (+1 candidate right & incumbent wrong, -1 the reverse, 0 else)
    is confidently below -slice_tolerance (the candidate is worse).
* promote (an intersection-union test: every claim must hold, each at alpha -- split alpha/2
  between its two ways to pass): the task-wide disagreement rate is confidently below
  max_disagreement and every slice's is confidently below max_disagreement + slice_tolerance
  (or the teacher says the candidate is confidently better there), with at least min_pairs
  pairs and min_duration seconds in canary. A slice with fewer than min_pairs / 10 pairs is too
  small to prove anything about soon; it does not block a promote (the task-wide claim covers
  it, and it can still cause an abort) and the evidence marks it ``"small": true``.
* inconclusive otherwise -- in particular with too few pairs or too little time, never a pass.
  An abort needs min_pairs but not min_duration (a shadowed candidate that is clearly worse need
  not soak).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping

PROMOTE, ABORT, INCONCLUSIVE = "promote", "abort", "inconclusive"
ALL = "*"  # the task-wide pseudo-slice in the evidence
# Bets, as fractions of the largest bet that keeps the wealth positive. A mixture over a grid
# adapts to the unknown effect size at the price of log(len(grid)) in the threshold.
BET_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9)


@dataclass(frozen=True)
class SliceCounts:
    pairs: int = 0        # the candidate was asked (answered, failed or timed out)
    disagree: int = 0     # the answers differ, or the candidate failed
    errors: int = 0       # the candidate failed or timed out
    teacher: int = 0      # pairs whose request carried the teacher's answer (and the candidate answered)
    cand_better: int = 0  # candidate right, incumbent wrong
    cand_worse: int = 0   # candidate wrong, incumbent right

    def __add__(self, o: "SliceCounts") -> "SliceCounts":
        return SliceCounts(*(a + b for a, b in zip(asdict(self).values(), asdict(o).values())))


@dataclass(frozen=True)
class Verdict:
    outcome: str                 # promote | abort | inconclusive
    reason: str
    pairs: int
    evidence: dict = field(default_factory=dict)   # per slice: counts, rates, log-wealth of each test


def log_wealth(counts: Mapping[float, int], m: float, lo: float, hi: float, above: bool) -> float:
    """log of the betting martingale against H0: mean <= m (``above``: evidence that the mean is
    above m) or H0: mean >= m, for outcomes in [lo, hi] seen ``counts[value]`` times."""
    if above and m <= lo or not above and m >= hi:
        return 0.0
    logs = []
    for c in BET_FRACTIONS:
        lam = c / (m - lo) if above else -c / (hi - m)
        s = 0.0
        for v, n in counts.items():
            if n:
                s += n * math.log1p(lam * (v - m))
        logs.append(s)
    top = max(logs)
    return top + math.log(sum(math.exp(x - top) for x in logs) / len(logs))


def rejects(log_w: float, alpha: float) -> bool:
    return log_w >= math.log(1.0 / alpha)


def _disagreement(c: SliceCounts, m: float, above: bool) -> float:
    return log_wealth({1.0: c.disagree, 0.0: c.pairs - c.disagree}, m, 0.0, 1.0, above)


def _paired(c: SliceCounts, m: float, above: bool) -> float:
    same = c.teacher - c.cand_better - c.cand_worse
    return log_wealth({1.0: c.cand_better, -1.0: c.cand_worse, 0.0: same}, m, -1.0, 1.0, above)


def judge(counts: Mapping[str, SliceCounts], elapsed_s: float, *, min_pairs: int, min_duration: float,
          max_disagreement: float, slice_tolerance: float, alpha: float, n_slices: int | None = None) -> Verdict:
    """The decision after the pairs so far (``counts`` per slice) and ``elapsed_s`` in canary.
    ``n_slices``: how many slices there can be, when known (a task sliced by label: its labels);
    the Bonferroni count is then fixed from the first look, as the guarantee over all looks
    needs. Otherwise the slices seen so far are counted."""
    slices = {s: c for s, c in counts.items() if c.pairs > 0}
    total = SliceCounts()
    for c in slices.values():
        total = total + c
    n = total.pairs
    k = 2 * max(len(slices), n_slices or 0) + 1
    a_abort = alpha / k
    slice_bound = min(1.0, max_disagreement + slice_tolerance)
    ev: dict[str, dict] = {}
    bad: list[str] = []
    unproven: list[str] = []
    for name, c in [(ALL, total), *sorted(slices.items())]:
        bound = max_disagreement if name == ALL else slice_bound
        w_hi, w_lo = _disagreement(c, bound, True), _disagreement(c, bound, False)
        w_better = _paired(c, 0.0, True)
        w_worse = _paired(c, -slice_tolerance, False)
        better_abort = rejects(w_better, a_abort)
        e = {**asdict(c), "disagreement_rate": round(c.disagree / c.pairs, 4) if c.pairs else None,
             "error_rate": round(c.errors / c.pairs, 4) if c.pairs else None, "bound": round(bound, 4),
             "log_w_above": round(w_hi, 3), "log_w_below": round(w_lo, 3), "log_w_better": round(w_better, 3),
             "log_w_worse": round(w_worse, 3)}
        if rejects(w_hi, a_abort) and not better_abort:
            bad.append(f"{'task-wide' if name == ALL else 'slice ' + repr(name)} disagrees on "
                       f"{c.disagree}/{c.pairs} pairs, confidently above {bound:.3f}")
        if name != ALL and rejects(w_worse, a_abort):
            bad.append(f"slice {name!r}: candidate right & incumbent wrong {c.cand_better}, the reverse "
                       f"{c.cand_worse} of {c.teacher} teacher-answered pairs: confidently worse by more than "
                       f"{slice_tolerance:.3f}")
        fine = rejects(w_lo, alpha / 2) or rejects(w_better, alpha / 2)
        small = name != ALL and c.pairs < min_pairs / 10
        e["fine"], e["small"] = fine, small
        if not fine and not small:
            unproven.append("task-wide" if name == ALL else repr(name))
        ev[name] = e
    evidence = {"slices": ev, "alpha": alpha, "alpha_abort_per_test": a_abort, "tests": k,
                "elapsed_s": round(elapsed_s, 1), "min_pairs": min_pairs, "min_duration": min_duration}
    if n < min_pairs:
        return Verdict(INCONCLUSIVE, f"{n} pairs, fewer than min_pairs = {min_pairs}", n, evidence)
    if bad:
        return Verdict(ABORT, "; ".join(bad), n, evidence)
    if elapsed_s < min_duration:
        return Verdict(INCONCLUSIVE, f"{elapsed_s:.0f}s in canary, less than min_duration = {min_duration:.0f}s",
                       n, evidence)
    if unproven:
        return Verdict(INCONCLUSIVE, f"not yet confidently within bounds: {', '.join(unproven[:5])}"
                       + (f" (+{len(unproven) - 5} more)" if len(unproven) > 5 else ""), n, evidence)
    return Verdict(PROMOTE, f"{n} pairs, disagreement {total.disagree / n:.3f} confidently below "
                            f"{max_disagreement:.3f} task-wide and every slice within {slice_bound:.3f}", n, evidence)
