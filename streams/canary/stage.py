"""Installs the canary stage into the stream worker (see streams.worker.app.WORKER_STAGES).

* an agent on ``live.requests`` (raw bytes, concurrency 1): for a task with a version in canary
  (the latest model.config record in the model_config history), the requests the serving version
  answered whose id hashes under ``[canary] pct`` (or the record's canary share) are handed to a
  bounded background pool that asks the candidate through the model server's API (httpx,
  ``FLYWHEEL_CANARY_MODEL_URL``, at most ``FLYWHEEL_CANARY_CONCURRENCY`` in flight, each
  bounded by ``FLYWHEEL_CANARY_TIMEOUT_SECONDS``). The agent never waits for the candidate: when
  the pool is full a request is shed (counted), a timeout or failure is a pair with an error;
  after BREAKER_FAILURES failures in a row shadowing pauses for BREAKER_PAUSE_S.
  An invalid message is counted and skipped: the drift stage, which reads every live.requests
  message, dead-letters it (one dead letter per invalid message, whether a canary runs or not).
  Nothing escapes the agent.
* every second: the finished pairs go to ``canary_pairs`` (idempotent: keyed by task, candidate,
  request), then to ``canary.pairs``, and the disagreements to ``review.queue`` (kind
  canary_disagreement, both answers). Pairs still in the pool when the worker stops are lost:
  the canary is a sample, and a redelivered request is asked again.
* every JUDGE_EVERY_S, in the one worker that owns the task: the judge (streams.canary.judge) on
  the pairs so far (in every worker the canary runs in, the agent shadows its own share of
  requests; the judge and the auto start need one actor per task). The owner is the worker the
  consumer group assigns the canary.pairs partition of the task's key to (pairs are keyed by
  task; a small agent reads canary.pairs so that its partitions are assigned, and remembers the
  partition each task's pairs arrive on). Kafka hands each partition to one group member at a
  time (revoked from the old owner before the new one gets it), so two workers never judge one
  task at once; a worker that has lost its session is fenced by the promotion rules, which
  refuse a second action on a candidate. A single worker owns every partition.
  A decision whose
  outcome or pair count changed is stored in ``canary_decisions`` with its evidence; with
  ``auto_rollback`` an abort, with ``auto_promote`` a promote, is carried out through the
  promotion path (streams.promote.apply); with ``auto_promote`` the newest gate-approved version
  above the serving one is put in canary.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from kernel.stage import WorkerContext
from kernel.tasks import TaskConfig
from kernel.warehouse import sql_str as q
from schemas import messages
from schemas.events import InvalidMessage, load_message
from schemas.timefmt import rfc3339
from schemas.topics import CANARY_PAIRS, LIVE_REQUESTS, REVIEW_QUEUE
from serving.config import Route, VersionRef

from . import judge as J
from . import store as cstore
from .config import CanaryConfig, canary_config
from .pairs import asks_classify, in_canary, judged_here, pair, paired_score, review_item, slice_of

log = logging.getLogger("flywheel.canary")

FLUSH_EVERY_S = 1.0
JUDGE_EVERY_S = 2.0
POOL_FACTOR = 4          # requests waiting for a slot, per slot; beyond that they are shed
BREAKER_FAILURES = 20    # consecutive candidate failures that pause shadowing...
BREAKER_PAUSE_S = 5.0    # ...for this long (requests meanwhile are shed): a dead candidate costs no CPU


def known_slices(task: TaskConfig) -> int | None:
    """How many slices a task can have, when its slice rule says (sliced by label: its labels)."""
    return len(task.labels) if task.slice_rule.source == "label" and task.labels else None


def verdict(cfg: CanaryConfig, task: TaskConfig, counts, elapsed_s: float) -> J.Verdict:
    """The judge on a task's pairs so far (``counts`` per slice), with its ``[canary]`` settings."""
    return J.judge(counts, elapsed_s, min_pairs=cfg.min_pairs, min_duration=cfg.min_duration,
                   max_disagreement=cfg.max_disagreement, slice_tolerance=cfg.slice_tolerance, alpha=cfg.alpha,
                   n_slices=known_slices(task))


class CanaryStage:
    """The canary's state and operations; the Faust glue is in ``install``."""

    def __init__(self, tasks: dict[str, TaskConfig], configs: dict[str, CanaryConfig], store, *,
                 model_url: str, timeout_s: float = 5.0, concurrency: int = 8, kafka=None) -> None:
        import httpx

        self.tasks, self.configs, self.store, self.kafka = tasks, configs, store, kafka
        self.timeout_s = timeout_s
        self.sem = asyncio.Semaphore(concurrency)
        self.capacity = concurrency * POOL_FACTOR
        self.client = httpx.AsyncClient(base_url=model_url.rstrip("/"), timeout=timeout_s,
                                        limits=httpx.Limits(max_connections=concurrency,
                                                            max_keepalive_connections=concurrency))
        self.model_url = model_url
        self.routes: dict[str, Route] = {}
        self.history_ready = False
        self.started_at: dict[tuple[str, str], float] = {}
        self.inflight: set[asyncio.Task] = set()
        self.done: list[dict] = []
        self.last: dict[tuple[str, str], tuple[str, int]] = {}
        self.acted: set[tuple[str, str]] = set()
        self.fail_streak = 0
        self.paused_until = 0.0
        self.counters = {"seen": 0, "shadowed": 0, "shed": 0, "paused": 0, "answered": 0, "errors": 0, "timeouts": 0,
                         "invalid": 0, "pairs_written": 0, "disagreements": 0}
        self.publish_pairs = None    # async (list of (key, value)) -> None
        self.publish_review = None   # async (list of (key, value)) -> None
        # which tasks this worker judges: the canary.pairs partitions it is assigned (None: all,
        # for a stage used on its own), the topic's partition count, where each task's pairs arrived
        self.assigned = None         # () -> set[int] | None
        self.partitions = lambda: CANARY_PAIRS.partitions
        self.seen_on: dict[str, int] = {}
        self.judging: list[str] | None = None   # the tasks judged at the last look (logged on change)

    # -- routes ----------------------------------------------------------------------------------
    def refresh_routes(self) -> None:
        """The latest model.config decision of every task (model_config history)."""
        from serving import history

        if not self.history_ready:   # once per stage, not at every look of the judge (every 2 s)
            history.ensure_table(self.store)
            self.history_ready = True
        for name in self.tasks:
            r = history.current(self.store, name)
            if r is None:
                self.routes.pop(name, None)
                continue
            self.routes[name] = r
            if r.canary and (name, r.canary) not in self.started_at:
                self.started_at[(name, r.canary)] = cstore.started_at(self.store, name, r.canary) or time.time()

    def share(self, task: str) -> float:
        """Percent of requests shadowed: the record's canary share, else [canary] pct."""
        r = self.routes.get(task)
        if r is not None and r.canary_share:
            return r.canary_share * 100.0
        return self.configs[task].pct

    # -- the agent's per-message work (never blocks on the candidate) ------------------------------
    def decode(self, raw: bytes | None) -> dict:
        obj = load_message(raw, LIVE_REQUESTS.schema)
        if obj["task"] not in self.tasks:
            raise InvalidMessage(f"unknown task {obj['task']!r}; declared tasks: {sorted(self.tasks)}")
        return obj

    async def offer(self, raw: bytes | None, partition: int = 0, offset: int = 0) -> None:
        self.counters["seen"] += 1
        if not any(r.canary for r in self.routes.values()):
            return      # no canary anywhere: nothing to do (the drift stage dead-letters invalid messages)
        try:
            req = self.decode(raw)
        except InvalidMessage:
            # the drift stage reads the same messages and dead-letters the invalid ones; a second
            # dead letter from here would count every bad message twice
            self.counters["invalid"] += 1
            return
        route = self.routes.get(req["task"])
        if route is None or not route.canary or req["model_version"] != route.serving:
            return
        if not in_canary(req["id"], self.share(req["task"])):
            return
        if len(self.inflight) >= self.capacity:
            self.counters["shed"] += 1
            return
        if self.paused_until and time.monotonic() < self.paused_until:
            self.counters["paused"] += 1
            return
        self.counters["shadowed"] += 1
        t = asyncio.create_task(self._shadow(req, route.canary, route.versions[route.canary]))
        self.inflight.add(t)
        t.add_done_callback(self.inflight.discard)

    async def _shadow(self, req: dict, candidate: str, ref: VersionRef) -> None:
        answer, err, ms = None, None, None
        try:
            async with self.sem:
                t0 = time.perf_counter()
                try:
                    answer = await asyncio.wait_for(self.ask(ref, req["input"]), self.timeout_s)
                    self.counters["answered"] += 1
                    self.fail_streak = 0
                except asyncio.TimeoutError:
                    err = f"timeout after {self.timeout_s:.1f}s"
                    self.counters["timeouts"] += 1
                    self._failed()
                except Exception as exc:
                    err = f"{type(exc).__name__}: {exc}"
                    self.counters["errors"] += 1
                    self._failed()
                ms = (time.perf_counter() - t0) * 1000
            slice_ = slice_of(self.tasks[req["task"]], req)
            self.done.append(pair(req, slice_, candidate, answer, ms, err, rfc3339()))
        except Exception:  # never escape a background task
            log.exception("canary: shadowing request %s failed", req.get("id"))

    def _failed(self) -> None:
        self.fail_streak += 1
        if self.fail_streak >= BREAKER_FAILURES:
            self.fail_streak = 0
            self.paused_until = time.monotonic() + BREAKER_PAUSE_S
            log.warning("canary: %d candidate failures in a row; shadowing paused for %.0fs", BREAKER_FAILURES,
                        BREAKER_PAUSE_S)

    async def ask(self, ref: VersionRef, text: str) -> Any:
        """The candidate's answer from the model server (vLLM's API subset, adapters by version)."""
        if asks_classify(ref.student):
            r = await self.client.post("/classify", content=orjson.dumps({"model": ref.version, "input": [text]}),
                                       headers={"content-type": "application/json"})
            r.raise_for_status()
            return orjson.loads(r.content)["data"][0]["label"]
        payload = {"model": ref.version, "temperature": 0.0,
                   "messages": [{"role": "system", "content": ref.system_prompt or ""}, {"role": "user", "content": text}]}
        if ref.max_new_tokens:
            payload["max_tokens"] = ref.max_new_tokens
        r = await self.client.post("/v1/chat/completions", content=orjson.dumps(payload),
                                   headers={"content-type": "application/json"})
        r.raise_for_status()
        return orjson.loads(r.content)["choices"][0]["message"]["content"]

    # -- sinks ------------------------------------------------------------------------------------
    async def flush(self) -> int:
        """Finished pairs → canary_pairs, then canary.pairs and review.queue (disagreements)."""
        if not self.done:
            return 0
        batch, self.done = self.done, []
        rows = [cstore.pair_row(p, paired_score(p["candidate_answer"], p["incumbent_answer"], p.get("teacher_answer")))
                for p in batch]
        try:
            await asyncio.to_thread(cstore.insert_pairs, self.store, rows)
            out = [(p["task"].encode(), messages.encode(CANARY_PAIRS, p)) for p in batch]
            review = [(p["task"].encode(), messages.encode(REVIEW_QUEUE, review_item(p)))
                      for p in batch if p["agree"] is False]
            if self.publish_pairs is not None:
                await self.publish_pairs(out)
            if review and self.publish_review is not None:
                await self.publish_review(review)
        except Exception:
            self.done[:0] = batch      # retried at the next flush (the sinks are idempotent)
            raise
        self.counters["pairs_written"] += len(batch)
        self.counters["disagreements"] += sum(p["agree"] is False for p in batch)
        return len(batch)

    # -- the judge ----------------------------------------------------------------------------------
    def evaluate(self, task: str, now: float | None = None) -> tuple[J.Verdict, str, str] | None:
        """The judge's verdict on the task's canary, or None without one."""
        r = self.routes.get(task)
        if r is None or not r.canary or not r.serving:
            return None
        cfg = self.configs[task]
        counts = cstore.counts(self.store, task, r.canary, r.serving)
        elapsed = (now or time.time()) - self.started_at.get((task, r.canary), time.time())
        return verdict(cfg, self.tasks[task], counts, elapsed), r.canary, r.serving

    def owned(self) -> list[str]:
        """The tasks this worker judges (see judged_here)."""
        assigned = self.assigned() if self.assigned is not None else None
        if assigned is None:
            return list(self.tasks)
        n = self.partitions()
        return [t for t in self.tasks if judged_here(t, assigned, n, self.seen_on.get(t))]

    async def judge_all(self) -> list[tuple[str, J.Verdict, str]]:
        await asyncio.to_thread(self.refresh_routes)
        out = []
        owned = self.owned()
        if owned != self.judging:   # after a rebalance: which tasks this worker now judges
            log.info("canary: this worker judges %s", ", ".join(owned) if owned else "no task")
            self.judging = owned
        for task in owned:
            try:
                out.extend(await self._judge_task(task))
            except Exception as exc:
                log.warning("canary %s: judging failed (%s); retried in %.0fs", task, exc, JUDGE_EVERY_S)
        return out

    async def _judge_task(self, task: str) -> list[tuple[str, J.Verdict, str]]:
        cfg = self.configs[task]
        res = await asyncio.to_thread(self.evaluate, task)
        if res is None:
            if cfg.auto_promote:
                await self.maybe_auto_start(task)
            return []
        v, cand, inc = res
        key = (task, cand)
        action = "none"
        if key not in self.acted:
            if v.outcome == J.PROMOTE and cfg.auto_promote:
                action = "promote"
            elif v.outcome == J.ABORT and cfg.auto_rollback:
                action = "canary_abort"
        if self.last.get(key) == (v.outcome, v.pairs) and action == "none":
            return []
        self.last[key] = (v.outcome, v.pairs)
        await asyncio.to_thread(cstore.record_decision, self.store, task, cand, inc, v, action)
        log.info("canary %s: %s vs %s: %s (%s)%s", task, cand, inc, v.outcome, v.reason,
                 f"; carrying out {action}" if action != "none" else "")
        if action != "none":
            from streams.promote.apply import apply

            self.acted.add(key)
            try:
                await apply(self.store, self.kafka, action, task, cand, decided_by="canary-judge",
                            reason=f"canary judge: {v.reason}")
            except Exception:
                self.acted.discard(key)
                raise
            await asyncio.to_thread(self.refresh_routes)
        return [(task, v, action)]

    async def maybe_auto_start(self, task: str) -> None:
        """With auto_promote: the newest gate-approved version above the serving one enters canary."""
        from training.registry import store as reg

        r = self.routes.get(task)
        if r is None or not r.serving or r.canary:
            return
        rows = await asyncio.to_thread(reg.list_models, self.store, task)
        seq = {x["version"]: x["seq"] for x in rows}
        cands = [x for x in rows if x["status"] == "approved" and x["seq"] > seq.get(r.serving, 0)]
        if not cands:
            return
        v = max(cands, key=lambda x: x["seq"])["version"]
        # a version that was in canary before (stopped by a person) is not restarted behind their back
        before = await asyncio.to_thread(self.store.scalar, f"SELECT count() FROM model_config WHERE task = {q(task)} "
                                         f"AND action = 'canary_start' AND canary_version = {q(v)}")
        if before:
            return
        from streams.promote.apply import apply

        await apply(self.store, self.kafka, "canary_start", task, v, decided_by="canary-auto",
                    reason="auto_promote: gate-approved", share=self.configs[task].pct / 100.0)
        log.info("canary %s: %s approved by the gate: canary started at %.0f%%", task, v, self.configs[task].pct)
        await asyncio.to_thread(self.refresh_routes)

    def status_line(self) -> str:
        c = self.counters
        return (f"canary: {c['shadowed']} shadowed of {c['seen']} seen, {c['shed']} shed, {c['paused']} paused, {c['answered']} answered, "
                f"{c['timeouts']} timeouts, {c['errors']} errors, {c['disagreements']} disagreements, "
                f"{len(self.inflight)} in flight; judging {self.owned() or 'no task'}; canaries: "
                + (", ".join(f"{t}={r.canary}" for t, r in self.routes.items() if r.canary) or "none"))

    async def close(self) -> None:
        for t in list(self.inflight):
            t.cancel()
        await self.client.aclose()


def install(ctx: WorkerContext) -> None:
    """Add the canary agent and timers to ctx.app."""
    configs = {name: canary_config(t) for name, t in ctx.tasks.items()}   # a bad [canary] fails start-up
    s = ctx.settings
    cstore.ensure_tables(ctx.store)
    stage = CanaryStage(ctx.tasks, configs, ctx.store, model_url=s.canary_model_url, timeout_s=s.canary_timeout_seconds,
                        concurrency=s.canary_concurrency, kafka=s.kafka)
    ctx.services["canary"] = stage
    app = ctx.app
    live_topic = app.topic(LIVE_REQUESTS.name, value_serializer="raw", key_serializer="raw")
    pairs_topic = app.topic(CANARY_PAIRS.name, value_serializer="raw", key_serializer="raw")
    review_topic = app.topic(REVIEW_QUEUE.name, value_serializer="raw", key_serializer="raw")

    async def send_all(topic, items) -> None:
        for key, value in items:
            await topic.send(key=key, value=value, force=True)
        await app.producer.flush()

    def assigned() -> set[int]:
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == CANARY_PAIRS.name}

    def partitions() -> int:
        try:
            return app.consumer.topic_partitions(CANARY_PAIRS.name) or CANARY_PAIRS.partitions
        except Exception:  # before the consumer has started: the declared count
            return CANARY_PAIRS.partitions

    stage.assigned, stage.partitions = assigned, partitions
    stage.publish_pairs = lambda items: send_all(pairs_topic, items)
    stage.publish_review = lambda items: send_all(review_topic, items)

    @app.agent(live_topic, concurrency=1, name="canary-live")
    async def canary_live(stream):
        async for events in stream.take_events(500, 0.2):
            for ev in events:
                m = ev.message
                try:
                    await stage.offer(m.value, m.partition, m.offset)
                except Exception:  # never escape: Faust would ack and skip silently
                    log.exception("canary: a live.requests message failed")

    @app.agent(pairs_topic, concurrency=1, name="canary-owner")
    async def canary_owner(stream):
        # reads canary.pairs so that the group assigns its partitions (the judge's ownership) and
        # notes the partition each task's pairs arrive on; the pairs themselves are already stored
        async for events in stream.take_events(500, 0.5):
            for ev in events:
                try:
                    key = ev.message.key
                    if key:
                        stage.seen_on[key.decode()] = ev.message.partition
                except Exception:  # never escape
                    log.exception("canary: a canary.pairs message could not be read")

    @app.timer(interval=FLUSH_EVERY_S)
    async def canary_flush() -> None:
        try:
            await stage.flush()
        except Exception as exc:
            log.warning("canary: writing pairs failed (%s); retried in %.0fs", exc, FLUSH_EVERY_S)

    @app.task
    async def canary_routes() -> None:
        try:
            await asyncio.to_thread(stage.refresh_routes)
        except Exception as exc:
            log.warning("canary: reading model_config failed (%s); retried in %.0fs", exc, JUDGE_EVERY_S)

    @app.timer(interval=JUDGE_EVERY_S)
    async def canary_judge() -> None:
        try:
            await stage.judge_all()
        except Exception as exc:
            log.warning("canary: the judge failed (%s); retried in %.0fs", exc, JUDGE_EVERY_S)

    @app.timer(interval=30.0)
    async def canary_report() -> None:
        log.info(stage.status_line())


__all__ = ["install", "CanaryStage"]
