"""Decisions to warehouse rows and topic messages: pure functions, no I/O."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import xxhash

from schemas import messages
from schemas.timefmt import rfc3339
from schemas.topics import REVIEW_QUEUE
from streams.curate.policy import Decision


def event_id(d: Decision) -> str:
    """The event id; for an invalid message a hash of its raw bytes (not of where it was read:
    a replay, or the same file published again, is the same event and counts once)."""
    if d.log is not None:
        if d.outcome == "conflict":  # its own row: the first content's row stays as it is
            return f"{d.log.id}#conflict-{d.content_hash:016x}"
        return d.log.id
    m = d.message
    if m.value is None:  # a null record value is not the empty one (whose hash is of b"")
        return f"invalid:{m.topic}:null"
    return f"invalid:{m.topic}:{xxhash.xxh3_128_hexdigest(m.value)}"


def message_time(d: Decision) -> datetime:
    """The event's time: the log's own ts, else the Kafka record's timestamp."""
    if d.log is not None:
        return d.log.ts
    return datetime.fromtimestamp(d.message.timestamp or 0.0, timezone.utc)


def curation_event_row(d: Decision, curated_at: datetime) -> dict:
    log = d.log
    return {
        "id": event_id(d),
        "ts": log.ts if log is not None else message_time(d),
        "task": log.task if log else d.task,
        "outcome": d.outcome,
        "reason": d.reason,
        "slice": d.slice,
        "label": d.label,
        "confidence": log.confidence if log else None,
        "teacher": log.teacher if log else "",
        "input_hash": d.input_hash,
        "matched_id": d.matched_id,
        "source_partition": d.message.partition,
        "source_offset": d.message.offset,
        "curated_at": curated_at,
        "redactions": d.redactions or {},
        # the example's own columns: examples_mv derives `examples` from the kept rows, so
        # one insert writes both tables (conflicts keep their version here for review)
        "input": log.input if log else "",
        "meta": orjson.dumps(log.meta).decode() if log and log.meta else "{}",
        "content_hash": d.content_hash,
    }


def example_row(d: Decision, curated_at: datetime) -> dict:
    """A row of ``examples`` as examples_mv derives it from a kept curation_events row (for
    tools that write examples directly; the curate pipeline writes only curation_events)."""
    log = d.log
    return {
        "id": log.id, "ts": log.ts, "task": log.task, "input": log.input, "output": d.label,
        "slice": d.slice, "confidence": log.confidence, "teacher": log.teacher,
        "meta": orjson.dumps(log.meta).decode(), "input_hash": d.input_hash,
        "source_partition": d.message.partition, "source_offset": d.message.offset,
        "curated_at": curated_at,
    }


def dead_letter(d: Decision, dead_at: datetime) -> tuple[bytes, bytes]:
    """(key, value) for dead.letters: the reason and the original bytes, base64."""
    m = d.message
    return messages.dead_letter(source_topic=m.topic, partition=m.partition, offset=m.offset, reason=d.reason,
                                original=m.value, id=d.log.id if d.log else None, dead_at=dead_at)


# A review item must stay under the producer's 1,000,000-byte request limit like a dead letter:
# a longer input travels as its head (the whole input is in curation_events.input).
REVIEW_INPUT_MAX_CHARS = 200_000


def review_item(d: Decision) -> tuple[bytes, bytes]:
    log = d.log
    text = log.input
    extra = {}
    if len(text) > REVIEW_INPUT_MAX_CHARS or len(orjson.dumps(log.output)) > REVIEW_INPUT_MAX_CHARS:
        extra = {"input_truncated": True, "input_chars": len(text), "full_input_in": "curation_events"}
        text = text[:REVIEW_INPUT_MAX_CHARS]
    value = {
        **extra,
        "id": log.id, "task": log.task, "kind": "low_conf", "input": text, "output": log.output,
        "confidence": log.confidence, "slice": d.slice, "reason": d.reason,
        "source": {"topic": d.message.topic, "partition": d.message.partition, "offset": d.message.offset,
                   "teacher": log.teacher, "ts": rfc3339(log.ts, "auto")},
    }
    return log.task.encode(), messages.encode(REVIEW_QUEUE, value)


def batch_token(ids: list[str], table: str) -> str:
    """Insert deduplication token from a batch's content: a retried identical batch is dropped;
    offsets are not used because the embedded broker restarts them from 0."""
    h = xxhash.xxh3_128()
    h.update(table.encode())
    for i in ids:
        h.update(i.encode())
        h.update(b"\0")
    return h.hexdigest()


def dead_letter_payload_rows(decisions: list[Decision], dead_at: datetime) -> list[dict]:
    """Rows of dead_letter_payloads for the invalid messages whose dead letter carries only the
    head of the original (over ~900 KB once base64'd). Insert them before the dead letters
    are published, and before the batch is acked, so no original is ever lost."""
    out = []
    for d in decisions:
        m = d.message
        if d.outcome == "invalid" and messages.needs_payload_row(m.value):
            out.append(messages.dead_letter_payload_row(source_topic=m.topic, partition=m.partition,
                                                        offset=m.offset, original=m.value, dead_at=dead_at))
    return out
