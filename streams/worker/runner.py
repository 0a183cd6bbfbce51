"""`flywheel up`: broker (embedded unless configured), topics, warehouse, the stream worker."""

from __future__ import annotations

import asyncio
import logging

from kernel.broker import EmbeddedBroker, ensure_topics
from kernel.settings import Settings
from kernel.tasks import TaskConfig
from kernel.warehouse import open_warehouse
from kernel.warehouse.embedded import StoreBusy
from kernel.warehouse.migrate import apply_ddl
from kernel.warehouse.owner import OwnerServer

log = logging.getLogger("flywheel")


class StartupError(RuntimeError):
    pass


def run_up(settings: Settings, tasks: dict[str, TaskConfig], *, echo=print, loglevel: str = "info") -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker = None
    owner = None
    store = None
    try:
        if settings.kafka.embedded:
            broker = EmbeddedBroker(settings.kafka.embedded_listen, log_path=settings.data_dir / "broker.log")
            broker.start()
            echo(f"broker     embedded Tansu (memory storage) listening on {broker.bootstrap}")
        else:
            echo(f"broker     {settings.kafka.servers} ({settings.kafka.security_protocol})")
        created = asyncio.run(ensure_topics(settings.kafka))
        if created:
            echo(f"topics     created {', '.join(created)}")
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
        echo("worker     starting the stream worker")
        return _run_worker(settings, tasks, store, loglevel, echo)
    finally:
        if owner is not None:
            owner.stop()
        if store is not None:
            store.close()
        if broker is not None:
            broker.stop()


def use_uvloop() -> None:
    """uvloop gave a decode-only Faust agent about +37% events/s on 2 vCPUs (Tansu, 300-byte JSON); optional."""
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())


def _run_worker(settings, tasks, store, loglevel: str, echo=print) -> int:
    use_uvloop()
    from streams.worker.app import build_app

    app, _ctx = build_app(settings, tasks, store)
    return run_faust(app, loglevel, lambda line: echo(line) or _flush())


def _flush() -> None:
    import sys

    sys.stdout.flush()


# Faust and mode log every service's "Starting..."/"Stopping..." at INFO (about 40 lines at
# start-up, as many at shutdown), which buries the banner. Below --log-level debug they log
# warnings and errors only; flywheel's own loggers keep the level asked for.
CHATTY_LOGGERS = ("faust", "mode", "aiokafka", "kafka")
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
            echo(READY_LINE)

    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False,
                    override_logging=True, console_port=0)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
