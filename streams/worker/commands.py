"""CLI command of the stream worker: `flywheel up`."""

from __future__ import annotations

import sys

import click

from kernel.cli import ctx


@click.command()
@click.option("--listen", default=None, metavar="HOST:PORT",
              help="Where the embedded broker listens. [default: 127.0.0.1:9092]")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def up(listen, log_level):
    """Run flywheel: broker, topics, warehouse and the stream worker.

    Without FLYWHEEL_KAFKA_BOOTSTRAP it starts the embedded broker (memory storage: topics
    live as long as it runs). Without FLYWHEEL_CLICKHOUSE_URL it owns the embedded ClickHouse
    store under --data-dir, kept across restarts, and serves it to `flywheel sql`.
    """
    from dataclasses import replace

    from kernel.broker import BrokerError
    from streams.worker.runner import StartupError, run_up

    c = ctx()
    settings = c.settings
    if listen:
        settings = replace(settings, kafka=replace(settings.kafka, embedded_listen=listen))
    tasks = c.tasks()
    try:
        sys.exit(run_up(settings, tasks, echo=click.echo, loglevel=log_level))
    except (BrokerError, StartupError) as exc:
        raise click.ClickException(str(exc)) from None


commands: list = [up]
