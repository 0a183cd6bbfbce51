"""What the curate agent does with each batch, and the dedupe memory it starts from.

``CuratePipeline`` decides a batch with the pure ``Curator``, sends the few events that need a
topic (dead letters, review items), writes the batch to ClickHouse, and only then acks it, so
offsets are committed only after the outcome is durable; a crash replays at most the
uncommitted batch, and replays are idempotent (ReplacingMergeTree on the event id,
content-derived insert tokens, the dedupe index recognising an id it already kept).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from datetime import datetime, timezone

from kernel.gold import current_version, load_gold
from kernel.retry import retry_forever
from kernel.stage import WorkerContext
from kernel.warehouse import Warehouse, sql_str
from kernel.warehouse.isolate import insert_isolating
from streams.curate import observe
from streams.curate.policy import OUTCOMES, Curator, Decision, Message
from streams.curate.rows import batch_token, curation_event_row, dead_letter, dead_letter_payload_rows, review_item
from streams.curate.seen import load_seen_ids

log = logging.getLogger("flywheel.curate")


def load_state(curator: Curator, store: Warehouse, capacity: int) -> dict[str, int]:
    """Rebuild dedupe memory from the warehouse: the most recent kept examples, in arrival
    order, and the current gold set of each task. Returns the gold versions loaded."""
    gold_versions = {}
    for name in curator.tasks:
        rows = store.rows(
            "SELECT id, input FROM (SELECT id, input, curated_at, source_partition, source_offset "
            f"FROM examples FINAL WHERE task = {sql_str(name)} "
            f"ORDER BY curated_at DESC, source_partition DESC, source_offset DESC LIMIT {int(capacity)}) "
            "ORDER BY curated_at, source_partition, source_offset")
        curator.load_pool(name, [r["id"] for r in rows], [r["input"] for r in rows])
        gold_versions[name] = refresh_gold(curator, store, name, -1)
        log.info("task %s: %d kept examples and gold v%d loaded for dedupe", name, len(rows),
                 gold_versions[name])
    log.info("%d curated ids loaded for conflict detection", load_seen_ids(curator, store, capacity))
    return gold_versions


def refresh_gold(curator: Curator, store: Warehouse, task: str, loaded: int) -> int:
    version = current_version(store, task)
    if version != loaded:
        _, rows = load_gold(store, task, version)
        curator.load_gold(task, [r["id"] for r in rows], [r["input"] for r in rows])
    return version


class CuratePipeline:
    """What the curate agent does with one batch. Never raises: failures are retried (the
    warehouse, the producer) or become dead letters (a message the curator cannot handle)."""

    def __init__(self, ctx: WorkerContext, curator: Curator, dead_topic, review_topic) -> None:
        self.ctx = ctx
        self.curator = curator
        self.dead_topic = dead_topic
        self.review_topic = review_topic
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.events = 0
        self.started = time.monotonic()
        self._mark = (self.started, 0)  # (time, events) at the last status line
        self._inflight: asyncio.Future | None = None

    def decide(self, messages: list[Message]) -> list[Decision]:
        try:
            return self.curator.curate(messages)
        except Exception:  # a bug must not lose the batch: isolate the message that trips it
            log.exception("curating a batch failed; retrying message by message")
            out = []
            for m in messages:
                try:
                    out.extend(self.curator.curate([m]))
                except Exception as exc:
                    out.append(Decision("invalid", f"internal error: {exc!r}; "
                                                   f"{traceback.format_exc(limit=3)}", m))
            return out

    async def process(self, messages: list[Message]) -> None:
        """Decide a batch and make it durable (no pipelining; for callers without a stream)."""
        observe.batch_in(len(messages))
        await self._finish(self.decide(messages), None, ())

    async def submit(self, stream, events) -> None:
        """Decide a batch now and write it in the background while the next batch is read.

        ``events`` come from ``stream.noack_take``, which never acks: the background writer
        acks each event once its batch is durable (one ack per event, no extra reference).
        The curator reads Faust's message objects as they are (they carry ``value``,
        ``partition``, ``offset``, ``topic`` and ``timestamp``, like ``Message``). At most one
        batch is being written while the next is decided (bounded buffering: a slow store
        stalls consumption, it never grows memory)."""
        observe.batch_in(len(events))
        decisions = self.decide([ev.message for ev in events])
        await self.drain()
        self._inflight = asyncio.ensure_future(self._finish(decisions, stream, events))

    async def drain(self) -> None:
        """Wait for the batch being written. Its failure stays here: its events are not acked,
        so their offsets are never committed and a restart replays them."""
        if self._inflight is not None:
            try:
                await self._inflight
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("writing a curated batch failed; it will be replayed after a restart")
            finally:
                self._inflight = None

    async def _finish(self, decisions: list[Decision], stream, events) -> None:
        now = datetime.now(timezone.utc)
        t0 = time.monotonic()
        await self._make_durable(decisions, now)
        outcomes = observe.batch_durable(decisions, time.monotonic() - t0)
        for ev in events:  # durable: now the offsets may be committed
            await stream.ack(ev)
        for outcome, n in outcomes.items():
            self.counts[outcome] += n
        self.events += len(decisions)
        for hook in self.ctx.curate_hooks:
            try:
                result = hook(decisions)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("a curate hook failed; the batch itself is stored")

    async def _make_durable(self, decisions: list[Decision], now: datetime) -> None:
        """Store oversized originals, publish dead letters and review items, write the batch
        (one insert: examples_mv derives `examples` from it). Rows the store refuses for a data
        reason become invalid here (dead letter, then their outcome row), in ``decisions``."""
        await self._retry("store dead-letter originals", self._store_payloads, decisions, now)
        await self._retry("publish dead letters and review items", self._send, decisions, now)
        refused = await self._retry("write the batch to ClickHouse", self._write, decisions, now)
        if refused:
            await self._retry("store dead-letter originals", self._store_payloads, refused, now)
            await self._retry("publish dead letters of refused rows", self._send, refused, now)
            await self._retry("write the refused rows as invalid", self._write, refused, now)

    async def _store_payloads(self, decisions: list[Decision], now: datetime) -> None:
        rows = dead_letter_payload_rows(decisions, now)
        if rows:
            await asyncio.to_thread(self.ctx.store.insert, "dead_letter_payloads", rows)

    async def _send(self, decisions: list[Decision], now: datetime) -> None:
        sent = False
        for d in decisions:
            if d.outcome == "invalid":
                key, value = dead_letter(d, now)
                await self.dead_topic.send(key=key, value=value, force=True)
                sent = True
            elif d.outcome == "low_conf":
                key, value = review_item(d)
                await self.review_topic.send(key=key, value=value, force=True)
                sent = True
        if sent:
            await self.ctx.app.producer.flush()

    async def _write(self, decisions: list[Decision], now: datetime) -> list[Decision]:
        """One insert into curation_events; `examples` follows from its kept rows (examples_mv),
        so the two never disagree. Replayed kept events are written again too: the index may know
        an id whose first write never landed; ReplacingMergeTree collapses them. Returns the
        decisions whose rows the store refused, turned invalid (and replaced in ``decisions``)."""
        events = [curation_event_row(d, now) for d in decisions]
        refused = await asyncio.to_thread(insert_isolating, self.ctx.store, "curation_events", events,
                                          lambda rows: batch_token([r["id"] for r in rows], "curation_events"))
        out = []
        for i, reason in refused:
            first = decisions[i]
            d = Decision("invalid", f"the store refused its row: {reason}", first.message,
                         task=first.log.task if first.log else first.task)
            decisions[i] = d
            out.append(d)
        return out

    async def _retry(self, what: str, fn, *args):
        return await retry_forever(what, fn, *args, log=log, progress=observe.PROGRESS)

    def status_line(self) -> str:
        """Totals since start-up, and the rate over the interval since the last status line
        (an average since start-up keeps falling while the worker idles)."""
        now = time.monotonic()
        t0, n0 = self._mark
        self._mark = (now, self.events)
        rate = (self.events - n0) / max(now - t0, 1e-9)
        parts = ", ".join(f"{k} {v}" for k, v in self.counts.items() if v)
        return f"curated {self.events} events ({rate:.0f}/s lately): {parts or 'none yet'}"
