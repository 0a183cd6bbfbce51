"""`flywheel console`: the web console (review page, overview) on 127.0.0.1 by default."""

from __future__ import annotations

import click

from kernel.cli import RunFailure, UsageFailure, ctx


@click.command("console")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback needs a token (FLYWHEEL_CONSOLE_TOKEN or _FILE).")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
def console(host, port):
    """Serve the console: a keyboard-driven review page and an overview per task.

    Verdicts are published on review.verdicts (the review agent of `flywheel up` applies them);
    pages read the warehouse through the running `flywheel up` (or the ClickHouse server).
    All assets are served by the console itself: it works without internet.
    """
    import uvicorn

    from console.app import Console, build_app
    from console.security import is_loopback
    from kernel.warehouse import open_warehouse
    from kernel.warehouse.embedded import EmbeddedWarehouse

    c = ctx()
    settings = c.settings
    token = settings.console_token.get() if settings.console_token else None
    if not is_loopback(host) and not token:
        raise UsageFailure(f"binding {host} exposes the console beyond this machine: set FLYWHEEL_CONSOLE_TOKEN "
                           "(or FLYWHEEL_CONSOLE_TOKEN_FILE) to a long random secret, or use --host 127.0.0.1")
    tasks = c.tasks()
    store = open_warehouse(settings)
    if isinstance(store, EmbeddedWarehouse):
        store.close()
        raise RunFailure(f"no `flywheel up` owns the store under {settings.data_dir}: start it first (the console "
                         "reads the warehouse through it and never takes the store from the worker)")
    producer = {}

    async def start() -> None:
        from aiokafka import AIOKafkaProducer

        p = AIOKafkaProducer(**settings.kafka.aiokafka_kwargs(), acks="all")
        await p.start()
        producer["p"] = p

    async def stop() -> None:
        if "p" in producer:
            await producer["p"].stop()

    async def publish(msg: dict) -> None:
        import orjson

        from schemas.topics import REVIEW_VERDICTS

        if "p" not in producer:
            await start()
        await producer["p"].send_and_wait(REVIEW_VERDICTS.name, orjson.dumps(msg), key=msg["task"].encode())

    app = build_app(Console(tasks, store, publish, token, kafka=settings.kafka), on_shutdown=[stop])
    click.echo(f"console    http://{host}:{port}/  ({'token required' if token else 'no token: loopback only'})")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        store.close()


commands: list = [console]
