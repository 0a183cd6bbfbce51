"""The review decisions (pure): verdict parsing, completion, agreement, routing."""

from __future__ import annotations

import pytest

from kernel.tasks import parse_task
from streams.review.config import review_config
from streams.review.policy import (
    DISCARDED,
    PENDING,
    SUBMITTED,
    BadVerdict,
    Verdict,
    decide,
    effective,
    parse_verdict,
    pool_message,
    route,
    shown_answers,
)

TASK = parse_task({"name": "tx", "labels": ["food", "travel", "rent"], "slice": "meta.country"})


def v(reviewer, answer="food", action="submit", at="2026-01-01T10:00:00.000Z", vid=None, adjudicate=False):
    return Verdict(vid or f"{reviewer}-{at}-{answer}", "i1", "tx", reviewer, action,
                   answer if action == "submit" else None, "", adjudicate, at)


def test_one_submission_completes_by_default():
    s = decide([v("ann")], 1)
    assert (s.status, s.answer, s.agreement) == (SUBMITTED, "food", None)


def test_nothing_yet_is_pending():
    s = decide([], 1)
    assert s.status == PENDING and not s.complete


def test_min_submissions_waits_then_completes_on_agreement():
    assert decide([v("ann")], 2).status == PENDING
    assert decide([v("ann")], 2).open_reason == "1 of 2 verdicts"
    s = decide([v("ann"), v("bob")], 2)
    assert (s.status, s.answer, s.agreement, s.reviewers) == (SUBMITTED, "food", 1.0, ("ann", "bob"))


def test_disagreement_stays_open_with_agreement_recorded():
    s = decide([v("ann"), v("bob", "travel"), v("cid")], 2)
    assert s.status == PENDING
    assert s.agreement == pytest.approx(2 / 3)
    assert "disagree" in s.open_reason and "2 x food" in s.open_reason


def test_adjudication_settles_a_disagreement():
    s = decide([v("ann"), v("bob", "travel"), v("lead", "travel", adjudicate=True)], 2)
    assert (s.status, s.answer) == (SUBMITTED, "travel")


def test_a_reviewer_counts_once_their_latest_verdict_wins():
    early, late = v("ann", "food", at="2026-01-01T10:00:00.000Z"), v("ann", "travel", at="2026-01-01T11:00:00.000Z")
    assert [x.answer for x in effective([late, early])] == ["travel"]
    s = decide([late, early, v("bob", "travel")], 2)
    assert (s.status, s.answer, s.n_submitted) == (SUBMITTED, "travel", 2)


def test_discard_needs_min_submissions_and_no_submit():
    assert decide([v("ann", action="discard")], 1).status == DISCARDED
    assert decide([v("ann", action="discard")], 2).status == PENDING
    assert decide([v("ann", action="discard"), v("bob", action="discard")], 2).status == DISCARDED
    assert decide([v("ann", action="discard"), v("bob")], 1).status == SUBMITTED


def test_order_of_arrival_does_not_matter():
    vs = [v("ann"), v("bob", "travel"), v("ann", "travel", at="2026-01-02T00:00:00.000Z")]
    assert decide(vs, 2) == decide(list(reversed(vs)), 2)


def test_parse_verdict_checks_task_and_answer():
    obj = {"verdict_id": "x", "item_id": "i1", "task": "tx", "reviewer": " ann ", "action": "submit",
           "answer": "food", "decided_at": "2026-01-01T10:00:00Z", "schema_version": 1}
    got = parse_verdict(obj, TASK)
    assert (got.reviewer, got.answer, got.decided_at) == ("ann", "food", "2026-01-01T10:00:00.000Z")
    with pytest.raises(BadVerdict, match="not a label"):
        parse_verdict({**obj, "answer": "pizza"}, TASK)
    with pytest.raises(BadVerdict, match="unknown task"):
        parse_verdict({**obj, "task": "nope"}, None)
    with pytest.raises(BadVerdict, match="decided_at"):
        parse_verdict({**obj, "decided_at": "yesterday"}, TASK)
    assert parse_verdict({**obj, "action": "discard", "answer": "pizza"}, TASK).answer is None


def test_route_is_deterministic_and_follows_the_share():
    assert route("canary_disagreement", "a", 0.0) == "gold"
    assert route("live_sample", "a", 0.0) == "gold"
    assert route("low_conf", "a", 0.0) == "pool" and route("low_conf", "a", 1.0) == "gold"
    picks = [route("low_conf", f"id-{i}", 0.3) for i in range(2000)]
    assert picks == [route("low_conf", f"id-{i}", 0.3) for i in range(2000)]
    assert 0.25 < picks.count("gold") / len(picks) < 0.35


def test_shown_answers_by_kind():
    low = {"kind": "low_conf", "output": "food"}
    assert shown_answers(low) == {"teacher": "food"}
    dis = {"kind": "canary_disagreement", "output": "food", "answers": {"incumbent": "food", "candidate": "rent"}}
    assert shown_answers(dis) == {"incumbent": "food", "candidate": "rent"}
    assert shown_answers({"kind": "canary_disagreement", "output": "food"}) == {"incumbent": "food"}


def test_pool_message_carries_source_and_slice():
    item = {"task": "tx", "item_id": "c-9", "kind": "low_conf", "input": "TESCO", "slice": "GB", "meta": "{}"}
    msg = pool_message(item, decide([v("ann", "rent")], 1), TASK)
    assert msg["id"] == "human:c-9" and msg["output"] == "rent" and msg["teacher"] == "human"
    assert msg["meta"] == {"country": "GB", "source": "review:low_conf", "review_item": "c-9", "reviewers": ["ann"]}


def test_review_config_validates():
    assert review_config(TASK).min_submissions == 1
    bad = parse_task({"name": "tx", "labels": ["a"], "review": {"min_submission": 2}})
    with pytest.raises(Exception, match="review.min_submission"):
        review_config(bad)
