"""`flywheel up`: broker (embedded unless configured), topics, warehouse, the stream worker."""

from __future__ import annotations

import asyncio
import gc
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
        echo("worker     starting the stream worker; Ctrl-C stops everything cleanly")
        return _run_worker(settings, tasks, store, loglevel)
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


def _run_worker(settings, tasks, store, loglevel: str) -> int:
    use_uvloop()
    from streams.worker.app import build_app

    app, _ctx = build_app(settings, tasks, store)
    tune_gc()  # after build_app: the state it loaded is frozen
    return run_faust(app, loglevel)


def run_faust(app, loglevel: str = "info") -> int:
    """Run a Faust app's worker in this process until it is stopped (SIGINT/SIGTERM)."""
    import faust

    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False,
                          override_logging=True, console_port=0)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
