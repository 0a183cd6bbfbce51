"""CLI command of the stream worker: `flywheel up`."""

from __future__ import annotations

import sys

import click

from kernel.cli import ctx


@click.command()
@click.option("--listen", default=None, metavar="HOST:PORT",
              help="Where the embedded broker listens. [default: 127.0.0.1:9092]")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--console-port", type=click.IntRange(0, 65535), default=None,
              help="Port of the web console started with the worker; 0 starts none. "
                   "[default: FLYWHEEL_CONSOLE_PORT or 8765]")
@click.option("--no-console", is_flag=True, help="Do not start the web console.")
def up(listen, log_level, console_port, no_console):
    """Run flywheel: broker, topics, warehouse and the stream worker.

    Without FLYWHEEL_KAFKA_BOOTSTRAP it starts the embedded broker, its topics on disk under
    --data-dir (kept across restarts; what every consumer group committed is deleted every
    10 s; FLYWHEEL_BROKER_STORAGE=memory keeps them in memory instead). Without FLYWHEEL_CLICKHOUSE_URL it owns the embedded ClickHouse
    store under --data-dir, kept across restarts, and serves it to `flywheel sql`. Once the
    broker and the store are up it also starts the web console on 127.0.0.1:8765
    (--console-port, FLYWHEEL_CONSOLE_HOST/_PORT; --no-console or port 0: none); a console
    that cannot start is reported and the worker runs on.
    """
    from dataclasses import replace

    from kernel.broker import BrokerError
    from streams.worker.runner import StartupError, run_up

    c = ctx()
    settings = c.settings
    if listen:
        settings = replace(settings, kafka=replace(settings.kafka, embedded_listen=listen))
    if no_console or console_port is not None:
        settings = replace(settings, console_port=0 if no_console else console_port)
    tasks = c.tasks()
    try:
        sys.exit(run_up(settings, tasks, echo=click.echo, loglevel=log_level,
                        on_ready=lambda bootstrap: _start_console(settings, bootstrap)))
    except (BrokerError, StartupError) as exc:
        raise click.ClickException(str(exc)) from None


def _start_console(settings, bootstrap: str):
    """The console child of `up` (console.launch); returns its stop function, or None."""
    from console.launch import start
    from streams.worker.runner import worker_env

    try:
        proc = start(settings, worker_env(settings, bootstrap), echo=click.echo)
    except Exception as exc:  # noqa: BLE001 - the console never takes the worker down
        click.echo(f"console    not started: {exc}; the stream worker runs without it (--no-console hides this)")
        return None
    return proc.stop if proc is not None else None


commands: list = [up]
