"""The canary judge (pure) and its [canary] settings."""

import random

import pytest

from kernel.tasks import TaskConfigError
from streams.canary.config import CanaryConfig, canary_config
from streams.canary.judge import ABORT, INCONCLUSIVE, PROMOTE, SliceCounts, judge, log_wealth, rejects
from streams.canary.pairs import agree, in_canary, paired_score

CFG = dict(min_pairs=100, min_duration=60, max_disagreement=0.05, slice_tolerance=0.05, alpha=0.05)


def sim(n, p, rng, teacher=0, better=0.0, worse=0.0):
    d = sum(rng.random() < p for _ in range(n))
    b = w = 0
    for _ in range(teacher):
        u = rng.random()
        b += u < better
        w += better <= u < better + worse
    return SliceCounts(pairs=n, disagree=d, teacher=teacher, cand_better=b, cand_worse=w)


def test_identical_answers_promote_only_after_min_pairs_and_min_duration():
    ok = {"DE": SliceCounts(pairs=400), "FR": SliceCounts(pairs=400)}
    assert judge(ok, 3600, **CFG).outcome == PROMOTE
    v = judge(ok, 30, **CFG)
    assert v.outcome == INCONCLUSIVE and "min_duration" in v.reason
    few = {"DE": SliceCounts(pairs=40), "FR": SliceCounts(pairs=40)}
    v = judge(few, 3600, **CFG)
    assert v.outcome == INCONCLUSIVE and "min_pairs" in v.reason
    assert judge({}, 3600, **CFG).outcome == INCONCLUSIVE          # no data is never a pass


def test_a_slice_blocks_promotion_until_it_has_evidence_unless_it_is_tiny():
    v = judge({"DE": SliceCounts(pairs=1000), "FR": SliceCounts(pairs=20)}, 3600, **CFG)
    assert v.outcome == INCONCLUSIVE and "'FR'" in v.reason
    v = judge({"DE": SliceCounts(pairs=1000), "FR": SliceCounts(pairs=9)}, 3600, **CFG)   # < min_pairs / 10
    assert v.outcome == PROMOTE and v.evidence["slices"]["FR"]["small"]
    v = judge({"DE": SliceCounts(pairs=1000), "FR": SliceCounts(pairs=9, disagree=9)}, 3600, **CFG)
    assert v.outcome == ABORT and "'FR'" in v.reason                        # a tiny slice can still abort


def test_one_bad_slice_aborts_even_when_the_task_wide_rate_is_fine():
    counts = {s: SliceCounts(pairs=300) for s in "ABCDEFGH"}
    counts["C"] = SliceCounts(pairs=60, disagree=30)
    v = judge(counts, 3600, **CFG)
    assert v.outcome == ABORT and "slice 'C'" in v.reason
    assert v.evidence["slices"]["C"]["disagreement_rate"] == 0.5
    assert v.evidence["tests"] == 2 * 8 + 1
    assert judge(counts, 3600, n_slices=20, **CFG).evidence["tests"] == 2 * 20 + 1   # known slices fix k


def test_abort_does_not_wait_for_min_duration_but_needs_min_pairs():
    bad = {"A": SliceCounts(pairs=200, disagree=100)}
    assert judge(bad, 0, **CFG).outcome == ABORT
    assert judge({"A": SliceCounts(pairs=50, disagree=50)}, 0, **CFG).outcome == INCONCLUSIVE


def test_a_failing_candidate_is_aborted():
    v = judge({"A": SliceCounts(pairs=200, disagree=200, errors=200)}, 0, **CFG)
    assert v.outcome == ABORT and v.evidence["slices"]["A"]["error_rate"] == 1.0


def test_paired_comparison_aborts_a_candidate_the_teacher_says_is_worse():
    c = SliceCounts(pairs=300, disagree=12, teacher=300, cand_better=2, cand_worse=60)
    v = judge({"A": c, "B": SliceCounts(pairs=300)}, 3600, **CFG)
    assert v.outcome == ABORT and "confidently worse" in v.reason


def test_high_disagreement_where_the_teacher_says_the_candidate_is_better_is_not_an_abort():
    c = SliceCounts(pairs=400, disagree=120, teacher=400, cand_better=110, cand_worse=5)
    v = judge({"A": c}, 3600, **CFG)
    assert v.outcome == PROMOTE, v.reason


def test_log_wealth_is_a_valid_test_under_the_null_at_every_look():
    """The chance of ever crossing 1/alpha when the true rate sits on the bound stays <= alpha."""
    rng = random.Random(7)
    alpha, p0, crossed = 0.05, 0.1, 0
    for _ in range(300):
        d = 0
        for n in range(1, 1001):
            d += rng.random() < p0
            if n % 20 == 0 and rejects(log_wealth({1.0: d, 0.0: n - d}, p0, 0, 1, True), alpha):
                crossed += 1
                break
    assert crossed / 300 <= alpha + 0.02


def test_log_wealth_grows_under_the_alternative():
    assert rejects(log_wealth({1.0: 40, 0.0: 160}, 0.1, 0, 1, True), 0.01)
    assert not rejects(log_wealth({1.0: 40, 0.0: 160}, 0.1, 0, 1, False), 0.05)
    assert rejects(log_wealth({1.0: 2, 0.0: 398}, 0.1, 0, 1, False), 0.01)


def test_in_canary_is_deterministic_and_close_to_pct():
    ids = [f"req-{i}" for i in range(20000)]
    share = sum(in_canary(i, 30.0) for i in ids) / len(ids)
    assert 0.28 < share < 0.32
    assert [in_canary(i, 30.0) for i in ids[:100]] == [in_canary(i, 30.0) for i in ids[:100]]
    assert all(in_canary(i, 100.0) for i in ids[:100]) and not any(in_canary(i, 0.0) for i in ids[:100])
    # a larger share keeps every request of a smaller one (raising pct only adds requests)
    assert all(in_canary(i, 50.0) for i in ids if in_canary(i, 30.0))


def test_agreement_and_paired_score():
    assert agree("Rent", " rent ") and not agree("rent", "dining") and agree({"a": 1}, {"a": 1})
    assert agree(None, "rent") is False
    assert paired_score("rent", "dining", "rent") == 1
    assert paired_score("dining", "rent", "rent") == -1
    assert paired_score("rent", "rent", "rent") == 0 and paired_score("x", "y", None) is None


def test_canary_section_defaults_and_clear_errors(tmp_path):
    base = 'name = "t"\nlabels = ["a", "b"]\n'
    f = tmp_path / "t.toml"
    f.write_text(base)
    from kernel.tasks import load_task_file
    assert canary_config(load_task_file(f)) == CanaryConfig()
    f.write_text(base + '[canary]\npct = 30\nmin_duration = "2m"\nauto_promote = true\n')
    c = canary_config(load_task_file(f))
    assert (c.pct, c.min_duration, c.auto_promote) == (30.0, 120.0, True)
    for bad, key in (('pct = 0', "canary.pct"), ('alpha = 0.9', "canary.alpha"), ('pcent = 3', "canary.pcent"),
                     ('auto_rollback = "yes"', "canary.auto_rollback")):
        f.write_text(base + f"[canary]\n{bad}\n")
        with pytest.raises(TaskConfigError, match=key.replace(".", r"\.")):
            canary_config(load_task_file(f))
