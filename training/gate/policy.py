"""The release gate as pure functions: score answers on a gold set, then decide.

A candidate is approved only if its overall score is not below the pinned baseline's AND no
slice with at least ``min_slice_examples`` gold examples scores below the baseline's slice
score minus ``slice_tolerance``. A slice with fewer examples is reported as insufficient and
fails the gate (or only warns, when the task says ``insufficient_slice = "warn"``). Every
reason is listed; nothing is passed silently.

Scoring: exact match of the label for classification tasks; for extraction tasks, the share
of the gold object's fields that the answer reproduces exactly (an unparsable answer scores 0).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

import orjson

from training.gate.config import GateConfig

OVERALL = "__overall__"
_EPS = 1e-9


# ---------------------------------------------------------------- scoring

def _as_obj(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return value
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return None


def score_one(gold_output: str, answer: Any, extraction: bool) -> float:
    """1.0/0.0 exact match for labels; per-field match share for extraction outputs."""
    if answer is None:
        return 0.0
    if not extraction:
        return 1.0 if (answer if isinstance(answer, str) else orjson.dumps(answer).decode()).strip() == gold_output else 0.0
    gold = _as_obj(gold_output)
    got = _as_obj(answer)
    if not isinstance(gold, dict):
        return 1.0 if got == gold else 0.0
    if not gold:
        return 1.0 if got == {} else 0.0
    if not isinstance(got, dict):
        return 0.0
    return sum(1 for k, v in gold.items() if k in got and got[k] == v) / len(gold)


@dataclass(frozen=True)
class Scores:
    """Mean score overall and per slice, with the number of gold examples behind each."""

    overall: float
    n: int
    slices: dict[str, tuple[float, int]]
    # per gold source (seed, disagreement, low_conf, live_sample): reported, never gated on
    sources: dict[str, tuple[float, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"overall": self.overall, "n": self.n,
                "slices": {k: [s, n] for k, (s, n) in sorted(self.slices.items())},
                "sources": {k: [s, n] for k, (s, n) in sorted(self.sources.items())}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Scores":
        return cls(float(d["overall"]), int(d["n"]),
                   {k: (float(v[0]), int(v[1])) for k, v in d["slices"].items()},
                   {k: (float(v[0]), int(v[1])) for k, v in (d.get("sources") or {}).items()})


def score_answers(gold_rows: Iterable[Mapping[str, Any]], answers: Mapping[str, Any],
                  extraction: bool) -> Scores:
    """Score answers (gold id -> output) on gold rows (id, output, slice, optional source). A
    gold id without an answer counts as wrong. A row without a source counts as "seed"."""
    total, n = 0.0, 0
    per: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    per_source: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for row in gold_rows:
        s = score_one(row["output"], answers.get(row["id"]), extraction)
        total += s
        n += 1
        for acc in (per[row["slice"]], per_source[row.get("source") or "seed"]):
            acc[0] += s
            acc[1] += 1
    return Scores(total / n if n else 0.0, n, {k: (v[0] / v[1], int(v[1])) for k, v in per.items()},
                  {k: (v[0] / v[1], int(v[1])) for k, v in per_source.items()})


# ---------------------------------------------------------------- decision

@dataclass(frozen=True)
class SliceResult:
    slice: str
    n: int
    score: float
    baseline: float
    status: str  # "ok", "regressed", "insufficient"


@dataclass(frozen=True)
class SourceResult:
    """The score on the gold examples of one source, next to the baseline's (None when the
    pinned baseline predates per-source scores). Reported so that a harder gold set (more
    reviewed disagreements) is not mistaken for a worse model; never a reason to reject."""

    source: str
    n: int
    score: float
    baseline: float | None


@dataclass(frozen=True)
class Verdict:
    task: str
    model_version: str
    gold_version: int
    approved: bool
    overall: float
    baseline_overall: float
    baseline: str            # e.g. "teacher" or "incumbent:<version>"
    n: int
    slices: tuple[SliceResult, ...]
    reasons: tuple[str, ...]   # why rejected (empty when approved)
    warnings: tuple[str, ...] = field(default=())
    config: dict[str, Any] = field(default_factory=dict)
    sources: tuple[SourceResult, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["slices"] = [asdict(s) for s in self.slices]
        d["sources"] = [asdict(s) for s in self.sources]
        d["reasons"] = list(self.reasons)
        d["warnings"] = list(self.warnings)
        return d


def decide(task: str, model_version: str, gold_version: int, candidate: Scores, baseline: Scores,
           baseline_name: str, cfg: GateConfig) -> Verdict:
    """The gate decision. Pure: same inputs, same verdict."""
    reasons: list[str] = []
    warnings: list[str] = []
    if candidate.n == 0:
        reasons.append(f"gold set version {gold_version} has no examples: import a gold set "
                       "(`flywheel gold import`) before gating")
    if candidate.overall + _EPS < baseline.overall:
        reasons.append(f"overall score {candidate.overall:.4f} is below the baseline's "
                       f"{baseline.overall:.4f} ({baseline_name})")
    results = []
    for name in sorted(candidate.slices):
        score, n = candidate.slices[name]
        base = baseline.slices.get(name, (0.0, n))[0]
        label = name if name else "(empty)"
        if n < cfg.min_slice_examples:
            status = "insufficient"
            msg = (f"slice '{label}' has {n} gold examples, fewer than min_slice_examples="
                   f"{cfg.min_slice_examples}: too few to judge (score {score:.4f}, baseline {base:.4f})")
            (reasons if cfg.insufficient_slice == "fail" else warnings).append(msg)
        elif score + _EPS < base - cfg.slice_tolerance:
            status = "regressed"
            reasons.append(f"slice '{label}' regressed: {score:.4f} vs baseline {base:.4f} "
                           f"(tolerance {cfg.slice_tolerance}, {n} examples)")
        else:
            status = "ok"
        results.append(SliceResult(name, n, score, base, status))
    sources = tuple(SourceResult(name, n, score, baseline.sources[name][0] if name in baseline.sources else None)
                    for name, (score, n) in sorted(candidate.sources.items()))
    return Verdict(task=task, model_version=model_version, gold_version=gold_version,
                   approved=not reasons, overall=candidate.overall, baseline_overall=baseline.overall,
                   baseline=baseline_name, n=candidate.n, slices=tuple(results), reasons=tuple(reasons),
                   warnings=tuple(warnings), config=cfg.to_dict(), sources=sources)


def teacher_answers(gold_rows: Iterable[Mapping[str, Any]]) -> tuple[dict[str, str], int]:
    """The teacher's answers stored on gold rows, and how many rows lack one."""
    answers, missing = {}, 0
    for r in gold_rows:
        if r.get("teacher_output") is None:
            missing += 1
        else:
            answers[r["id"]] = r["teacher_output"]
    return answers, missing


def one_line(v: Verdict) -> str:
    """The verdict in one line; a rejection says why (its first reason, and how many more)."""
    head = (f"{v.model_version} {'APPROVED' if v.approved else 'REJECTED'}: gold v{v.gold_version} "
            f"{v.overall:.4f} vs {v.baseline} {v.baseline_overall:.4f}")
    if v.approved or not v.reasons:
        return head
    more = f" (and {len(v.reasons) - 1} more reason{'s' if len(v.reasons) > 2 else ''})" if len(v.reasons) > 1 else ""
    return f"{head}; why: {v.reasons[0]}{more}"


def render_table(v: Verdict) -> str:
    """A plain-text table of a verdict, for terminals and logs."""
    head = (f"gate {'APPROVED' if v.approved else 'REJECTED'}  task={v.task}  model={v.model_version}  "
            f"gold=v{v.gold_version}  baseline={v.baseline}")
    rows = [("slice", "n", "score", "baseline", "delta", "status")]
    rows.append((OVERALL, str(v.n), f"{v.overall:.4f}", f"{v.baseline_overall:.4f}",
                 f"{v.overall - v.baseline_overall:+.4f}",
                 "ok" if v.overall + _EPS >= v.baseline_overall else "regressed"))
    for s in v.slices:
        rows.append((s.slice or "(empty)", str(s.n), f"{s.score:.4f}", f"{s.baseline:.4f}",
                     f"{s.score - s.baseline:+.4f}", s.status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head, ""]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    if v.sources and (len(v.sources) > 1 or v.sources[0].source != "seed"):
        lines += ["", "by gold source (reported, not gated):"]
        for src in v.sources:
            base = "n/a" if src.baseline is None else f"{src.baseline:.4f}"
            delta = "" if src.baseline is None else f"  {src.score - src.baseline:+.4f}"
            lines.append(f"  {src.source:<12} n={src.n:<5} score {src.score:.4f}  baseline {base}{delta}")
    if v.reasons:
        lines += ["", "reasons:"] + [f"  - {r}" for r in v.reasons]
    if v.warnings:
        lines += ["", "warnings:"] + [f"  - {w}" for w in v.warnings]
    return "\n".join(lines)
