"""Pure helpers of the canary: who is shadowed, what agrees, a pair, a review item."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from kernel.tasks import TaskConfig

_SPAN = float(1 << 64)


def in_canary(request_id: str, pct: float) -> bool:
    """Whether a request is also answered by the candidate: a hash of its id against ``pct``
    percent. Deterministic (a redelivered request decides the same) and nested (raising pct
    keeps every request a smaller pct chose)."""
    if pct <= 0:
        return False
    h = int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big")
    return h / _SPAN * 100.0 < pct


def asks_classify(student: str) -> bool:
    """Whether the candidate is asked through the model server's /classify (every encoder kind:
    LoRA, fully fine-tuned, frozen encoder + head) rather than chat completions (causal LMs)."""
    from serving.engine import CLASSIFIERS

    return student in CLASSIFIERS


def owner_partition(task: str, partitions: int) -> int:
    """The canary.pairs partition a task's pairs land on (they are keyed by task): Kafka's default
    partitioner, murmur2 of the key as the Java client and aiokafka (Faust's producer) compute it."""
    from aiokafka.partitioner import murmur2

    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, got {partitions}")
    return (murmur2(task.encode()) & 0x7FFFFFFF) % partitions


def judged_here(task: str, assigned: set[int], partitions: int, seen_on: int | None = None) -> bool:
    """Whether this worker runs the judge of ``task``: it is assigned the canary.pairs partition
    the task's key maps to (``seen_on``: the partition its pairs were actually read from, which
    wins over the computed one). The consumer group assigns each partition to one member, so
    exactly one worker of the group judges a task (none while a rebalance is under way)."""
    p = seen_on if seen_on is not None else owner_partition(task, partitions)
    return p in assigned


def _norm(x: Any) -> Any:
    if isinstance(x, str):
        return " ".join(x.split()).casefold()
    if isinstance(x, dict):
        return orjson.dumps(x, option=orjson.OPT_SORT_KEYS)
    return x


def agree(a: Any, b: Any) -> bool:
    """Same answer: labels and texts compared case- and whitespace-insensitively, objects by value.
    A missing answer (the candidate failed) agrees with nothing."""
    if a is None or b is None:
        return False
    return _norm(a) == _norm(b)


def paired_score(candidate: Any, incumbent: Any, teacher: Any) -> int | None:
    """+1 candidate right and incumbent wrong, -1 the reverse, 0 both or neither; None without a
    teacher answer or a candidate answer."""
    if teacher is None or candidate is None:
        return None
    c, i = agree(candidate, teacher), agree(incumbent, teacher)
    return int(c) - int(i)


def slice_of(task: TaskConfig, req: dict) -> str:
    """The slice of a live request: the task's slice rule applied to the served answer (a label
    task sliced by label) or to the request's meta."""
    out = req.get("output")
    label = out if isinstance(out, str) else ""
    return task.slice_rule.slice_of(label, req.get("meta") or {})


def pair(req: dict, slice_: str, candidate_version: str, answer: Any, latency_ms: float | None,
         error: str | None, ts: str) -> dict:
    """A canary.pairs message (schemas/json/canary.pairs.schema.json)."""
    obj = {"request_id": req["id"], "task": req["task"], "input": req["input"], "slice": slice_,
           "incumbent_version": req["model_version"], "incumbent_answer": req["output"],
           "candidate_version": candidate_version, "candidate_answer": answer,
           "teacher_answer": req.get("teacher_output"),
           "agree": None if error else agree(answer, req["output"]), "ts": ts, "schema_version": 1}
    if req.get("latency_ms") is not None:
        obj["incumbent_latency_ms"] = float(req["latency_ms"])
    if latency_ms is not None:
        obj["candidate_latency_ms"] = round(max(0.0, latency_ms), 3)
    if error:
        obj["error"] = error[:500]
    return obj


def review_item(p: dict) -> dict:
    """A review.queue item of kind canary_disagreement: both answers (and the teacher's, if any)."""
    return {"id": f"canary:{p['candidate_version']}:{p['request_id']}", "task": p["task"],
            "kind": "canary_disagreement", "input": p["input"],
            "output": p["candidate_answer"] if p["candidate_answer"] is not None else "",
            "slice": p["slice"],
            "reason": f"canary {p['candidate_version']} answered {p['candidate_answer']!r}, "
                      f"serving {p['incumbent_version']} answered {p['incumbent_answer']!r}",
            "answers": {"incumbent": p["incumbent_answer"], "candidate": p["candidate_answer"],
                        "teacher": p.get("teacher_answer")},
            "source": {"topic": "canary.pairs", "request_id": p["request_id"],
                       "incumbent_version": p["incumbent_version"], "candidate_version": p["candidate_version"]},
            "schema_version": 1}
