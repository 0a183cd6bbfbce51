"""The console beside `flywheel up`, and the server both `flywheel console` and `up` run.

`up` starts the console as a child process once the store is served (the owner endpoint, or
the ClickHouse server) and the broker is up, and stops it with itself. The console is a
convenience: when it cannot start (its port is taken, a non-loopback address without a token)
or dies, `up` says so in one line naming the fix and the stream worker runs on without it.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Callable

from console.security import is_loopback
from kernel.settings import Settings
from kernel.tasks import TaskConfig

log = logging.getLogger("flywheel.console")
STOP_TIMEOUT_SECONDS = 5.0   # a console that does not stop on SIGTERM within this is killed
READY_TIMEOUT_SECONDS = 60.0


class ConsoleSetupError(RuntimeError):
    """The console cannot serve with these settings; ``usage`` says it is a configuration mistake."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


def token_problem(settings: Settings, host: str) -> str | None:
    if not is_loopback(host) and not settings.console_token:
        return (f"binding {host} exposes the console beyond this machine: set FLYWHEEL_CONSOLE_TOKEN "
                "(or FLYWHEEL_CONSOLE_TOKEN_FILE) to a long random secret, or use 127.0.0.1")
    return None


def serve(settings: Settings, tasks: dict[str, TaskConfig], host: str, port: int, echo: Callable = print) -> None:
    """Serve the console until stopped (SIGINT/SIGTERM). Raises ConsoleSetupError before serving."""
    import uvicorn

    from console.app import Console, build_app
    from kernel.warehouse import open_warehouse
    from kernel.warehouse.embedded import EmbeddedWarehouse

    problem = token_problem(settings, host)
    if problem:
        raise ConsoleSetupError(problem, usage=True)
    token = settings.console_token.get() if settings.console_token else None
    store = open_warehouse(settings)
    if isinstance(store, EmbeddedWarehouse):
        store.close()
        raise ConsoleSetupError(f"no `flywheel up` owns the store under {settings.data_dir}: start it first (the "
                                "console reads the warehouse through it and never takes the store from the worker)")
    producer: dict = {}

    async def stop() -> None:
        if "p" in producer:
            await producer["p"].stop()

    async def publish(msg: dict) -> None:
        import orjson
        from aiokafka import AIOKafkaProducer

        from schemas.topics import REVIEW_VERDICTS

        if "p" not in producer:
            p = AIOKafkaProducer(**settings.kafka.aiokafka_kwargs(), acks="all")
            await p.start()
            producer["p"] = p
        await producer["p"].send_and_wait(REVIEW_VERDICTS.name, orjson.dumps(msg), key=msg["task"].encode())

    app = build_app(Console(tasks, store, publish, token, kafka=settings.kafka), on_shutdown=[stop])
    echo(f"console    http://{_url_host(host)}:{port}/  ({'token required' if token else 'no token: loopback only'})")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        store.close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def port_problem(host: str, port: int) -> str | None:
    """Why (host, port) cannot be bound now, or None. Checked before the child starts so that
    the usual failure (another console, another program) gets a clear line at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"{host}:{port} is already in use"
        return f"cannot bind {host}:{port} ({exc.strerror or exc})"
    return None


FIX = "choose another port with `flywheel up --console-port N` (or FLYWHEEL_CONSOLE_PORT), or turn it off with --no-console"


def _child_setup() -> None:  # between fork and exec: die with `up`, own process group (Ctrl-C reaches `up` only)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setpgid(0, 0)


class ConsoleProcess:
    """The console child of `up`: started, watched (a death is reported, never fatal), stopped."""

    def __init__(self, proc: subprocess.Popen, url: str, echo: Callable) -> None:
        self.proc, self.url, self.echo = proc, url, echo
        self._stopping = threading.Event()
        self.ready = threading.Event()
        self._watch = threading.Thread(target=self._watcher, name="console-watch", daemon=True)
        self._watch.start()

    def _watcher(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while self.proc.poll() is None and not self._stopping.is_set():
            if not self.ready.is_set():
                try:
                    with urllib.request.urlopen(self.url + "healthz", timeout=1) as r:
                        if r.status == 200:
                            self.ready.set()
                except OSError:
                    if time.monotonic() > deadline:
                        self.echo(f"console    not answering on {self.url} after {READY_TIMEOUT_SECONDS:.0f}s; "
                                  "the worker runs on without it")
                        deadline = float("inf")
            self._stopping.wait(0.2)
        if not self._stopping.is_set():
            self.proc.wait()
            self.echo(f"console    process {self.proc.pid} exited with {self.proc.returncode} (see the lines above); "
                      f"the stream worker runs on without it. To fix it {FIX}")

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        self._stopping.set()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.echo(f"console    did not stop within {timeout:.0f}s; killed")
                self.proc.kill()
                self.proc.wait()
        self._watch.join(2)
        return self.proc.returncode


def start(settings: Settings, env: dict[str, str], *, echo: Callable = print) -> ConsoleProcess | None:
    """Start the console child for `up` on settings.console_host:console_port (0: off), with the
    child environment ``env`` (the same data dir, tasks and broker as the worker). None when it
    is off or cannot start; the reason is echoed with the fix."""
    host, port = settings.console_host, settings.console_port
    if not port:
        return None
    problem = token_problem(settings, host) or port_problem(host, port)
    if problem:
        fix = FIX if "in use" in problem or "bind" in problem else "or turn it off with --no-console"
        echo(f"console    not started: {problem}; the stream worker runs without it. To fix it {fix}")
        return None
    cmd = [sys.executable, "-c", "from console.launch import child_main; child_main()", host, str(port)]
    try:
        proc = subprocess.Popen(cmd, env=env, preexec_fn=_child_setup)
    except OSError as exc:
        echo(f"console    not started: {exc}; the stream worker runs without it")
        return None
    url = f"http://{_url_host(host)}:{port}/"
    echo(f"console    starting on {url} (process {proc.pid}; --no-console turns it off)")
    return ConsoleProcess(proc, url, echo)


def child_main() -> None:
    """The console child's entry point: settings and tasks from the environment `up` set."""
    from kernel.settings import load_settings
    from kernel.tasks import load_tasks

    host, port = sys.argv[1], int(sys.argv[2])
    settings = load_settings()
    tasks = load_tasks(settings.tasks_dir)
    try:
        serve(settings, tasks, host, port, echo=lambda line: print(line, flush=True))
    except ConsoleSetupError as exc:
        print(f"console    not started: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
