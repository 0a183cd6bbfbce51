"""The curation decision: every teacher log gets exactly one outcome, in this order.

| outcome        | when                                                                  |
| -------------- | --------------------------------------------------------------------- |
| ``invalid``      | undecodable bytes, not JSON, fails the message schema, unknown task   |
| ``conflict``     | an id curated before, re-sent with other content (the first stands)    |
| ``off_schema``   | output is not one of the task's labels / fails its output schema      |
| ``low_conf``     | confidence below the task's floor                                      |
| ``gold_overlap`` | input is an exact or near duplicate of a gold example of the task      |
| ``exact_dupe``   | same normalised input as an earlier kept example of the task           |
| ``near_dupe``    | shingle Jaccard to an earlier kept example >= the task's threshold     |
| ``kept``         | all checks passed                                                      |

``check_*`` are pure functions of one event. ``Curator`` applies them to a batch in arrival
order with the per-task dedupe memory (no I/O: the Faust agent decodes nothing itself, it
hands raw bytes here and routes the decisions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
import orjson
import xxhash

from kernel.privacy import privacy_config
from kernel.similarity import exact_hash, id_hash, normalise, signatures
from kernel.tasks import TaskConfig, label_of, output_problem
from schemas.events import InvalidMessage, SchemaError, TeacherLog, load_message
from streams.curate.dedupe import DedupeIndex
from streams.curate.seen import SeenIds

OUTCOMES = ("invalid", "conflict", "off_schema", "low_conf", "gold_overlap", "exact_dupe", "near_dupe", "kept")


@dataclass(frozen=True, slots=True)
class Message:
    """A record as read from Kafka: the raw value bytes and where it came from."""

    value: bytes | None
    partition: int = 0
    offset: int = 0
    topic: str = "teacher.logs"
    timestamp: float | None = None  # the record's Kafka timestamp, seconds


@dataclass(slots=True)
class Decision:
    outcome: str
    reason: str
    message: Message
    log: TeacherLog | None = None
    label: str = ""
    slice: str = ""
    input_hash: int = 0
    matched_id: str = ""
    replay: bool = False  # kept earlier already (same id seen again)
    task: str = ""        # an invalid message's task, when its bytes name a declared one
    redactions: dict | None = None  # PII matches replaced in the input, per rule ([privacy])
    content_hash: int = 0  # of the log as sent (before redaction): what "same content" means


Invalid = InvalidMessage

_TASK_FIELD = re.compile(rb'"task"\s*:\s*"([A-Za-z0-9][A-Za-z0-9_.-]{0,127})"')


def task_of(raw: bytes | None, tasks: Mapping[str, TaskConfig]) -> str:
    """The declared task an invalid message names, read from its bytes (JSON or not: a
    truncated line usually still holds ``"task": "..."``); "" when none can be read."""
    if not raw:
        return ""
    try:
        doc = orjson.loads(raw)
        name = doc.get("task") if isinstance(doc, dict) else None
    except orjson.JSONDecodeError:
        m = _TASK_FIELD.search(raw)
        name = m.group(1).decode() if m else None
    return name if isinstance(name, str) and name in tasks else ""


def decode(raw: bytes | None, tasks: Mapping[str, TaskConfig]) -> TeacherLog:
    """Bytes to a validated TeacherLog of a known task, or Invalid naming the problem."""
    obj = load_message(raw, "teacher.logs.schema.json")
    try:
        log = TeacherLog.from_obj(obj, validated=True)
    except SchemaError as exc:
        raise Invalid(f"schema: {exc}") from None
    if log.task not in tasks:
        raise Invalid(f"unknown task {log.task!r}; declared tasks: {sorted(tasks)}")
    return log


def seen_key(task: str, event_id: str) -> int:
    """The key of an id in the seen-ids index: ids are unique within a task."""
    return id_hash(task + "\0" + event_id)


def content_hash(log: TeacherLog) -> int:
    """A 64-bit hash of what a teacher log says (input, output, confidence, teacher, meta),
    independent of how its JSON was laid out: a re-sent message hashes the same. ``ts`` is
    left out: a producer that stamps the send time re-sends the same call with a later one."""
    h = xxhash.xxh3_64()
    out = log.output if isinstance(log.output, str) else orjson.dumps(log.output, option=orjson.OPT_SORT_KEYS)
    for part in (log.input, out, repr(log.confidence), log.teacher):
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    if log.meta:
        h.update(orjson.dumps(log.meta, option=orjson.OPT_SORT_KEYS))
    return h.intdigest()


def check_output(log: TeacherLog, task: TaskConfig) -> str | None:
    """None when the output is valid for the task, else why not."""
    return output_problem(log.output, task)


def check_confidence(log: TeacherLog, task: TaskConfig) -> str | None:
    if log.confidence < task.min_confidence:
        return f"confidence {log.confidence:.3f} below the task's floor {task.min_confidence:.3f}"
    return None


class Curator:
    """Stateful curation of batches, deterministic for a given arrival order."""

    def __init__(self, tasks: Mapping[str, TaskConfig], capacity: int = 1_000_000) -> None:
        self.tasks = dict(tasks)
        self.capacity = capacity
        # a bad [privacy] section fails here, at start-up, naming the key
        self.privacy = {n: p for n, t in self.tasks.items() if (p := privacy_config(t)).enabled}
        self.pool: dict[str, DedupeIndex] = {}
        # ids curated before and their content, every task in one index
        self.seen = SeenIds(capacity * max(1, len(self.tasks)))
        self.gold: dict[str, DedupeIndex] = {}

    def _pool(self, task: str) -> DedupeIndex:
        idx = self.pool.get(task)
        if idx is None:
            idx = self.pool[task] = DedupeIndex(self.tasks[task].near_duplicate_threshold, self.capacity)
        return idx

    # -- state loading (from the warehouse at start-up, from gold sets when they change) ---
    def load_seen(self, task: str, ids: list[str], contents: list[int]) -> None:
        """Remember curated ids and their content hashes (0: unknown, never a conflict)."""
        self.seen.add_many([seen_key(task, i) for i in ids], contents)

    def load_pool(self, task: str, ids: list[str], inputs: list[str]) -> None:
        """Remember kept examples in arrival order (the most recent ``capacity`` survive)."""
        idx = self._pool(task)
        self._add(idx, self.tasks[task], ids, inputs)

    def load_gold(self, task: str, ids: list[str], inputs: list[str]) -> None:
        """Replace the task's gold memory with this gold set."""
        cfg = self.tasks[task]
        idx = self.gold[task] = DedupeIndex(cfg.near_duplicate_threshold, capacity=max(len(ids), 1))
        self._add(idx, cfg, ids, inputs)
        idx.compact()

    @staticmethod
    def _add(idx: DedupeIndex, cfg: TaskConfig, ids: list[str], inputs: list[str], chunk: int = 4096) -> None:
        for s in range(0, len(ids), chunk):
            norm = [normalise(x) for x in inputs[s:s + chunk]]
            sigs = signatures(norm, cfg.shingle_size)
            ex = np.fromiter((exact_hash(x) for x in norm), dtype=np.uint64, count=len(norm))
            idh = np.fromiter((id_hash(x) for x in ids[s:s + chunk]), dtype=np.uint64, count=len(norm))
            idx.add_many(ids[s:s + chunk], idh, sigs, idx.keys_for(sigs, ex))

    # -- the decision -------------------------------------------------------------------
    def curate(self, messages: Iterable[Message]) -> list[Decision]:
        decisions: list[Decision] = []
        valid: list[Decision] = []
        for msg in messages:
            try:
                log = decode(msg.value, self.tasks)
            except Invalid as exc:
                decisions.append(Decision("invalid", str(exc), msg, task=task_of(msg.value, self.tasks)))
                continue
            label = label_of(log.output)
            d = Decision("", "", msg, log, label, self.tasks[log.task].slice_rule.slice_of(label, log.meta))
            decisions.append(d)
            valid.append(d)
        if not valid:
            return decisions
        # ids seen before, looked up for the whole batch at once (one sorted-array search)
        keys = [seen_key(d.log.task, d.log.id) for d in valid]
        firsts = self.seen.get_many(keys)
        added: dict[int, int] = {}
        pending: dict[str, list[Decision]] = {}  # task -> decisions awaiting the dedupe stage
        for d, key, first in zip(valid, keys, firsts):
            log = d.log
            task = self.tasks[log.task]
            d.content_hash = content_hash(log)
            if first is None:
                first = added.get(key)
            if first is None:
                added[key] = d.content_hash
            privacy = self.privacy.get(log.task)
            if privacy is not None:  # before anything reads the input: the raw one goes nowhere
                log.input, counts = privacy.redact(log.input)
                d.redactions = counts or None
            if first is not None and first != d.content_hash and first != 0:
                d.outcome, d.matched_id = "conflict", log.id
                d.reason = (f"id {log.id!r} was curated before with other content (content hash "
                            f"{first:016x}, this one {d.content_hash:016x}): the first content stands; "
                            "both versions are in curation_events")
                continue
            reason = check_output(log, task)
            if reason:
                d.outcome, d.reason = "off_schema", reason
                continue
            reason = check_confidence(log, task)
            if reason:
                d.outcome, d.reason = "low_conf", reason
                continue
            pending.setdefault(log.task, []).append(d)
        for key, content in added.items():
            self.seen.add(key, content)
        for task_name, group in pending.items():
            self._dedupe(self.tasks[task_name], group)
        return decisions

    def _dedupe(self, cfg: TaskConfig, group: list[Decision]) -> None:
        norm = [normalise(d.log.input) for d in group]
        sigs = signatures(norm, cfg.shingle_size)
        ex = np.fromiter((exact_hash(x) for x in norm), dtype=np.uint64, count=len(norm))
        pool = self._pool(cfg.name)
        keys = pool.keys_for(sigs, ex)  # gold and pool share the threshold, so the same keys
        gold = self.gold.get(cfg.name)
        pre_pool = pool.prefetch(keys)
        pre_gold = gold.prefetch(keys) if gold is not None else None
        keys_l = keys.tolist()
        ex_l = ex.tolist()
        for i, d in enumerate(group):
            d.input_hash = ex_l[i]
            if gold is not None:
                g = gold.match(sigs[i], keys_l[i], None, pre_gold, i)
                if g is not None:
                    d.outcome, d.matched_id = "gold_overlap", g.entry_id
                    d.reason = (f"input {'equals' if g.kind == 'exact' else 'is a near duplicate of'} "
                                f"gold example {g.entry_id!r} (similarity {g.similarity:.2f})")
                    continue
            idh = id_hash(d.log.id)
            m = pool.match(sigs[i], keys_l[i], idh, pre_pool, i)
            if m is None:
                d.outcome = "kept"
                pool.add(d.log.id, idh, sigs[i], keys_l[i])
            elif m.kind == "self":
                d.outcome, d.replay, d.reason = "kept", True, "replayed event, kept before"
            elif m.kind == "exact":
                d.outcome, d.matched_id = "exact_dupe", m.entry_id
                d.reason = f"same normalised input as kept example {m.entry_id!r}"
            else:
                d.outcome, d.matched_id = "near_dupe", m.entry_id
                d.reason = (f"similarity {m.similarity:.2f} >= {cfg.near_duplicate_threshold:.2f} "
                            f"to kept example {m.entry_id!r}")
        pool.maybe_compact()
