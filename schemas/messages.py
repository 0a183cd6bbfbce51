"""Building the messages flywheel publishes: every one is validated against its topic's JSON
Schema before it leaves (fastjsonschema: a few µs a message), so a producer bug fails loudly
here instead of becoming a dead letter in someone else's consumer.

``encode(topic, obj)`` is the one way to turn a message into bytes; ``dead_letter`` is the one
builder of dead letters, used by every agent and worker.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timezone

import orjson

from schemas.events import SCHEMA_VERSION, validate
from schemas.timefmt import rfc3339
from schemas.topics import BY_NAME, DEAD_LETTERS, Topic


def encode(topic: Topic | str, obj: dict) -> bytes:
    """Validate ``obj`` against the topic's schema (adding ``schema_version``) and encode it."""
    t = BY_NAME[topic] if isinstance(topic, str) else topic
    obj.setdefault("schema_version", SCHEMA_VERSION)
    if t.schema:
        validate(t.schema, obj)
    return orjson.dumps(obj)


# Kafka producers refuse a request over 1,000,000 bytes by default (max.request.size ~1 MiB in
# aiokafka): a dead letter must stay well under it, or its batch is retried forever.
DEAD_LETTER_MAX_BYTES = 900_000
# What a dead letter carries of an original that would not fit: its head, for a first look.
TRUNCATED_HEAD_BYTES = 64 * 1024
# Reasons quote what they reject; keep them readable.
REASON_MAX_CHARS = 2_000


def dead_letter(*, source_topic: str, partition: int, offset: int, reason: str, original: bytes | None,
                id: str | None = None, dead_at: datetime | None = None) -> tuple[bytes, bytes]:
    """(key, value) of a dead letter: the reason and the original bytes (base64).

    Every dead letter names the original's size and sha256, and whether the record value was
    null (``original_null``) rather than empty. When the whole envelope would pass
    DEAD_LETTER_MAX_BYTES it carries only the first TRUNCATED_HEAD_BYTES of the original
    (``original_truncated``): whoever publishes it must first store the full original with
    ``dead_letter_payload_row`` (table dead_letter_payloads, keyed by sha256), so nothing is
    lost. ``needs_payload_row(original)`` says when.
    """
    raw = original or b""
    if len(reason) > REASON_MAX_CHARS:
        reason = reason[:REASON_MAX_CHARS] + f"... ({len(reason) - REASON_MAX_CHARS} more characters)"
    truncated = needs_payload_row(original)
    body = raw[:TRUNCATED_HEAD_BYTES] if truncated else raw
    value = {
        "source_topic": source_topic, "partition": partition, "offset": offset, "id": id, "reason": reason,
        "original_b64": base64.b64encode(body).decode(), "dead_at": rfc3339(dead_at, "auto"),
        "original_size": len(raw), "original_sha256": hashlib.sha256(raw).hexdigest(),
    }
    if original is None:
        value["original_null"] = True
    if truncated:
        value["original_truncated"] = True
        value["original_stored"] = "dead_letter_payloads"
    return source_topic.encode(), encode(DEAD_LETTERS, value)


def needs_payload_row(original: bytes | None) -> bool:
    """Whether a dead letter of ``original`` carries only its head (the rest goes to
    dead_letter_payloads). Base64 makes 4 bytes of 3; 8 KB is left for the envelope."""
    return original is not None and (len(original) + 2) // 3 * 4 > DEAD_LETTER_MAX_BYTES - 8_192


def dead_letter_payload_row(*, source_topic: str, partition: int, offset: int, original: bytes,
                            dead_at: datetime | None = None) -> dict:
    """A row of dead_letter_payloads: the full original of a truncated dead letter. The payload
    is stored as base64 (String columns take any bytes, but the rows travel as JSON)."""
    return {
        "sha256": hashlib.sha256(original).hexdigest(), "source_topic": source_topic,
        "source_partition": partition, "source_offset": offset, "size": len(original),
        "payload_b64": base64.b64encode(original).decode(),
        "dead_at": dead_at or datetime.now(timezone.utc),
    }
