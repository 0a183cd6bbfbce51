"""`flywheel up`: broker (embedded unless configured), topics, warehouse, the stream worker."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from kernel.broker import EmbeddedBroker, Trimmer, ensure_topics
from kernel.settings import Settings
from kernel.tasks import TaskConfig
from kernel.warehouse import open_warehouse
from kernel.warehouse.embedded import StoreBusy
from kernel.warehouse.migrate import apply_ddl
from kernel.warehouse.owner import OwnerServer

log = logging.getLogger("flywheel")


class StartupError(RuntimeError):
    pass


def run_up(settings: Settings, tasks: dict[str, TaskConfig], *, echo=print, loglevel: str = "info",
           on_ready=None) -> int:
    """``on_ready(bootstrap)``: called once the broker and the store are served, before the
    worker starts; it may return a function that `up` calls when it stops (the console)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not settings.clickhouse.url:
        from kernel.warehouse.embedded import private_umask

        private_umask()  # before the broker's log and files are created, not only the store's
    broker = None
    owner = None
    store = None
    trimmer = None
    try:
        if settings.kafka.embedded:
            broker = EmbeddedBroker(settings.kafka.embedded_listen, log_path=settings.data_dir / "broker.log",
                                    storage=settings.broker_path)
            broker.start()
            where = (f"disk storage at {settings.broker_path.resolve()}" if settings.broker_path
                     else "memory storage: topics are lost when `up` stops")
            echo(f"broker     embedded Tansu ({where}) listening on {broker.bootstrap}")
        else:
            echo(f"broker     {settings.kafka.servers} ({settings.kafka.security_protocol})")
        created = asyncio.run(ensure_topics(settings.kafka))
        if created:
            echo(f"topics     created {', '.join(created)}")
        if broker is not None:  # delete what every consumer group committed, where the broker can
            trimmer = Trimmer(broker.bootstrap, settings.kafka.trim_seconds, echo=echo,
                              disk_root=settings.broker_path)
            trimmer.start()
        try:
            store = open_warehouse(settings, own=True)
        except StoreBusy:
            raise StartupError(f"the store under {settings.data_dir} is owned by another running flywheel "
                               "process; stop it first or use another --data-dir") from None
        n = apply_ddl(store, window_seconds=settings.window_seconds)
        if settings.clickhouse.url:
            echo(f"warehouse  ClickHouse server {settings.clickhouse.url} ({n} DDL statements applied)")
        else:
            owner = OwnerServer(store, settings.data_dir).start()
            echo(f"warehouse  embedded chdb at {settings.chdb_path.resolve()} (served to other "
                 f"flywheel commands at {owner.url})")
        echo(f"tasks      {', '.join(f'{t.name} ({t.source})' for t in tasks.values())}")
        echo("worker     starting the stream worker (a child process, restarted if it dies)")
        bootstrap = broker.bootstrap if broker is not None else settings.kafka.servers
        stop_extra = on_ready(bootstrap) if on_ready is not None else None
        try:
            return supervise(settings, bootstrap, loglevel, echo=echo)
        finally:
            if stop_extra is not None:
                stop_extra()
    finally:
        if trimmer is not None:
            trimmer.stop.set()
        if owner is not None:
            owner.stop()
        if store is not None:
            store.close()
        if broker is not None:
            broker.stop()


HEALTHY_AFTER = 60.0  # a child that ran this long restarts after the first backoff again


def worker_env(settings: Settings, bootstrap: str) -> dict[str, str]:
    """The child's environment: this one, pinned to the parent's data dir, tasks and broker."""
    env = dict(os.environ)
    env["FLYWHEEL_DATA_DIR"] = str(settings.data_dir.resolve())
    env["FLYWHEEL_TASKS_DIR"] = str(settings.tasks_dir.resolve())
    env["FLYWHEEL_KAFKA_BOOTSTRAP"] = bootstrap
    return env


def _child_setup() -> None:  # between fork and exec: die with `up`, own process group
    # SIGKILL, not SIGTERM: when `up` dies the broker and the store endpoint die with it, and a
    # Faust worker told to stop then waits forever to commit to a broker that is gone (seen:
    # orphaned workers after `up` was killed). Nothing is lost: uncommitted work is replayed.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setpgid(0, 0)  # Ctrl-C reaches `up` only; `up` stops the child


def supervise(settings: Settings, bootstrap: str, loglevel: str, *, echo=print,
              stop: threading.Event | None = None) -> int:
    """Run the stream worker as a child process until SIGTERM/SIGINT (or ``stop``); restart it
    with backoff (1 s doubling to settings.restart_backoff_max_seconds, 30 s by default)
    whenever it dies. The broker and the store stay here,
    so a worker crash loses nothing: uncommitted messages are replayed by the next child.
    A stop signal gives the child settings.stop_timeout_seconds to finish, then kills it."""
    stop = stop or threading.Event()
    restore = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            restore[sig] = signal.signal(sig, lambda *_: stop.set())
    most = settings.restart_backoff_max_seconds
    backoff = min(1.0, most)
    restarts = 0
    cmd = [sys.executable, "-c", "from streams.worker.runner import worker_main; worker_main()", loglevel]
    env = worker_env(settings, bootstrap)
    pid_file = settings.data_dir / "worker.pid"
    try:
        while not stop.is_set():
            child = subprocess.Popen(cmd, env=env, preexec_fn=_child_setup)
            pid_file.write_text(str(child.pid))
            echo(f"worker     child process {child.pid} started" + (f" (restart {restarts})" if restarts else ""))
            started = time.monotonic()
            while child.poll() is None and not stop.wait(0.2):
                pass
            if stop.is_set():
                return _stop_child(child, settings.stop_timeout_seconds, echo)
            restarts += 1
            if time.monotonic() - started > HEALTHY_AFTER:
                backoff = min(1.0, most)
            echo(f"worker     child process {child.pid} exited with {child.returncode}; "
                 f"restarting in {backoff:.0f}s")
            stop.wait(backoff)
            backoff = min(backoff * 2, most)
        return 0
    finally:
        pid_file.unlink(missing_ok=True)
        for sig, handler in restore.items():
            signal.signal(sig, handler)


def _stop_child(child: subprocess.Popen, timeout: float, echo) -> int:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            echo(f"worker     child process {child.pid} did not stop within {timeout:.0f}s; killed "
                 "(its uncommitted messages are replayed on the next start)")
            child.kill()
            child.wait()
    return 0


def worker_main() -> None:
    """The child's entry point: settings from the environment that `up` set, the store through
    the owner's endpoint (or the ClickHouse server), the Faust worker in this process."""
    from kernel.settings import load_settings
    from kernel.tasks import load_tasks

    loglevel = sys.argv[1] if len(sys.argv) > 1 else "info"
    settings = load_settings()
    tasks = load_tasks(settings.tasks_dir)
    store = None
    for attempt in range(50):  # the owner may be finishing its start
        try:
            store = open_warehouse(settings)
            break
        except Exception as exc:  # noqa: BLE001 - OwnerUnreachable and the like
            if attempt == 49:
                raise
            log.warning("store not reachable yet (%s); retrying", exc)
            time.sleep(0.2)
    try:
        code = _run_worker(settings, tasks, store, loglevel)
    finally:
        store.close()
    sys.exit(code)


def use_uvloop() -> None:
    """uvloop gave a decode-only Faust agent about +37% events/s on 2 vCPUs (Tansu, 300-byte JSON); optional."""
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())


def tune_gc(gen0: int = 50_000, gen1: int = 20, gen2: int = 100) -> None:
    """Collect less often, and never rescan what start-up built (the dedupe memory, the app).

    Every event allocates a few container objects (Faust's ConsumerMessage and Event, the
    decoded log, the decision, the row); nearly all die by reference counting, yet with
    Python's default thresholds (700, 10, 10) the cyclic collector ran often enough to cost
    the curate agent 13-18 µs of CPU per event (measured with gc.callbacks in
    bench/curate_bench.py, 20k events, 2 runs). With these thresholds and gc.freeze() after
    start-up it was 1-4 µs, and events/s rose ~1.3x. Cycles are still collected, later."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0, gen1, gen2)


def _run_worker(settings, tasks, store, loglevel: str, echo=print) -> int:
    use_uvloop()
    from streams.worker.app import build_app

    app, _ctx = build_app(settings, tasks, store)
    tune_gc()  # after build_app: the state it loaded is frozen
    ops = _start_operations(settings)
    try:
        return run_faust(app, loglevel, lambda line: echo(line) or _flush())
    finally:
        ops.stop()


def _start_operations(settings):
    """/metrics and /health of the stream worker (FLYWHEEL_METRICS_PORT), lag of its group."""
    from kernel.metrics import start_operations
    from schemas.topics import LIVE_REQUESTS, TEACHER_LOGS

    return start_operations(settings, what="stream worker", port=settings.metrics_port,
                            group=settings.consumer_group, topics=[TEACHER_LOGS.name, LIVE_REQUESTS.name])


def _flush() -> None:
    import sys

    sys.stdout.flush()


# Faust and mode log every service's "Starting..."/"Stopping..." at INFO (about 40 lines at
# start-up, as many at shutdown), which buries the banner. Below --log-level debug they log
# warnings and errors only; flywheel's own loggers keep the level asked for.
CHATTY_LOGGERS = ("faust", "mode", "aiokafka", "kafka", "streams.worker.transport")
READY_LINE = "worker     ready: curating teacher.logs (Ctrl-C stops everything cleanly)"


def quiet_chatter(loglevel: str) -> None:
    if loglevel.lower() == "debug":
        return
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(loglevel.upper())))


def run_faust(app, loglevel: str = "info", echo=print) -> int:
    """Run a Faust app's worker in this process until it is stopped (SIGINT/SIGTERM)."""
    import faust

    class Worker(faust.Worker):
        def on_setup_root_logger(self, logger, level) -> None:
            super().on_setup_root_logger(logger, level)
            quiet_chatter(loglevel)

        def _on_startup_end_spinner(self) -> None:
            super()._on_startup_end_spinner()
            echo(f"{READY_LINE}; this worker now holds {getattr(self.app, 'holds', 'nothing')}")

    quiet_chatter(loglevel)  # before the worker starts its services, not only once it set up logging
    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False,
                    override_logging=True, console_port=0)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
