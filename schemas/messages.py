"""Building the messages flywheel publishes: every one is validated against its topic's JSON
Schema before it leaves (fastjsonschema: a few µs a message), so a producer bug fails loudly
here instead of becoming a dead letter in someone else's consumer.

``encode(topic, obj)`` is the one way to turn a message into bytes; ``dead_letter`` is the one
builder of dead letters, used by every agent and worker.
"""

from __future__ import annotations

import base64
from datetime import datetime

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


def dead_letter(*, source_topic: str, partition: int, offset: int, reason: str, original: bytes | None,
                id: str | None = None, dead_at: datetime | None = None) -> tuple[bytes, bytes]:
    """(key, value) of a dead letter: the reason and the original bytes (base64)."""
    value = {
        "source_topic": source_topic, "partition": partition, "offset": offset, "id": id, "reason": reason,
        "original_b64": base64.b64encode(original or b"").decode(), "dead_at": rfc3339(dead_at, "auto"),
    }
    return source_topic.encode(), encode(DEAD_LETTERS, value)
