"""A corpus of hostile and broken inputs, interleaved with valid traffic, through a real worker
on the real broker: the worker stays up, every message gets exactly one outcome, and every
invalid one is a dead letter whose payload (or stored original) is the bytes that were sent."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.helpers.kafka import read_topic, tl
from tests.worker import WorkerProcess, wait_for

pytestmark = pytest.mark.integration

TASK = "transactions"


def obj(**changes):
    base = {"id": "x", "ts": "2026-11-21T10:00:00Z", "task": TASK, "input": "SOME SHOP 1", "output": "groceries",
            "confidence": 0.9, "teacher": "t", "meta": {"country": "GB"}, "schema_version": 1}
    for k, v in changes.items():
        if v is ...:
            base.pop(k)
        else:
            base[k] = v
    return base


def j(**changes) -> bytes:
    return orjson.dumps(obj(**changes))


def deep(n: int) -> bytes:
    return b'{"id":"deep%d","ts":"2026-11-21T10:00:00Z","task":"transactions","input":"deep","output":"groceries",' \
           b'"confidence":0.9,"teacher":"t","schema_version":1,"meta":{"x":' % n + b"[" * n + b"]" * n + b"}}"


# (kind, value as sent, the outcome it must get; None: any valid outcome, not invalid)
CORPUS: list[tuple[str, bytes | None, str | None]] = [
    ("binary", os.urandom(300), "invalid"),
    ("invalid utf-8 in a string", b'{"id":"u1","input":"caf\xe9 \xff\xfe"}', "invalid"),
    ("empty value", b"", "invalid"),
    ("null value", None, "invalid"),
    ("json null", b"null", "invalid"),
    ("json array", b"[1,2,3]", "invalid"),
    ("json number", b"42", "invalid"),
    ("json string", b'"hello"', "invalid"),
    ("whitespace only", b"   \n\t ", "invalid"),
    ("truncated json", j(id="tr")[:-7], "invalid"),
    ("trailing garbage", j(id="tg") + b" trailing", "invalid"),
    ("utf-8 bom", b"\xef\xbb\xbf" + j(id="bom"), "invalid"),
    ("nesting past the parser's limit", deep(5000), "invalid"),
    ("NaN literal", j(id="nan").replace(b'"confidence":0.9', b'"confidence":NaN'), "invalid"),
    ("Infinity literal", j(id="inf").replace(b'"confidence":0.9', b'"confidence":Infinity'), "invalid"),
    ("huge number", j(id="huge").replace(b'"confidence":0.9', b'"confidence":1e999'), "invalid"),
    ("integer past 64 bits in meta", j(id="bigint", meta={}).replace(b'"meta":{}', b'"meta":{"n":' + b"9" * 40 + b"}"),
     None),  # read as a float
    ("confidence above 1", j(id="c2", confidence=2.5), "invalid"),
    ("confidence as a string", j(id="cs", confidence="0.9"), "invalid"),
    ("ts out of range in UTC", j(id="ts1", ts="9999-12-31T23:59:59-10:00"), "invalid"),
    ("ts without a zone", j(id="ts2", ts="2026-11-21T10:00:00"), "invalid"),
    ("ts not a time", j(id="ts3", ts="yesterday"), "invalid"),
    ("unknown task", j(id="ut", task="no-such-task"), "invalid"),
    ("missing id", j(id=...), "invalid"),
    ("id a number", j(id=12345), "invalid"),
    ("output a number", j(id="on", output=7), "invalid"),
    ("meta a list", j(id="ml", meta=[1, 2]), "invalid"),
    ("schema_version 2", j(id="sv", schema_version=2), "invalid"),
    ("lone surrogate", j(id="ls").replace(b"SOME SHOP 1", b"\\ud800 shop"), "invalid"),
    ("1 MB invalid", j(id="big1", task="nope", input="A" * 1_000_000), "invalid"),
    ("5 MB invalid", os.urandom(5_000_000), "invalid"),
    # valid, if odd: each gets its ordinary outcome
    ("year 1", j(id="y1", ts="0001-01-01T00:00:00Z", input="ANCIENT SHOP 0001"), None),
    ("year 9999", j(id="y9", ts="9999-12-30T00:00:00Z", input="FUTURE SHOP 9999"), None),
    ("nesting under the limit", deep(200), None),
    ("sql in the input", j(id="sql1", input="'; DROP TABLE examples; --"), "kept"),
    ("sql in the id", j(id="x'); DROP TABLE curation_events; --", input="ROBERT TABLES LTD"), "kept"),
    ("nul and control characters", j(id="ctl", input="SHOP\u0000\u0001\u001f NAME"), "kept"),
    ("emoji, rtl, combining", j(id="uni", input="café ☕ שלום e\u0301 🏳️‍🌈"), "kept"),
    ("duplicate keys (the last wins)", j(id="dk").replace(b'{"id":"dk"', b'{"id":"first","id":"dk"'), None),
    ("off-label output", j(id="off", output="crypto", input="COINBASE"), "off_schema"),
    ("1 MB input (past the schema's 100,000 characters)", j(id="bigin", input="B" * 1_000_000), "invalid"),
    ("90 KB input", j(id="bigok", input="B" * 90_000), "kept"),
    ("re-sent id, other content", tl("v0000", "A COMPLETELY DIFFERENT INPUT"), "conflict"),
    ("re-sent id, other confidence", None, "conflict"),   # filled in below: v0001's input, confidence 0.1
]


def valid_input(i: int) -> str:
    return "SHOP " + hashlib.sha1(str(i).encode()).hexdigest()[:24].upper()


def valid(i: int) -> bytes:
    return tl(f"v{i:04d}", valid_input(i))


CORPUS[-1] = ("re-sent id, other confidence", tl("v0001", valid_input(1), confidence=0.1), "conflict")


async def publish_all(servers, values):
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", max_request_size=8_000_000, linger_ms=5)
    await producer.start()
    try:
        futs = [await producer.send("teacher.logs", v, key=TASK.encode()) for v in values]
        return [await f for f in futs]
    finally:
        await producer.stop()


async def dead_letters(servers, expect, timeout=60.0):
    return await read_topic(servers, "dead.letters", expect, timeout, settle=False,
                            fetch_max_bytes=8_000_000, max_partition_fetch_bytes=8_000_000)


def test_bad_input_corpus_interleaved_with_valid_traffic(settings, tmp_path):
    assert len(CORPUS) >= 30 + 10
    stream: list[tuple[str, bytes | None, str | None]] = []
    for i in range(4):                         # the first valid ones, so that re-sent ids exist
        stream.append(("valid", valid(i), "kept"))
    for n, item in enumerate(CORPUS):
        stream.append(item)
        for k in range(3):
            i = 4 + 3 * n + k
            stream.append(("valid", valid(i), "kept"))
    env = {"FLYWHEEL_SINK_BATCH_ROWS": "50"}
    with WorkerProcess(settings, tmp_path / "worker.log", extra_env=env) as worker:
        sent = asyncio.run(publish_all(settings.kafka.servers, [v for _, v, _ in stream]))
        where = [(md.partition, md.offset) for md in sent]
        assert len(set(where)) == len(stream)
        store = worker.store()
        wait_for(lambda: store.scalar("SELECT count() FROM curation_events FINAL") >= len(stream), timeout=120,
                 what="every message curated")
        rows = store.rows("SELECT id, outcome, reason, source_partition AS p, source_offset AS o "
                          "FROM curation_events FINAL")
        by_place: dict[tuple[int, int], list[dict]] = {}
        for r in rows:
            by_place.setdefault((r["p"], r["o"]), []).append(r)
        # exactly one outcome per message sent, and nothing else
        assert len(rows) == len(stream)
        assert sorted(by_place) == sorted(where) and all(len(v) == 1 for v in by_place.values())
        for (kind, value, expected), place in zip(stream, where):
            got = by_place[place][0]
            if expected is None:
                assert got["outcome"] != "invalid", (kind, got)
            else:
                assert got["outcome"] == expected, (kind, got)

        # every invalid message is a dead letter carrying (or pointing at) exactly the sent bytes
        invalid = [(kind, value, place) for (kind, value, expected), place in zip(stream, where)
                   if by_place[place][0]["outcome"] == "invalid"]
        letters = {(d["partition"], d["offset"]): d for d in
                   asyncio.run(dead_letters(settings.kafka.servers, len(invalid)))}
        assert len(letters) == len(invalid)
        for kind, value, place in invalid:
            d = letters[place]
            raw = value or b""
            assert d["original_size"] == len(raw) and d["original_sha256"] == hashlib.sha256(raw).hexdigest(), kind
            assert bool(d.get("original_null")) == (value is None), kind
            if d.get("original_truncated"):
                stored = store.rows("SELECT payload_b64 FROM dead_letter_payloads FINAL "
                                    f"WHERE sha256 = '{d['original_sha256']}'")
                assert len(stored) == 1 and base64.b64decode(stored[0]["payload_b64"]) == raw, kind
            else:
                assert base64.b64decode(d["original_b64"]) == raw, kind
            assert "Traceback" not in d["reason"] and d["reason"], kind

        # first content wins; the SQL-looking strings were data, not statements
        assert store.scalar("SELECT input FROM examples FINAL WHERE id = 'v0000'") == valid_input(0)
        assert store.scalar("SELECT count() FROM examples FINAL WHERE id = 'v0001'") == 1
        assert store.scalar("SELECT count() FROM examples FINAL WHERE id = 'sql1'") == 1
        kept = store.scalar("SELECT count() FROM curation_events FINAL WHERE outcome = 'kept'")
        assert store.scalar("SELECT count() FROM examples FINAL") == kept     # the two tables agree

        # the worker is still up and curating
        assert worker.proc.poll() is None
        asyncio.run(publish_all(settings.kafka.servers, [tl("after", "A SHOP AFTER THE STORM")]))
        wait_for(lambda: store.rows("SELECT outcome FROM curation_events FINAL WHERE id = 'after'"),
                 what="a message after the corpus")
    assert worker.proc.returncode == 0
