"""Run `flywheel up` as a real child process against a test broker, for integration tests.

``WorkerProcess(..., worker_only=True)`` runs only the stream worker (the child that `up`
supervises: ``streams.worker.runner.worker_main``) against a store that another process owns
and serves (the test, through OwnerServer), so that several workers of one consumer group can
share one store, as they share a ClickHouse server in production.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kernel.warehouse.remote import RemoteWarehouse, read_owner


class WorkerProcess:
    def __init__(self, settings, log_path: Path, extra_env: dict | None = None, worker_only: bool = False) -> None:
        self.settings = settings
        self.worker_only = worker_only
        self.log_path = Path(log_path)
        self.env = {
            **os.environ,
            "FLYWHEEL_KAFKA_BOOTSTRAP": settings.kafka.servers,
            "FLYWHEEL_DATA_DIR": str(settings.data_dir),
            "FLYWHEEL_TASKS_DIR": str(settings.tasks_dir),
            "FLYWHEEL_SINK_FLUSH_SECONDS": "0.3",
            "FLYWHEEL_SESSION_TIMEOUT_SECONDS": "4",
            "FLYWHEEL_CONSOLE_PORT": "0",  # no console beside `up` unless a test asks for one
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> "WorkerProcess":
        out = open(self.log_path, "ab")
        argv = (["-c", "from streams.worker.runner import worker_main; worker_main()", "info"] if self.worker_only
                else ["-c", "from flywheel.cli import main; main()", "up"])
        self.proc = subprocess.Popen([sys.executable, *argv], env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if b"worker     ready" in self.log_path.read_bytes():
                return self
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"worker not ready within {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def store(self) -> RemoteWarehouse:
        return RemoteWarehouse(read_owner(self.settings.data_dir))

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else 0

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.3, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # the owner may be starting up
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")

