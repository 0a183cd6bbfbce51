"""Error messages for inputs that used to confuse: out-of-range times, null versus empty."""

from __future__ import annotations

import base64

import orjson
import pytest

from schemas import messages
from schemas.events import InvalidMessage, SchemaError, load_message, parse_ts
from streams.curate.policy import decode


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-10:00", "0001-01-01T00:00:00+10:00"])
def test_a_time_outside_the_calendar_in_utc_is_a_schema_error(value):
    with pytest.raises(SchemaError, match="out of range") as err:
        parse_ts(value)
    assert "Traceback" not in str(err.value) and "Overflow" not in str(err.value) and value in str(err.value)


def test_the_curator_names_the_time_problem():
    raw = orjson.dumps({"id": "x", "ts": "9999-12-31T23:59:59-10:00", "task": "t", "input": "i", "output": "o",
                        "confidence": 0.9, "teacher": "g", "schema_version": 1})
    with pytest.raises(Exception) as err:
        decode(raw, {})
    assert "out of range" in str(err.value) and "File " not in str(err.value)


def test_null_and_empty_are_told_apart():
    with pytest.raises(InvalidMessage, match="null value") as null:
        load_message(None, "teacher.logs.schema.json")
    with pytest.raises(InvalidMessage, match="0 bytes") as empty:
        load_message(b"", "teacher.logs.schema.json")
    assert str(null.value) != str(empty.value)
    _, a = messages.dead_letter(source_topic="teacher.logs", partition=0, offset=1, reason=str(null.value), original=None)
    _, b = messages.dead_letter(source_topic="teacher.logs", partition=0, offset=2, reason=str(empty.value), original=b"")
    a, b = orjson.loads(a), orjson.loads(b)
    assert a["original_null"] is True and "original_null" not in b
    assert base64.b64decode(a["original_b64"]) == base64.b64decode(b["original_b64"]) == b""
