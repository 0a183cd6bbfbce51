"""The core commands: up, sql, gold import, produce."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from .cli import Ctx, main, pass_ctx
from .tasks import TaskConfigError, load_tasks

FORMATS_HELP = ("ClickHouse output format: PrettyCompactMonoBlock (default), JSONEachRow, TSV, "
                "TSVWithNames, CSVWithNames, Markdown, Vertical, ...")


def _tasks(ctx: Ctx):
    try:
        return load_tasks(ctx.settings.tasks_dir)
    except TaskConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _store(ctx: Ctx):
    from .warehouse import open_warehouse
    from .warehouse.migrate import apply_ddl
    from .warehouse.remote import OwnerUnreachable, RemoteWarehouse

    try:
        store = open_warehouse(ctx.settings)
    except OwnerUnreachable as exc:
        raise click.ClickException(str(exc)) from None
    if not isinstance(store, RemoteWarehouse):  # the owner has applied the DDL already
        apply_ddl(store, window_seconds=ctx.settings.window_seconds)
    return store


@main.command()
@click.option("--listen", default=None, metavar="HOST:PORT",
              help="Where the embedded broker listens. [default: 127.0.0.1:9092]")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
@pass_ctx
def up(ctx: Ctx, listen, log_level):
    """Run flywheel: broker, topics, warehouse and the stream worker.

    Without FLYWHEEL_KAFKA_BOOTSTRAP it starts the embedded broker (memory storage: topics
    live as long as it runs). Without FLYWHEEL_CLICKHOUSE_URL it owns the embedded ClickHouse
    store under --data-dir, kept across restarts, and serves it to `flywheel sql`.
    """
    from dataclasses import replace

    from .broker import BrokerError
    from .runner import StartupError, run_up

    settings = ctx.settings
    if listen:
        settings = replace(settings, kafka=replace(settings.kafka, embedded_listen=listen))
    tasks = _tasks(ctx)
    try:
        sys.exit(run_up(settings, tasks, echo=click.echo, loglevel=log_level))
    except (BrokerError, StartupError) as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("query")
@click.option("--format", "fmt", default="PrettyCompactMonoBlock", show_default=False, help=FORMATS_HELP)
@pass_ctx
def sql(ctx: Ctx, query, fmt):
    """Run one ClickHouse SQL statement against flywheel's warehouse.

    Works whether or not `flywheel up` runs (it asks the running process when it does).

    \b
      flywheel sql "SELECT outcome, count() FROM curation_events FINAL GROUP BY outcome"
      flywheel sql --format CSVWithNames "SELECT * FROM curation_windows ORDER BY window_start"
    """
    from .warehouse import WarehouseError

    with _store(ctx) as store:
        try:
            out = store.query(query, fmt)
        except WarehouseError as exc:
            raise click.ClickException(str(exc)) from None
    sys.stdout.buffer.write(out)
    sys.stdout.flush()


@main.group()
def gold():
    """Gold sets: frozen, versioned evaluation data per task."""


@gold.command("import")
@click.option("--task", "task_name", required=True, help="Task name, as declared in its TOML file.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_ctx
def gold_import(ctx: Ctx, task_name, file):
    """Import FILE.jsonl as a new gold set version.

    Each line: {"id": "g1", "input": "...", "output": "label", "slice": "optional",
    "teacher_output": "optional"}. The new version holds the previous one plus these lines
    (a repeated id replaces its example); importing the same content twice makes no version.
    """
    from .gold import GoldError, import_gold

    tasks = _tasks(ctx)
    if task_name not in tasks:
        raise click.BadParameter(f"unknown task {task_name!r}; declared: {', '.join(sorted(tasks))}",
                                 param_hint="--task")
    with _store(ctx) as store:
        try:
            res = import_gold(store, tasks[task_name], file)
        except GoldError as exc:
            raise click.ClickException(str(exc)) from None
    if res.created:
        click.echo(f"gold set {res.task} v{res.version}: {res.n_total} examples "
                   f"({res.n_imported} from {file.name})")
    else:
        click.echo(f"gold set {res.task} v{res.version} unchanged: {file.name} adds nothing new")


@main.command()
@click.argument("file", type=click.File("rb"))
@click.option("--topic", default="teacher.logs", show_default=True)
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers. [default: settings]")
@pass_ctx
def produce(ctx: Ctx, file, topic, bootstrap):
    """Publish each line of FILE (JSON Lines; - for stdin) as one message.

    Lines are sent as they are, keyed by their "task" field: the worker validates them, and
    a malformed line becomes a dead letter rather than being refused here.
    """
    from .producer import publish_lines

    kafka = ctx.settings.kafka
    servers = bootstrap or kafka.servers
    n = asyncio.run(publish_lines(kafka, servers, topic, file))
    click.echo(f"published {n} messages to {topic} at {servers}")
