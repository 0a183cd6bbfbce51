"""Faults that heal: the store unreachable, the disk full. Curation stalls, nothing is
acknowledged early (the consumer group's committed offsets do not move), and it resumes by
itself when the fault heals, losing and duplicating nothing.

Real broker, real chdb, the real stream worker process (``tests.worker``) writing through the
store endpoint that this test owns and serves, as a remote ClickHouse is shared in production.
Store unreachable: a TCP relay between the worker and the endpoint is cut (connections reset,
the port refuses) and restored on the same port. Disk full: the store lives on a 96 MiB tmpfs
that a ballast file fills, then frees (needs root to mount; skipped otherwise).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
import time

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from kernel.settings import load_settings
from kernel.warehouse import open_warehouse
from kernel.warehouse.migrate import apply_ddl
from kernel.warehouse.owner import OwnerServer, write_owner_file
from schemas.topics import TEACHER_LOGS
from tests.helpers.kafka import publish, splice, tl
from tests.worker import WorkerProcess, wait_for

pytestmark = pytest.mark.integration

FIRST, SECOND = 400, 1200
STALL = 8.0  # seconds the fault lasts while events keep arriving


class CuttableRelay:
    """A TCP relay on a fixed port that can be cut (listener closed, live connections reset, so
    the port refuses) and restored on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.heal()

    def heal(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def cut(self) -> None:
        ls, self._listener = self._listener, None
        try:
            ls.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; close alone leaves it listening
        except OSError:
            pass
        ls.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                c.close()
            except OSError:
                pass

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            splice(client, server)


def committed(settings) -> int:
    """The worker group's committed offsets on teacher.logs, summed over the partitions."""
    async def run():
        admin = AIOKafkaAdminClient(**settings.kafka.aiokafka_kwargs())
        await admin.start()
        try:
            tps = [TopicPartition(TEACHER_LOGS.name, p) for p in range(TEACHER_LOGS.partitions)]
            offsets = await admin.list_consumer_group_offsets(settings.consumer_group, partitions=tps)
            return sum(max(om.offset, 0) for om in offsets.values())
        finally:
            await admin.close()
    return asyncio.run(run())


def events(prefix: str, n: int, start: int = 0) -> list[bytes]:
    return [tl(f"{prefix}{i}", f"SHOP {i:06d} CARD {'LONDON' if i % 2 else 'LEEDS'} #{i * 7919}",
               confidence=0.95 if i % 5 else 0.3) for i in range(start, start + n)]


def count(store, sql="SELECT count(DISTINCT id) FROM curation_events") -> int:
    return int(store.scalar(sql))


def run_fault(settings, tmp_path, store, fault_on, fault_off, expect_kind: str) -> dict:
    """FIRST events curated and committed; the fault; SECOND events published while it lasts
    (nothing more curated, nothing more committed); the fault heals; everything lands once."""
    worker = WorkerProcess(settings, tmp_path / "worker.log", worker_only=True).start()
    try:
        asyncio.run(publish(settings.kafka.servers, events("a", FIRST)))
        wait_for(lambda: count(store) == FIRST, 60, what="the first events curated")
        wait_for(lambda: committed(settings) == FIRST, 30, what="the first events committed")
        fault_on()
        asyncio.run(publish(settings.kafka.servers, events("b", SECOND)))
        time.sleep(STALL)
        stalled = {"curated": count(store), "committed": committed(settings)}
        assert worker.proc.poll() is None, worker.log()[-3000:]   # the worker stays up
        assert stalled == {"curated": FIRST, "committed": FIRST}, stalled
        assert f"({expect_kind}:" in worker.log(), worker.log()[-3000:]
        t0 = time.monotonic()
        fault_off()
        wait_for(lambda: count(store) == FIRST + SECOND, 90, what="curation to resume after the fault healed")
        resumed_s = time.monotonic() - t0
        wait_for(lambda: committed(settings) == FIRST + SECOND, 30, what="the offsets committed after the fault")
        time.sleep(1)
        total = FIRST + SECOND
        assert count(store, "SELECT count() FROM curation_events FINAL") == total
        kept = count(store, "SELECT count() FROM curation_events FINAL WHERE outcome = 'kept'")
        assert count(store, "SELECT count() FROM examples FINAL") == kept > 0
        ids = {r["id"] for r in store.rows("SELECT DISTINCT id FROM curation_events")}
        assert ids == {f"a{i}" for i in range(FIRST)} | {f"b{i}" for i in range(SECOND)}
        assert worker.stop() == 0
        figures = {"stalled": stalled, "resumed_after_heal_s": round(resumed_s, 1),
                   "retries_logged": worker.log().count("retrying in")}
        print(f"\n{expect_kind}: {figures}")
        if os.environ.get("FLYWHEEL_FAULT_FIGURES"):  # bench/faults.py collects them for its report
            with open(os.environ["FLYWHEEL_FAULT_FIGURES"], "a") as f:
                f.write(json.dumps({"fault": expect_kind, "events_before": FIRST, "events_during": SECOND,
                                    "fault_lasted_s": STALL, **figures}) + "\n")
        return figures
    finally:
        worker.kill()


def test_store_unreachable_stalls_acks_nothing_and_resumes(settings, tmp_path):
    store = open_warehouse(settings, own=True)
    apply_ddl(store, window_seconds=settings.window_seconds)
    owner = OwnerServer(store, settings.data_dir).start()
    host, port = owner.url.removeprefix("http://").split(":")
    relay = CuttableRelay((host, int(port)))
    # the worker reaches the store through the relay
    write_owner_file(owner.path, {"url": f"http://127.0.0.1:{relay.port}", "token": owner.token,
                                  "pid": os.getpid()})
    try:
        run_fault(settings, tmp_path, store, relay.cut, relay.heal, "store")
    finally:
        owner.stop()
        store.close()


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or r.returncode}); needs root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path) -> None:
    """Write zeros until the filesystem is full."""
    block = b"\0" * (1 << 20)
    with open(path, "wb") as f:
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError:
            pass
        try:
            os.fsync(f.fileno())
        except OSError:
            pass


def test_disk_full_stalls_acks_nothing_and_resumes(settings, tmp_path, small_disk):
    from dataclasses import replace

    data = small_disk / "data"
    disk_settings = load_settings({}, data_dir=data, tasks_dir=settings.tasks_dir)
    disk_settings = replace(disk_settings, kafka=settings.kafka)
    store = open_warehouse(disk_settings, own=True)
    apply_ddl(store, window_seconds=disk_settings.window_seconds)
    owner = OwnerServer(store, disk_settings.data_dir).start()
    ballast = small_disk / "ballast"
    try:
        run_fault(disk_settings, tmp_path, store, lambda: fill(ballast), lambda: ballast.unlink(), "disk_full")
    finally:
        owner.stop()
        store.close()
