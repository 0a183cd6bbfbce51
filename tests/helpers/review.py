"""Review-stage helpers: a review.queue record, and running the review service on records."""

from __future__ import annotations

import asyncio

import orjson

from streams.review.service import Record


def item(i, input, kind="low_conf", output="food", answers=None):
    obj = {"id": i, "task": "tx", "kind": kind, "input": input, "output": output, "confidence": 0.4,
           "slice": "GB", "reason": "confidence 0.40 below 0.6", "schema_version": 1}
    if answers:
        obj["answers"] = answers
    return Record(orjson.dumps(obj), "review.queue", 0, 0, 1_700_000_000.0)


def run(service, records):
    dead, pool = [], []

    async def sd(k, v):
        dead.append(orjson.loads(v))

    async def sp(k, v):
        pool.append(orjson.loads(v))

    plan = asyncio.run(service.handle(records, sd, sp))
    return plan, dead, pool
