"""CLI command of the curate stage: `flywheel produce`."""

from __future__ import annotations

import asyncio

import click

from kernel.cli import ctx


@click.command()
@click.argument("file", type=click.File("rb"))
@click.option("--topic", default="teacher.logs", show_default=True)
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers. [default: settings]")
def produce(file, topic, bootstrap):
    """Publish each line of FILE (JSON Lines; - for stdin) as one message.

    Lines are sent as they are, keyed by their "task" field: the worker validates them, and
    a malformed line becomes a dead letter rather than being refused here.
    """
    from streams.curate.producer import publish_lines

    kafka = ctx().settings.kafka
    servers = bootstrap or kafka.servers
    n = asyncio.run(publish_lines(kafka, servers, topic, file))
    click.echo(f"published {n} messages to {topic} at {servers}")


commands: list = [produce]
