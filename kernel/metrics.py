"""Operations: the Prometheus metrics every flywheel process exposes, a health check, and
the small HTTP server that serves both (``/metrics`` and ``/health``).

The metric objects are module-level (prometheus-client's idiom) in one registry of our own,
``REGISTRY``, which also carries the process collector (CPU, resident memory, open files).
Stages update them with one line where the thing happens; nothing here does stage work.

    from kernel import metrics
    metrics.EVENTS_OUT.labels(stage="curate", outcome="kept").inc(n)

The server is off unless a port is set (``FLYWHEEL_METRICS_PORT`` for the stream worker,
``FLYWHEEL_TRAIN_METRICS_PORT`` for the training worker): on a shared machine a fixed default
port would make two workers fight over it. Consumer lag is sampled from the broker's committed
offsets by ``LagSampler`` (a thread with its own event loop, every few seconds), never from
the consumer's own position, so it is the lag a restart would replay.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import orjson
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               PlatformCollector, ProcessCollector, generate_latest)

log = logging.getLogger("flywheel.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# -- the stream worker -----------------------------------------------------------------------
EVENTS_IN = Counter("flywheel_events_in", "Messages read from a topic by a stage",
                    ["stage", "topic"], registry=REGISTRY)
EVENTS_OUT = Counter("flywheel_events_out", "Messages made durable by a stage, per outcome "
                     "(curate: invalid, off_schema, low_conf, gold_overlap, exact_dupe, near_dupe, kept, conflict)",
                     ["stage", "outcome"], registry=REGISTRY)
BATCH_WRITE_SECONDS = Histogram("flywheel_batch_write_seconds", "Time to make one batch durable in the store",
                                ["stage"], registry=REGISTRY,
                                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
BATCH_ROWS = Histogram("flywheel_batch_rows", "Events per durable batch", ["stage"], registry=REGISTRY,
                       buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 50000))
RETRIES = Counter("flywheel_retries", "Operations retried after a fault that can heal (store or broker "
                  "unreachable, disk full)", ["operation", "fault"], registry=REGISTRY)
DEAD_LETTERS = Counter("flywheel_dead_letters", "Dead letters published, per source topic",
                       ["source_topic"], registry=REGISTRY)
DEAD_LETTER_PAYLOADS = Counter("flywheel_dead_letter_payloads", "Originals too large for a dead letter, "
                               "stored whole in dead_letter_payloads", registry=REGISTRY)
ROWS_ISOLATED = Counter("flywheel_rows_isolated", "Rows the store refused for a data reason, isolated by "
                        "splitting their batch and dead-lettered", ["table"], registry=REGISTRY)
CONFLICTS = Counter("flywheel_conflicts", "A known id re-sent with different content (first content wins)",
                    ["task"], registry=REGISTRY)
REDACTIONS = Counter("flywheel_redactions", "PII matches redacted from inputs, per task and rule",
                     ["task", "rule"], registry=REGISTRY)
DRIFT_ALERTS = Counter("flywheel_drift_alerts", "Drift alerts raised", ["task", "metric"], registry=REGISTRY)
STORE_ERRORS = Counter("flywheel_store_errors", "Store operations that failed (before any retry)",
                       ["operation", "fault"], registry=REGISTRY)
CONSUMER_LAG = Gauge("flywheel_consumer_lag", "Messages between a group's committed offset and the end "
                     "of the partition", ["group", "topic", "partition"], registry=REGISTRY)
COMMITTED_OFFSET = Gauge("flywheel_committed_offset", "A group's committed offset",
                         ["group", "topic", "partition"], registry=REGISTRY)
LAG_SAMPLED_AT = Gauge("flywheel_consumer_lag_sampled_at", "Unix time of the last successful lag sample",
                       ["group"], registry=REGISTRY)

# -- the training worker ---------------------------------------------------------------------
TRAINING_RUNS = Counter("flywheel_training_runs", "Retrain requests handled, per status "
                        "(done, failed, skipped, retried)", ["task", "status"], registry=REGISTRY)
TRAINING_RUN_SECONDS = Histogram("flywheel_training_run_seconds", "Wall time of a training run, request to "
                                 "verdict", ["task"], registry=REGISTRY,
                                 buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400))
GATE_VERDICTS = Counter("flywheel_gate_verdicts", "Gate verdicts of trained candidates",
                        ["task", "verdict"], registry=REGISTRY)


# -- faults ----------------------------------------------------------------------------------
def fault_kind(exc: BaseException) -> str:
    """A short label for an exception, for the ``fault`` label of a metric: ``store``
    (ClickHouse or the store's owner unreachable or refusing), ``broker``, ``disk_full``,
    ``data`` (the store refused the rows themselves) or the exception's class name."""
    from kernel.faults import classify

    return classify(exc).kind


# -- health ----------------------------------------------------------------------------------
class Health:
    """Named checks of one process. A check is a callable returning (ok, detail); ``/health``
    answers 200 with every check's detail when all pass, 503 otherwise."""

    def __init__(self) -> None:
        self._checks: dict[str, Callable[[], tuple[bool, str]]] = {}
        self._lock = threading.Lock()
        self.started = time.time()

    def add(self, name: str, check: Callable[[], tuple[bool, str]]) -> None:
        with self._lock:
            self._checks[name] = check

    def remove(self, name: str) -> None:
        with self._lock:
            self._checks.pop(name, None)

    def report(self) -> tuple[bool, dict]:
        with self._lock:
            checks = dict(self._checks)
        out, healthy = {}, True
        for name, check in checks.items():
            try:
                ok, detail = check()
            except Exception as exc:  # a broken check is a failing one, never a crash
                ok, detail = False, f"check failed: {exc}"
            healthy &= bool(ok)
            out[name] = {"ok": bool(ok), "detail": detail}
        return healthy, {"status": "ok" if healthy else "unhealthy", "uptime_s": round(time.time() - self.started, 1),
                         "checks": out}


HEALTH = Health()


class Progress:
    """A health check for a loop that must keep making progress: healthy while the last
    success is recent, or while there is nothing to do. ``failing(what)`` marks a retry in
    progress; the check fails once failures have lasted ``stall_after`` seconds."""

    def __init__(self, stall_after: float = 120.0) -> None:
        self.stall_after = stall_after
        self.last_ok = time.monotonic()
        self.failing_since: float | None = None
        self.what = ""

    def ok(self) -> None:
        self.last_ok = time.monotonic()
        self.failing_since = None

    def failing(self, what: str) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self.what = what

    def __call__(self) -> tuple[bool, str]:
        if self.failing_since is None:
            return True, f"last success {time.monotonic() - self.last_ok:.0f}s ago"
        for_s = time.monotonic() - self.failing_since
        return for_s < self.stall_after, f"failing for {for_s:.0f}s: {self.what}"


# -- the server ------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    server_version = "flywheel-metrics"
    registry: CollectorRegistry = REGISTRY
    health: Health = HEALTH

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.registry))
        elif path in ("/health", "/healthz"):
            ok, body = self.health.report()
            self._send(200 if ok else 503, "application/json", orjson.dumps(body))
        else:
            self._send(404, "text/plain; charset=utf-8", b"try /metrics or /health\n")

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args) -> None:  # scrapes are not worth a log line each
        pass


class MetricsServer:
    """``/metrics`` and ``/health`` on host:port, in a daemon thread. Port 0 picks a free one
    (``.port`` tells which)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry = REGISTRY,
                 health: Health = HEALTH) -> None:
        handler = type("Handler", (_Handler,), {"registry": registry, "health": health})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "MetricsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(host: str, port: int | None, what: str) -> MetricsServer | None:
    """Start the server when a port is configured; a port in use is a warning, not a crash
    (the worker's job matters more than its metrics)."""
    if not port:
        return None
    try:
        server = MetricsServer(host, port).start()
    except OSError as exc:
        log.warning("%s: metrics endpoint not started on %s:%s (%s); set another port", what, host, port,
                    exc.strerror or exc)
        return None
    log.info("%s: metrics at %s/metrics, health at %s/health", what, server.url, server.url)
    return server


# -- consumer lag ----------------------------------------------------------------------------
def lag_of(committed: dict[tuple[str, int], int], ends: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """Lag per (topic, partition): end offset minus committed offset, never below 0 (the
    embedded broker can report an end a few messages short of the real one). A partition with
    no committed offset lags by its whole length."""
    return {tp: max(0, end - committed.get(tp, 0)) for tp, end in ends.items()}


class LagSampler:
    """Every ``every`` seconds, read a consumer group's committed offsets and the end offsets
    of the partitions of ``topics`` and set CONSUMER_LAG. Runs in its own thread and event loop,
    with its own clients, so a slow broker never stalls the worker."""

    def __init__(self, kafka, group: str, topics: list[str], every: float = 5.0) -> None:
        self.kafka, self.group, self.topics, self.every = kafka, group, list(topics), every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lag-{group}", daemon=True)
        self.last: dict[tuple[str, int], int] = {}
        self.error: str | None = None

    def start(self) -> "LagSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)  # a daemon thread: a hung broker call never holds up a stop

    def _run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        admin = consumer = None
        while not self._stop.is_set():
            try:
                if admin is None:
                    admin = AIOKafkaAdminClient(**self.kafka.aiokafka_kwargs())
                    await admin.start()
                    consumer = AIOKafkaConsumer(**self.kafka.aiokafka_kwargs(), group_id=None,
                                                enable_auto_commit=False)
                    await consumer.start()
                self.last = await sample_lag(admin, consumer, self.group, self.topics)
                for (topic, part), lag in self.last.items():
                    CONSUMER_LAG.labels(self.group, topic, str(part)).set(lag)
                LAG_SAMPLED_AT.labels(self.group).set(time.time())
                self.error = None
            except Exception as exc:  # the broker may be restarting: try again later
                self.error = f"{type(exc).__name__}: {exc}"
                log.debug("lag sample of %s failed: %s", self.group, self.error)
                await _close_quietly(consumer, admin)
                admin = consumer = None
            await asyncio.to_thread(self._stop.wait, self.every)
        await _close_quietly(consumer, admin)


async def _close_quietly(*clients) -> None:
    """Stop (consumer) or close (admin client) each client that exists; errors are ignored."""
    for client in clients:
        if client is not None:
            try:
                await client.stop() if hasattr(client, "stop") else await client.close()
            except Exception:
                pass


async def sample_lag(admin, consumer, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """One sample: {(topic, partition): lag} for every partition of ``topics``."""
    from aiokafka import TopicPartition

    cluster = await consumer._client.fetch_all_metadata()  # aiokafka: every topic, assigned or not
    tps = [TopicPartition(topic, p) for topic in topics for p in sorted(cluster.partitions_for_topic(topic) or ())]
    if not tps:
        return {}
    # naming the partitions: the embedded broker cannot answer an OffsetFetch for "all topics"
    offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
    committed = {}
    for tp, om in offsets.items():
        if om is not None and om.offset >= 0:
            committed[(tp.topic, tp.partition)] = om.offset
            COMMITTED_OFFSET.labels(group, tp.topic, str(tp.partition)).set(om.offset)
    ends = await true_end_offsets(consumer, tps)
    return lag_of(committed, {(tp.topic, tp.partition): off for tp, off in ends.items()})


async def true_end_offsets(consumer, tps) -> dict:
    """End offsets that are right on the embedded broker too: Tansu answers ListOffsets(latest)
    with the base offset of the partition's last record batch + 1 (7 records sent as one batch
    at offsets 0-6 report an end of 1; measured with aiokafka against the embedded build). So
    each partition is fetched once from that offset: the fetch response's high watermark (Tansu
    keeps it right), or the last record's offset + 1, is the end. One fetch, not a read to the
    end: on the broker's disk storage a reader far ahead of every consumer moves the listing
    window a step per fetch (kernel.broker_disk). On Kafka the reported end is already right."""
    reported = await consumer.end_offsets(tps)
    nonempty = [tp for tp in tps if reported.get(tp, 0) > 0]
    ends = dict(reported)
    if not nonempty:
        return ends
    consumer.assign(nonempty)
    for tp in nonempty:
        consumer.seek(tp, reported[tp] - 1)
    pending = set(nonempty)
    deadline = time.monotonic() + 5.0
    while pending and time.monotonic() < deadline:
        batch = await consumer.getmany(*pending, timeout_ms=500)
        for tp in list(pending):
            records = batch.get(tp)
            high = consumer.highwater(tp)
            if records:
                ends[tp] = max(ends[tp], records[-1].offset + 1)
            if high is not None:
                ends[tp] = max(ends[tp], high)
            if records or high is not None:
                pending.discard(tp)
    return ends


class Operations:
    """What a worker process starts for operations: the endpoint and the lag sampler."""

    def __init__(self, server: MetricsServer | None, sampler: LagSampler | None) -> None:
        self.server, self.sampler = server, sampler

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        if self.server is not None:
            self.server.stop()


def start_operations(settings, *, what: str, port: int, group: str, topics: list[str]) -> Operations:
    """Serve /metrics and /health on ``port`` (nothing when 0) and sample the lag of ``group``
    on ``topics``; /health's ``broker`` check fails when no lag sample succeeded for a while."""
    server = serve(settings.metrics_host, port, what)
    if server is None:
        return Operations(None, None)
    sampler = LagSampler(settings.kafka, group, topics, settings.lag_sample_seconds).start()
    stale_after = max(30.0, 6 * settings.lag_sample_seconds)

    def broker_check() -> tuple[bool, str]:
        sampled = LAG_SAMPLED_AT.labels(group)._value.get()
        if not sampled:
            return time.time() - HEALTH.started < stale_after, sampler.error or "no lag sample yet"
        age = time.time() - sampled
        total = sum(sampler.last.values())
        return age < stale_after, (f"lag {total} on {len(sampler.last)} partitions, sampled {age:.0f}s ago"
                                   + (f"; last error: {sampler.error}" if sampler.error else ""))

    HEALTH.add("broker", broker_check)
    return Operations(server, sampler)
