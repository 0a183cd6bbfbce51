"""Review decisions as pure functions: what a verdict means, when an item is complete, where a
completed item goes.

Statuses in Argilla's spirit. An item is ``pending`` until ``min_submissions`` reviewers have
submitted the same answer (then ``submitted``, complete, with that answer) or discarded it
(``discarded``). Each reviewer counts once: their latest verdict replaces their earlier ones.
When submitted answers disagree, the agreement is recorded and the item stays open for
adjudication; a verdict marked ``adjudicate`` settles it whatever the others said.

A completed item goes to the gold set (canary disagreements, live samples, and a
deterministic share of low-confidence items chosen by a hash of the item id) or to the
training pool as a human-labelled example (the other low-confidence items): never both.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import orjson
import xxhash

from kernel.tasks import TaskConfig, label_of, output_problem
from schemas.events import SchemaError, parse_ts
from schemas.timefmt import rfc3339

PENDING, SUBMITTED, DISCARDED = "pending", "submitted", "discarded"
STATUSES = (PENDING, SUBMITTED, DISCARDED)
KINDS = ("low_conf", "canary_disagreement", "live_sample")
# the source a completed item carries into the gold set
GOLD_SOURCE = {"low_conf": "low_conf", "canary_disagreement": "disagreement", "live_sample": "live_sample"}


class BadVerdict(ValueError):
    """A verdict that cannot be applied; the message is the dead letter's reason."""


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict_id: str
    item_id: str
    task: str
    reviewer: str
    action: str                 # submit, discard
    answer: str | None          # label, or canonical JSON of an extraction object
    note: str = ""
    adjudicate: bool = False
    decided_at: str = ""        # RFC 3339 as sent (orders a reviewer's verdicts)

    def same_as(self, other: "Verdict") -> bool:
        return (self.item_id, self.task, self.reviewer, self.action, self.answer, self.adjudicate) == \
            (other.item_id, other.task, other.reviewer, other.action, other.answer, other.adjudicate)


def parse_verdict(obj: Mapping[str, Any], task: TaskConfig | None) -> Verdict:
    """A schema-valid review.verdicts object to a Verdict, checking what the schema cannot:
    a declared task and an answer valid for it."""
    try:
        decided = rfc3339(parse_ts(obj["decided_at"]))
    except SchemaError as exc:
        raise BadVerdict(f"decided_at: {exc}") from None
    if task is None:
        raise BadVerdict(f"unknown task {obj['task']!r}: declare it in the tasks folder or fix the verdict's task")
    answer = obj.get("answer")
    if obj["action"] == "submit":
        problem = output_problem(answer, task)
        if problem:
            raise BadVerdict(f"answer is not valid for task {task.name!r}: {problem}")
        answer = label_of(answer)
    else:
        answer = None
    return Verdict(verdict_id=obj["verdict_id"], item_id=obj["item_id"], task=obj["task"],
                   reviewer=obj["reviewer"].strip(), action=obj["action"], answer=answer,
                   note=obj.get("note") or "", adjudicate=bool(obj.get("adjudicate")),
                   decided_at=decided)


def effective(verdicts: Iterable[Verdict]) -> list[Verdict]:
    """Each reviewer's latest verdict (by decided_at, then verdict_id)."""
    latest: dict[str, Verdict] = {}
    for v in sorted(verdicts, key=lambda v: (v.decided_at, v.verdict_id)):
        latest[v.reviewer] = v
    return sorted(latest.values(), key=lambda v: (v.decided_at, v.verdict_id))


@dataclass(frozen=True, slots=True)
class ItemState:
    status: str
    answer: str | None
    n_submitted: int
    n_discarded: int
    agreement: float | None     # share of submitted verdicts agreeing with the top answer (None: < 2)
    open_reason: str
    reviewers: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return self.status != PENDING


def decide(verdicts: Iterable[Verdict], min_submissions: int) -> ItemState:
    """The state of an item from all its verdicts. Pure; order of arrival does not matter."""
    eff = effective(verdicts)
    submits = [v for v in eff if v.action == "submit"]
    discards = [v for v in eff if v.action == "discard"]
    reviewers = tuple(sorted(v.reviewer for v in eff))
    counts = Counter(v.answer for v in submits)
    top, top_n = counts.most_common(1)[0] if counts else (None, 0)
    agreement = top_n / len(submits) if len(submits) >= 2 else None

    def state(status, answer=None, why=""):
        return ItemState(status, answer, len(submits), len(discards), agreement, why, reviewers)

    adjudications = [v for v in eff if v.adjudicate]
    if adjudications:
        last = adjudications[-1]
        return state(SUBMITTED, last.answer) if last.action == "submit" else state(DISCARDED)
    if len(counts) > 1:
        split = ", ".join(f"{n} x {a}" for a, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return state(PENDING, None, f"reviewers disagree ({split}): adjudicate")
    if top_n >= min_submissions:
        return state(SUBMITTED, top)
    if len(discards) >= min_submissions and not submits:
        return state(DISCARDED)
    have = max(top_n, len(discards))
    return state(PENDING, None, f"{have} of {min_submissions} verdicts" if have else "")


def route(kind: str, item_id: str, low_conf_gold_share: float) -> str:
    """Where a completed item goes: "gold" or "pool". Disagreements and live samples grow the
    gold set; a low-confidence item goes to gold when a hash of its id falls below the share,
    else it trains (deterministic: every process and every replay agrees)."""
    if kind != "low_conf":
        return "gold"
    h = xxhash.xxh3_64_intdigest(f"review-route:{item_id}".encode()) / 2**64
    return "gold" if h < low_conf_gold_share else "pool"


def shown_answers(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The answers a reviewer is shown, by who gave them. A low-confidence item's ``output`` is
    the teacher's; a disagreement's ``answers`` name the incumbent and the candidate."""
    answers = dict(obj.get("answers") or {})
    if not answers or obj["kind"] != "canary_disagreement":
        answers.setdefault("teacher" if obj["kind"] != "canary_disagreement" else "incumbent", obj["output"])
    return {k: v for k, v in answers.items() if v is not None}


def pool_message(item: Mapping[str, Any], state: ItemState, task: TaskConfig) -> dict[str, Any]:
    """The teacher.logs message that puts a completed low-confidence item into the training
    pool as a human-labelled example: curated like any example (dedupe, gold overlap), its
    id ``human:<item id>``, its teacher ``human``, its source in ``meta``."""
    meta = orjson.loads(item.get("meta") or "{}") or {}
    if task.slice_rule.source == "meta" and task.slice_rule.field not in meta:
        meta[task.slice_rule.field] = item["slice"]
    meta.update({"source": "review:" + item["kind"], "review_item": item["item_id"],
                 "reviewers": list(state.reviewers)})
    answer = state.answer
    output: Any = answer if task.labels is not None else orjson.loads(answer)
    return {"id": f"human:{item['item_id']}", "task": item["task"], "input": item["input"], "output": output,
            "confidence": 1.0, "teacher": "human", "meta": meta}
