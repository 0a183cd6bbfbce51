"""CLI commands of the review stage: `flywheel review status/export/import` and `flywheel gold grow`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
import orjson

from kernel.cli import RunFailure, UsageFailure, ctx
from kernel.commands import gold


@click.group()
def review():
    """Review items and verdicts: status, and JSONL for Argilla or Label Studio."""


@review.command("status")
@click.option("--task", "task_name", required=True, help="Task name, as declared in its TOML file.")
def review_status(task_name):
    """Items per status, and what became of completed ones."""
    from kernel.warehouse import sql_str
    from streams.review import store as rs

    task = ctx().task(task_name)
    with ctx().store() as store:
        counts = rs.status_counts(store, task.name)
        routed = store.rows(f"SELECT destination, outcome, count() AS n FROM review_routing FINAL "
                            f"WHERE task = {sql_str(task.name)} GROUP BY destination, outcome ORDER BY 1, 2")
    click.echo(f"review items of {task.name}: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))
    for r in routed:
        click.echo(f"  {r['destination']:5} {r['outcome']:9} {r['n']}")


@review.command("export")
@click.option("--task", "task_name", required=True, help="Task name, as declared in its TOML file.")
@click.option("--status", type=click.Choice(["pending", "submitted", "discarded", "all"]), default="pending",
              show_default=True)
@click.option("--format", "fmt", type=click.Choice(["flat", "label-studio"]), default="flat", show_default=True,
              help="flat: one object per item (Argilla); label-studio: {data, predictions} tasks.")
@click.option("-o", "--output", type=click.File("wb"), default="-", help="File to write. [default: stdout]")
def review_export(task_name, status, fmt, output):
    """Write the review items of a task as JSON Lines."""
    from streams.review.transfer import export_rows, to_label_studio

    task = ctx().task(task_name)
    n = 0
    with ctx().store() as store:
        for row in export_rows(store, task, None if status == "all" else status):
            output.write(orjson.dumps(to_label_studio(row) if fmt == "label-studio" else row) + b"\n")
            n += 1
    output.flush()
    click.echo(f"exported {n} {status} items of {task.name}", err=True)


@review.command("import")
@click.option("--task", "task_name", required=True, help="Task name, as declared in its TOML file.")
@click.option("--reviewer", default=None, help="Reviewer name for lines that carry none.")
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers. [default: settings]")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def review_import(task_name, reviewer, bootstrap, file):
    """Publish the verdicts in FILE (JSON Lines, flat or a Label Studio export) on review.verdicts.

    Every line is checked first; one bad line publishes nothing. Importing the same file twice
    counts once (verdict ids come from the content). The review agent of `flywheel up` applies them.
    """
    from streams.review.transfer import TransferError, parse_verdict_lines

    task = ctx().task(task_name)
    try:
        verdicts = parse_verdict_lines(file.read_bytes().splitlines(), task, reviewer, str(file))
    except TransferError as exc:
        raise UsageFailure(str(exc)) from None
    kafka = ctx().settings.kafka
    asyncio.run(publish_verdicts(kafka, verdicts, bootstrap))
    click.echo(f"published {len(verdicts)} verdicts for {task.name} to review.verdicts at {bootstrap or kafka.servers}")


async def publish_verdicts(kafka, verdicts: list[dict], bootstrap: str | None = None) -> None:
    from aiokafka import AIOKafkaProducer

    from schemas.topics import REVIEW_VERDICTS

    kw = kafka.aiokafka_kwargs()
    if bootstrap:
        kw["bootstrap_servers"] = bootstrap
    producer = AIOKafkaProducer(**kw, acks="all")
    await producer.start()
    try:
        for v in verdicts:
            await producer.send(REVIEW_VERDICTS.name, orjson.dumps(v), key=v["task"].encode())
        await producer.flush()
    finally:
        await producer.stop()


@gold.command("grow")
@click.option("--task", "task_name", required=True, help="Task name, as declared in its TOML file.")
def gold_grow(task_name):
    """Make a new gold version: the current one plus the completed review items bound for gold.

    Items whose input is an exact or near duplicate of an example that trained (or would train)
    a model version, or of a gold example, are refused; the reasons are printed and kept in
    review_routing. The gate pins a fresh baseline for the new version when it first uses it.
    """
    from kernel.gold import GoldError
    from streams.review.grow import grow

    task = ctx().task(task_name)
    with ctx().store() as store:
        try:
            res = grow(store, task)
        except GoldError as exc:  # another writer held the version too long
            raise RunFailure(str(exc)) from None
    click.echo(res.summary())
    for item_id, reason in res.refused:
        click.echo(f"  refused {item_id}: {reason}")
    sys.stdout.flush()


# `gold grow` joins the kernel's `gold` group (attached above); `review` is this stage's own.
commands: list = [review]
