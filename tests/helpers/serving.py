"""`flywheel serve` as a real child process, and the CLI in-process, for integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner

from flywheel.cli import main
from tests.conftest import free_port

TASK = "transactions"
ROOT = Path(__file__).resolve().parents[2]


def cli(settings, *args, input=None):
    return CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "--tasks", str(settings.tasks_dir),
                                     *args], env={"FLYWHEEL_KAFKA_BOOTSTRAP": settings.kafka.servers}, input=input)


class Serve:
    """``flywheel serve`` on ``port`` and ``model_port`` (free ones when not given; model_port 0: no
    model server), in front of ``backend`` (a model server's URL) when given."""

    def __init__(self, settings, log_path, port: int | None = None, model_port: int | None = None,
                 backend: str | None = None):
        self.port = port or free_port()
        self.model_port = free_port() if model_port is None else model_port
        self.log_path = log_path
        args = [sys.executable, "-c", "from flywheel.cli import main; main()", "serve", "--port", str(self.port),
                "--model-port", str(self.model_port)]
        if backend:
            args += ["--backend", backend]
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": pythonpath, "FLYWHEEL_KAFKA_BOOTSTRAP": settings.kafka.servers,
               "FLYWHEEL_DATA_DIR": str(settings.data_dir), "FLYWHEEL_TASKS_DIR": str(settings.tasks_dir)}
        self.proc = subprocess.Popen(args, env=env, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, cwd=ROOT)
        self.url = f"http://127.0.0.1:{self.port}"
        self.model_url = f"http://127.0.0.1:{self.model_port}" if self.model_port else None

    def wait_ready(self, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            if b"flywheel serve:" in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        raise AssertionError(f"serve not ready:\n{self.log()}")

    def log(self):
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def answered_by(serve, text, version, timeout=60.0, task=TASK):
    """Poll the router until the task is answered by ``version``; return the seconds it took.
    Every answer on the way must be a success (no request fails during a switch)."""
    t0 = time.monotonic()
    with httpx.Client(base_url=serve.url, timeout=60) as c:
        while time.monotonic() - t0 < timeout:
            r = c.post("/v1/predict", json={"model": task, "input": text})
            if r.status_code == 503 or (r.status_code == 404 and "no task" in r.text):
                time.sleep(0.1)        # nothing serves the task yet
                continue
            assert r.status_code == 200, r.text
            assert r.headers["x-flywheel-version"] == r.json()["model_version"]
            if r.json()["model_version"] == version:
                return time.monotonic() - t0
            time.sleep(0.05)
    raise AssertionError(f"{version} never answered:\n{serve.log()}")
