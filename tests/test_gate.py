"""The gate decision and scoring: pure functions."""

from training.gate.config import GateConfig
from training.gate.policy import Scores, decide, render_table, score_answers, score_one, teacher_answers


def gold(slices: dict[str, int]) -> list[dict]:
    rows = []
    for s, n in slices.items():
        rows += [{"id": f"{s}-{i}", "output": "a", "slice": s} for i in range(n)]
    return rows


def answers(rows, wrong: dict[str, int]) -> dict:
    out, seen = {}, {}
    for r in rows:
        k = seen.get(r["slice"], 0)
        seen[r["slice"]] = k + 1
        out[r["id"]] = "b" if k < wrong.get(r["slice"], 0) else "a"
    return out


CFG = GateConfig(min_slice_examples=20, slice_tolerance=0.02)


def test_score_labels_exact_match_and_fields_per_field():
    assert score_one("a", "a", False) == 1.0
    assert score_one("a", " a ", False) == 1.0
    assert score_one("a", "b", False) == 0.0
    assert score_one("a", None, False) == 0.0
    g = '{"amount": 10, "currency": "EUR", "merchant": "Acme"}'
    assert score_one(g, {"amount": 10, "currency": "EUR", "merchant": "Acme"}, True) == 1.0
    assert abs(score_one(g, '{"amount": 10, "currency": "USD"}', True) - 1 / 3) < 1e-9
    assert score_one(g, "not json", True) == 0.0
    assert score_one(g, ["list"], True) == 0.0


def test_scores_per_slice_and_missing_answers_count_as_wrong():
    rows = gold({"DE": 4, "FR": 2})
    s = score_answers(rows, {"DE-0": "a", "DE-1": "a", "FR-0": "a"}, False)
    assert s.n == 6 and abs(s.overall - 0.5) < 1e-9
    assert s.slices == {"DE": (0.5, 4), "FR": (0.5, 2)}
    assert Scores.from_dict(s.to_dict()) == s


def test_better_overall_but_worse_on_a_slice_is_rejected_naming_the_slice():
    rows = gold({"DE": 100, "FR": 100, "US": 25})
    base = score_answers(rows, answers(rows, {"DE": 20, "FR": 20, "US": 0}), False)
    cand = score_answers(rows, answers(rows, {"DE": 0, "FR": 0, "US": 5}), False)
    assert cand.overall > base.overall
    v = decide("t", "t-v2", 3, cand, base, "teacher", CFG)
    assert not v.approved
    assert len(v.reasons) == 1 and "slice 'US' regressed" in v.reasons[0]
    assert "0.8000" in v.reasons[0] and "1.0000" in v.reasons[0]
    assert {s.slice: s.status for s in v.slices} == {"DE": "ok", "FR": "ok", "US": "regressed"}
    assert v.gold_version == 3
    assert "REJECTED" in render_table(v) and "US" in render_table(v)


def test_worse_overall_is_rejected():
    rows = gold({"DE": 50, "FR": 50})
    base = score_answers(rows, answers(rows, {"DE": 5, "FR": 5}), False)
    cand = score_answers(rows, answers(rows, {"DE": 6, "FR": 5}), False)
    v = decide("t", "m", 1, cand, base, "teacher", CFG)
    assert not v.approved
    assert any(r.startswith("overall score 0.8900 is below the baseline's 0.9000") for r in v.reasons)
    # within the slice tolerance, so only the overall reason
    assert len(v.reasons) == 1


def test_equal_is_approved_and_within_tolerance_passes():
    rows = gold({"DE": 50, "FR": 50})
    base = score_answers(rows, answers(rows, {"DE": 0, "FR": 2}), False)
    cand = score_answers(rows, answers(rows, {"DE": 1, "FR": 1}), False)   # FR better, DE -0.02
    v = decide("t", "m", 1, cand, base, "teacher", CFG)
    assert v.approved and v.reasons == () and v.warnings == ()


def test_insufficient_slice_fails_by_default_and_warns_when_asked():
    rows = gold({"DE": 50, "LU": 5})
    base = score_answers(rows, answers(rows, {}), False)
    cand = score_answers(rows, answers(rows, {}), False)
    v = decide("t", "m", 1, cand, base, "teacher", CFG)
    assert not v.approved
    assert "slice 'LU' has 5 gold examples, fewer than min_slice_examples=20" in v.reasons[0]
    assert [s.status for s in v.slices] == ["ok", "insufficient"]
    warn = GateConfig(min_slice_examples=20, insufficient_slice="warn")
    v2 = decide("t", "m", 1, cand, base, "teacher", warn)
    assert v2.approved and "LU" in v2.warnings[0]


def test_empty_gold_rejects():
    s = score_answers([], {}, False)
    v = decide("t", "m", 0, s, s, "teacher", CFG)
    assert not v.approved and "no examples" in v.reasons[0]


def test_teacher_answers():
    rows = [{"id": "1", "teacher_output": "a"}, {"id": "2", "teacher_output": None}]
    assert teacher_answers(rows) == ({"1": "a"}, 1)
