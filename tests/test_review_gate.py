"""The gate reports scores per gold source as well as per slice (never gates on them)."""

from __future__ import annotations

from training.gate.config import GateConfig
from training.gate.policy import Scores, decide, render_table, score_answers

GOLD = [{"id": "a", "output": "x", "slice": "GB", "source": "seed"},
        {"id": "b", "output": "y", "slice": "GB", "source": "seed"},
        {"id": "c", "output": "x", "slice": "FR", "source": "disagreement"},
        {"id": "d", "output": "y", "slice": "FR"}]  # no source: a row from before sources were kept


def test_scores_per_source():
    s = score_answers(GOLD, {"a": "x", "b": "y", "c": "y", "d": "y"}, extraction=False)
    assert s.sources == {"seed": (1.0, 3), "disagreement": (0.0, 1)}
    assert Scores.from_dict(s.to_dict()) == s
    old = {"overall": 1.0, "n": 1, "slices": {"GB": [1.0, 1]}}  # a baseline pinned before sources existed
    assert Scores.from_dict(old).sources == {}


def test_verdict_reports_sources_against_the_baseline_without_gating_on_them():
    cfg = GateConfig(min_slice_examples=1, slice_tolerance=0.5)
    cand = score_answers(GOLD, {"a": "x", "b": "y", "c": "y", "d": "y"}, False)
    base = score_answers(GOLD, {"a": "x", "b": "y", "c": "x", "d": "x"}, False)
    v = decide("tx", "m1", 2, cand, base, "teacher", cfg)
    by = {s.source: s for s in v.sources}
    assert by["disagreement"].score == 0.0 and by["disagreement"].baseline == 1.0
    assert v.approved  # overall 0.75 == baseline 0.75; sources are reported only
    assert "by gold source" in render_table(v) and "disagreement" in render_table(v)
    legacy = decide("tx", "m1", 2, cand, Scores(0.5, 4, {"GB": (1.0, 2), "FR": (0.0, 2)}), "teacher", cfg)
    assert {s.baseline for s in legacy.sources} == {None}
    assert v.to_dict()["sources"][0]["source"] == "disagreement"
