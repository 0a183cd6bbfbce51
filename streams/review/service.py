"""What the review agent does with a batch of records from review.queue and review.verdicts.

``plan`` reads the store and decides everything (no writes); ``apply`` makes the plan durable in
the order that keeps a crash safe: dead letters and pool examples are published first (their
ids make them idempotent), then verdict rows, item rows and routing rows are written, and only
then may the agent ack the batch. A replayed batch changes nothing: a known item is not
re-inserted (its state would reset), a known verdict_id is a duplicate, and item states are
recomputed from all verdicts, so a batch that failed half way is healed by its replay.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import orjson

from kernel.retry import retry_forever
from kernel.tasks import TaskConfig
from kernel.warehouse import Warehouse, WarehouseError
from kernel.warehouse.remote import OwnerUnreachable
from schemas import messages
from schemas.events import InvalidMessage, SchemaError, load_message, parse_ts
from schemas.timefmt import rfc3339
from schemas.topics import REVIEW_QUEUE, REVIEW_VERDICTS, TEACHER_LOGS
from streams.review import store as rs
from streams.review.config import ReviewConfig, review_config
from streams.review.policy import (SUBMITTED, BadVerdict, ItemState, Verdict, decide, parse_verdict, pool_message,
                                   route)

log = logging.getLogger("flywheel.review")

Send = Callable[[bytes, bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Record:
    value: bytes | None
    topic: str
    partition: int = 0
    offset: int = 0
    timestamp: float | None = None  # Kafka record timestamp, seconds


@dataclass
class Plan:
    dead: list[tuple[bytes, bytes]] = field(default_factory=list)
    pool: list[tuple[bytes, bytes]] = field(default_factory=list)
    item_rows: list[dict] = field(default_factory=list)
    verdict_rows: list[dict] = field(default_factory=list)
    routing_rows: list[dict] = field(default_factory=list)
    grow_tasks: set[str] = field(default_factory=set)
    counts: Counter = field(default_factory=Counter)


class ReviewService:
    def __init__(self, tasks: dict[str, TaskConfig], store: Warehouse) -> None:
        self.tasks = tasks
        self.store = store
        self.configs: dict[str, ReviewConfig] = {n: review_config(t) for n, t in tasks.items()}
        self.counts: Counter = Counter()

    # ------------------------------------------------------------ deciding

    def _dead(self, plan: Plan, rec: Record, reason: str, id: str | None = None) -> None:
        plan.dead.append(messages.dead_letter(source_topic=rec.topic, partition=rec.partition, offset=rec.offset,
                                              reason=reason, original=rec.value, id=id))
        plan.counts["dead"] += 1

    def plan(self, records: list[Record], now: datetime | None = None) -> Plan:
        now = now or datetime.now(timezone.utc)
        plan = Plan()
        items_in: list[tuple[Record, dict]] = []
        verdicts_in: list[tuple[Record, Verdict]] = []
        for rec in records:
            try:
                if rec.topic == REVIEW_QUEUE.name:
                    obj = load_message(rec.value, REVIEW_QUEUE.schema)
                    if obj["task"] not in self.tasks:
                        self._dead(plan, rec, f"unknown task {obj['task']!r}", obj["id"])
                        continue
                    items_in.append((rec, obj))
                elif rec.topic == REVIEW_VERDICTS.name:
                    obj = load_message(rec.value, REVIEW_VERDICTS.schema)
                    verdicts_in.append((rec, parse_verdict(obj, self.tasks.get(obj["task"]))))
                else:
                    self._dead(plan, rec, f"the review agent does not read topic {rec.topic!r}")
            except InvalidMessage as exc:
                self._dead(plan, rec, str(exc))
            except BadVerdict as exc:
                self._dead(plan, rec, str(exc), _id_of(rec))

        keys = {(o["task"], o["id"]) for _, o in items_in} | {(v.task, v.item_id) for _, v in verdicts_in}
        existing = rs.load_items(self.store, keys)
        new_rows: dict[rs.Key, dict] = {}
        for rec, obj in items_in:
            key = (obj["task"], obj["id"])
            if key in existing or key in new_rows:
                plan.counts["items_replayed"] += 1
                continue
            new_rows[key] = rs.item_row(obj, _arrival(obj, rec, now))
            plan.counts["items_new"] += 1

        vkeys = {(v.task, v.item_id) for _, v in verdicts_in}
        stored = rs.load_verdicts(self.store, [k for k in vkeys if k in existing])
        routed = rs.load_routing(self.store, [k for k in vkeys if k in existing])
        per_item = {k: list(stored.get(k, ())) for k in vkeys}
        by_id = {(k, v.verdict_id): v for k, vs in per_item.items() for v in vs}
        touched: list[rs.Key] = []
        for rec, v in verdicts_in:
            key = (v.task, v.item_id)
            if key not in existing and key not in new_rows:
                self._dead(plan, rec, f"unknown review item {v.item_id!r} of task {v.task!r}: no such item has "
                                      "arrived on review.queue (check item_id and task)", v.verdict_id)
                continue
            prior = by_id.get((key, v.verdict_id))
            if prior is not None:
                if not prior.same_as(v):
                    self._dead(plan, rec, f"verdict_id {v.verdict_id!r} was already used for a different verdict; "
                                          "give every verdict its own id", v.verdict_id)
                    continue
                plan.counts["verdicts_duplicate"] += 1
            else:
                per_item[key].append(v)
                by_id[(key, v.verdict_id)] = v
                plan.verdict_rows.append(rs.verdict_row(v, now))
                plan.counts["verdicts_new"] += 1
            if key not in touched:
                touched.append(key)

        for key in touched:
            row = new_rows.get(key) or existing[key]
            cfg = self.configs[key[0]]
            state = decide(per_item[key], cfg.min_submissions)
            where = route(row["kind"], row["item_id"], cfg.low_conf_gold_share)
            used = routed.get(key)
            if used is not None and (state.status, state.answer) != (row["status"], row.get("answer")):
                # the answer already grew a gold version or trained: late verdicts are recorded, not applied
                state = ItemState(row["status"], row.get("answer"), state.n_submitted, state.n_discarded,
                                  state.agreement, f"late verdicts differ from the answer already used "
                                  f"({used['destination']} {used['outcome']})", state.reviewers)
            new = rs.with_state(row, state, where, now)
            if rs.state_of(new) != rs.state_of(row) or key in new_rows:
                if key in new_rows:
                    new_rows[key] = new
                else:
                    plan.item_rows.append(new)
            if state.status == SUBMITTED and row["status"] != SUBMITTED:
                plan.counts["completed"] += 1
                if where == "gold" and row["kind"] == "canary_disagreement":
                    plan.grow_tasks.add(key[0])
            if state.status == SUBMITTED and where == "pool" and used is None:
                obj = pool_message(new, state, self.tasks[key[0]])
                obj["ts"] = rfc3339(now)
                plan.pool.append((key[0].encode(), messages.encode(TEACHER_LOGS, obj)))
                plan.routing_rows.append(rs.routing_row(key[0], key[1], "pool", "published",
                                                        reason=f"published as {obj['id']} on teacher.logs"))
                plan.counts["published_to_pool"] += 1
        plan.item_rows = list(new_rows.values()) + plan.item_rows
        return plan

    # ------------------------------------------------------------ writing

    def write(self, plan: Plan) -> None:
        if plan.verdict_rows:
            self.store.insert("review_verdicts", plan.verdict_rows)
        if plan.item_rows:
            self.store.insert("review_items", plan.item_rows)
        if plan.routing_rows:
            self.store.insert("review_routing", plan.routing_rows)

    async def handle(self, records: list[Record], send_dead: Send, send_pool: Send,
                     flush: Callable[[], Awaitable[None]] | None = None) -> Plan:
        """Plan and make durable. Store and broker failures are retried until they succeed (the
        batch stays unacknowledged meanwhile); a bug in planning isolates the record that trips it
        and dead-letters it. Never raises (except cancellation)."""
        plan = await self._plan_safely(records)

        async def publish() -> None:
            for key, value in plan.dead:
                await send_dead(key, value)
            for key, value in plan.pool:
                await send_pool(key, value)
            if flush is not None:
                await flush()

        if plan.dead or plan.pool:
            await retry_forever("publish review dead letters and pool examples", publish, log=log)
        await retry_forever("write review rows to ClickHouse", asyncio.to_thread, self.write, plan, log=log)
        self.counts.update(plan.counts)
        return plan

    async def _plan_safely(self, records: list[Record]) -> Plan:
        result: list[Plan] = []

        async def attempt() -> None:
            try:
                result.append(await asyncio.to_thread(self.plan, records))
            except Exception as exc:
                if _is_store_error(exc):
                    raise
                log.exception("planning a review batch failed; retrying record by record")
                merged = Plan()
                for rec in records:
                    try:
                        p = await asyncio.to_thread(self.plan, [rec])
                    except Exception as one:
                        if _is_store_error(one):
                            raise
                        p = Plan()
                        self._dead(p, rec, f"internal error: {one!r}")
                    _merge(merged, p)
                result.append(merged)

        await retry_forever("read review state from ClickHouse", attempt, log=log)
        return result[-1]

    def status_line(self) -> str:
        c = self.counts
        return (f"review: {c['items_new']} items, {c['verdicts_new']} verdicts ({c['verdicts_duplicate']} duplicates), "
                f"{c['completed']} completed, {c['published_to_pool']} to the pool, {c['dead']} dead letters")


def _arrival(obj: dict, rec: Record, now: datetime) -> datetime:
    if obj.get("ts"):
        try:
            return parse_ts(obj["ts"])
        except SchemaError:
            pass
    if rec.timestamp:
        return datetime.fromtimestamp(rec.timestamp, timezone.utc)
    return now


def _id_of(rec: Record) -> str | None:
    try:
        obj: Any = orjson.loads(rec.value or b"")
        return obj.get("verdict_id") if isinstance(obj, dict) else None
    except Exception:
        return None


def _is_store_error(exc: BaseException) -> bool:
    return isinstance(exc, (WarehouseError, OwnerUnreachable, OSError))


def _merge(into: Plan, p: Plan) -> None:
    into.dead += p.dead
    into.pool += p.pool
    into.item_rows += p.item_rows
    into.verdict_rows += p.verdict_rows
    into.routing_rows += p.routing_rows
    into.grow_tasks |= p.grow_tasks
    into.counts.update(p.counts)
