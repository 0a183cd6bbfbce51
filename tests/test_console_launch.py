"""The console beside `flywheel up`: started once the store is served, loopback by default, the
same token rule as `flywheel console`, stopped with `up` within a bound, and a console that
cannot start (port taken) or dies never takes the stream worker down."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import urllib.request
from dataclasses import replace

from console.launch import port_problem, start
from tests.conftest import free_port
from tests.worker import WorkerProcess, wait_for


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_off_port_taken_and_public_address_without_token_start_nothing(settings):
    lines: list[str] = []
    assert start(replace(settings, console_port=0), {}, echo=lines.append) is None and lines == []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert "already in use" in port_problem("127.0.0.1", port)
        assert start(replace(settings, console_port=port), {}, echo=lines.append) is None
    assert "already in use" in lines[-1] and "--console-port" in lines[-1] and "--no-console" in lines[-1]
    assert "worker runs without it" in lines[-1]
    assert start(replace(settings, console_host="0.0.0.0", console_port=free_port()), {}, echo=lines.append) is None
    assert "FLYWHEEL_CONSOLE_TOKEN" in lines[-1]


def test_up_starts_the_console_survives_its_death_and_stops_it(settings, tmp_path):
    port = free_port()
    with WorkerProcess(settings, tmp_path / "up.log", extra_env={"FLYWHEEL_CONSOLE_PORT": str(port)}) as up:
        url = f"http://127.0.0.1:{port}"

        def healthy():
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                return r.status == 200
        wait_for(healthy, 60, what="the console of `up`")
        with urllib.request.urlopen(url + "/overview/transactions", timeout=30) as r:
            assert r.status == 200 and b"Overview" in r.read()
        log = up.log()
        assert log.index("warehouse  embedded chdb") < log.index("console    starting on")  # after the store
        pid = int(re.search(r"console    starting on \S+ \(process (\d+)", log).group(1))
        t0 = time.monotonic()
        rc = up.stop(timeout=40)
        assert rc == 0 and time.monotonic() - t0 < settings.stop_timeout_seconds + 10
        wait_for(lambda: not _alive(pid), 10, what="the console to stop with `up`")
        assert "exited with" not in up.log()  # a stop asked for is not reported as a death

    # a console that dies is reported; the worker runs on
    port = free_port()
    with WorkerProcess(settings, tmp_path / "up2.log", extra_env={"FLYWHEEL_CONSOLE_PORT": str(port)}) as up:
        wait_for(lambda: "console    starting on" in up.log(), 30, what="the console line")
        pid = int(re.search(r"\(process (\d+)", up.log().split("console    starting on")[1]).group(1))
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: "exited with -9" in up.log(), 20, what="the console's death reported")
        assert "--console-port" in up.log().split("exited with -9")[1].splitlines()[0]
        time.sleep(1)
        assert up.proc.poll() is None  # `up` and its worker run on
        child = int((settings.data_dir / "worker.pid").read_text())
        assert _alive(child)


def test_up_runs_on_when_the_console_port_is_taken(settings, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with WorkerProcess(settings, tmp_path / "up.log", extra_env={"FLYWHEEL_CONSOLE_PORT": str(port)}) as up:
            log = up.log()
            line = next(ln for ln in log.splitlines() if ln.startswith("console"))
            assert f"127.0.0.1:{port} is already in use" in line and "--console-port" in line, line
            assert "worker     ready" in log and up.proc.poll() is None
