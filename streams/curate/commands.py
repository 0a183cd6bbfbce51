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
    a malformed line becomes a dead letter rather than being refused here; the lines that are
    not JSON are counted and named. Only topics of flywheel's catalogue are accepted.
    """
    from kernel.cli import UsageFailure
    from schemas.topics import CATALOGUE
    from streams.curate.producer import publish_lines

    names = [t.name for t in CATALOGUE]
    if topic not in names:
        raise UsageFailure(f"{topic!r} is not one of flywheel's topics (option --topic); use one of: "
                           f"{', '.join(names)}")
    kafka = ctx().settings.kafka
    servers = bootstrap or kafka.servers
    res = asyncio.run(publish_lines(kafka, servers, topic, file))
    good = res.n - len(res.not_json)
    line = f"published {res.n} messages to {topic} at {servers}"
    if res.not_json:
        shown = ", ".join(map(str, res.not_json[:10])) + (", ..." if len(res.not_json) > 10 else "")
        line += (f": {good} JSON, {len(res.not_json)} not JSON (lines {shown}; "
                 "the worker routes those to dead.letters)")
    click.echo(line)


commands: list = [produce]
