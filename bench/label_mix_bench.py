"""label_mix on a young task: false alarms and detection delay of the one-sample chi-square test
(the reference shares taken as exact: flywheel before this change) vs the two-sample test of
homogeneity (the reference counted as the sample it is), in one run.

Per scenario (reference size R, number of labels K, seed): a true label mix ~ Dirichlet(1) over
K labels, a training reference of R labels drawn from it, then 1,000 stationary windows of
1,000 labels (1M events) and, separately, a real shift (30% of the mass moved to the rarest
labels) after which the windows until the first alert are counted. The decision per window is
the detector's: p < alpha (1e-6) and Jensen-Shannon divergence >= min_jsd (0.01 bits), with no
test at all while the reference holds fewer than min_reference (200) labels, as in the detector
("two_sample_ungated" shows the two-sample test on those small references too).

    .venv/bin/python bench/label_mix_bench.py [--windows 1000] [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from streams.drift.detectors import chi2_test, chi2_two_sample, js_divergence

WINDOW, ALPHA, MIN_JSD, SMOOTHING = 1000, 1e-6, 0.01, 0.5
MIN_REFERENCE = 200  # the detector's default: below it label_mix has no reference and stays off


def decide(counts, ref_counts, two_sample: bool, gated: bool = True) -> bool:
    if gated and ref_counts.sum() < MIN_REFERENCE:
        return False
    shares = (ref_counts + SMOOTHING) / (ref_counts + SMOOTHING).sum()
    _, p = chi2_two_sample(counts, ref_counts) if two_sample else chi2_test(counts, shares)
    return p < ALPHA and js_divergence(counts + 1e-12, shares) >= MIN_JSD


def scenario(rng, r: int, k: int, windows: int) -> dict:
    truth = rng.dirichlet(np.ones(k))
    ref = rng.multinomial(r, truth).astype(float)
    stationary = rng.multinomial(WINDOW, truth, size=windows).astype(float)
    shifted_truth = truth.copy()
    order = np.argsort(truth)
    moved = 0.3 * truth[order[-1]]
    shifted_truth[order[-1]] -= moved
    shifted_truth[order[:2]] += moved / 2
    shifted = rng.multinomial(WINDOW, shifted_truth, size=50).astype(float)
    out = {}
    for name, two, gated in (("one_sample", False, True), ("two_sample", True, True),
                             ("two_sample_ungated", True, False)):
        alarms = sum(decide(c, ref, two, gated) for c in stationary)
        delay = next((i + 1 for i, c in enumerate(shifted) if decide(c, ref, two, gated)), None)
        out[name] = {"false_alarms": int(alarms), "delay_windows": delay}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=1000, help="stationary windows of 1,000 labels per scenario")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "label_mix.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = []
    for r in (150, 250, 400, 600):
        for k in (4, 8, 12, 14):
            res = [scenario(np.random.default_rng(1000 * r + 10 * k + s), r, k, args.windows) for s in range(args.seeds)]
            row = {"reference": r, "labels": k}
            for name in ("one_sample", "two_sample", "two_sample_ungated"):
                events = args.windows * WINDOW * args.seeds
                fa = sum(x[name]["false_alarms"] for x in res)
                delays = [x[name]["delay_windows"] for x in res]
                row[name] = {"false_alarms_per_million": round(fa / events * 1e6, 2),
                             "delay_events_median": (None if any(d is None for d in delays)
                                                     else int(np.median(delays)) * WINDOW),
                             "missed_shifts": sum(d is None for d in delays)}
            rows.append(row)
            print(f"R={r:4d} K={k:2d}  one-sample: {row['one_sample']['false_alarms_per_million']:8.2f} FA/M, "
                  f"delay {row['one_sample']['delay_events_median']}  |  two-sample: "
                  f"{row['two_sample']['false_alarms_per_million']:6.2f} FA/M, delay {row['two_sample']['delay_events_median']}"
                  f" (missed {row['two_sample']['missed_shifts']}/{args.seeds})")
    summary = {name: {"false_alarms_per_million_max": max(r[name]["false_alarms_per_million"] for r in rows),
                      "scenarios_with_false_alarms": sum(r[name]["false_alarms_per_million"] > 0 for r in rows)}
               for name in ("one_sample", "two_sample", "two_sample_ungated")}
    result = {"window": WINDOW, "alpha": ALPHA, "min_jsd": MIN_JSD, "seeds": args.seeds,
              "stationary_events_per_scenario": args.windows * WINDOW * args.seeds,
              "shift": "30% of the commonest label's mass moved to the two rarest labels",
              "scenarios": rows, "summary": summary, "seconds": round(time.perf_counter() - t0, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
