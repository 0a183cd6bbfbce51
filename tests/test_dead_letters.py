"""Dead letters never exceed the producer's request limit, and no original is lost: real chdb,
the real embedded broker, 1 MB and 5 MB messages."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from datetime import datetime, timezone

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas import messages
from schemas.events import validate
from streams.curate.policy import Decision, Message
from streams.curate.rows import dead_letter, dead_letter_payload_rows

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=timezone.utc)


def envelope(original, reason="not JSON"):
    key, value = messages.dead_letter(source_topic="teacher.logs", partition=2, offset=7, reason=reason,
                                      original=original, dead_at=NOW)
    return key, value, orjson.loads(value)


@pytest.mark.parametrize("size", [1_000_000, 5_000_000])
def test_large_original_is_truncated_with_size_and_hash(size):
    original = os.urandom(size)
    _, value, obj = envelope(original)
    assert len(value) < 1_000_000 and len(value) <= messages.DEAD_LETTER_MAX_BYTES
    validate("dead.letters.schema.json", obj)
    assert obj["original_truncated"] is True and obj["original_stored"] == "dead_letter_payloads"
    assert obj["original_size"] == size
    assert obj["original_sha256"] == hashlib.sha256(original).hexdigest()
    assert base64.b64decode(obj["original_b64"]) == original[:messages.TRUNCATED_HEAD_BYTES]


def test_small_original_is_carried_whole_and_null_differs_from_empty():
    _, _, small = envelope(b"{bad json")
    assert base64.b64decode(small["original_b64"]) == b"{bad json" and "original_truncated" not in small
    assert small["original_size"] == 9
    _, _, null = envelope(None, "empty message (null value)")
    _, _, empty = envelope(b"", "not JSON: empty")
    assert null["original_null"] is True and "original_null" not in empty
    assert null["original_size"] == empty["original_size"] == 0
    just_under = b"x" * (messages.DEAD_LETTER_MAX_BYTES * 3 // 4 - 10_000)
    _, value, obj = envelope(just_under)
    assert "original_truncated" not in obj and len(value) < messages.DEAD_LETTER_MAX_BYTES


def test_a_huge_reason_is_cut():
    _, value, obj = envelope(b"x", "schema: " + "y" * 2_000_000)
    assert len(value) < 10_000 and obj["reason"].endswith("more characters)")


def test_originals_are_stored_in_the_warehouse_and_match(store):
    big = os.urandom(5_000_000)
    one_mb = b'{"id": "' + b"a" * 1_000_000 + b'"'
    decisions = [Decision("invalid", "too big", Message(big, 1, 10, "teacher.logs", 0.0)),
                 Decision("invalid", "not JSON", Message(one_mb, 0, 11, "teacher.logs", 0.0)),
                 Decision("invalid", "not JSON", Message(b"{", 0, 12, "teacher.logs", 0.0)),
                 Decision("invalid", "empty message (null value)", Message(None, 0, 13, "teacher.logs", 0.0))]
    rows = dead_letter_payload_rows(decisions, NOW)
    assert [r["source_offset"] for r in rows] == [10, 11]
    store.insert("dead_letter_payloads", rows)
    store.insert("dead_letter_payloads", rows)  # a replay collapses
    for d in decisions[:2]:
        _, _, obj = envelope(d.message.value)
        got = store.rows(f"SELECT size, lower(hex(SHA256(base64Decode(payload_b64)))) AS h, length(base64Decode(payload_b64)) AS n "
                         f"FROM dead_letter_payloads FINAL WHERE sha256 = '{obj['original_sha256']}'")
        assert got == [{"size": len(d.message.value), "h": obj["original_sha256"], "n": len(d.message.value)}]
    assert store.scalar("SELECT count() FROM dead_letter_payloads FINAL") == 2


def test_the_envelope_of_a_5mb_message_is_accepted_by_a_default_producer(broker):
    big = os.urandom(5_000_000)
    decision = Decision("invalid", "not JSON", Message(big, 0, 3, "teacher.logs", 0.0))
    key, value = dead_letter(decision, NOW)

    async def roundtrip():
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")  # default limits
        await producer.start()
        try:
            await producer.send_and_wait("dead.letters", value, key=key)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer("dead.letters", bootstrap_servers=broker.bootstrap,
                                    auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        try:
            batch = await consumer.getmany(timeout_ms=5000)
            return [r.value for records in batch.values() for r in records]
        finally:
            await consumer.stop()

    from dataclasses import replace

    from kernel.broker import ensure_topics
    from kernel.settings import load_settings

    s = load_settings({})
    asyncio.run(ensure_topics(replace(s.kafka, bootstrap=broker.bootstrap)))
    got = asyncio.run(roundtrip())
    assert len(got) == 1
    obj = orjson.loads(got[0])
    assert obj["original_sha256"] == hashlib.sha256(big).hexdigest() and obj["original_size"] == 5_000_000
