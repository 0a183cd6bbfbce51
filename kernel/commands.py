"""Commands on the shared kernel: `flywheel sql` and `flywheel gold import`."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from kernel.cli import ctx

FORMATS_HELP = ("table (default: flywheel's plain table, never cut when piped) or any ClickHouse output "
                "format: JSONEachRow, TSV, TSVWithNames, CSVWithNames, Markdown, Vertical, ...")


@click.command()
@click.argument("query")
@click.option("--format", "fmt", default="table", show_default=False, help=FORMATS_HELP)
@click.option("--write", is_flag=True, help="Allow statements that change the store (INSERT, ALTER, "
              "DROP, ...). Without it only statements that read run.")
def sql(query, fmt, write):
    """Run one ClickHouse SQL statement against flywheel's warehouse.

    Works whether or not `flywheel up` runs (it asks the running process when it does).
    Read-only unless --write; one statement at a time; table functions that reach files,
    URLs or other servers (file, url, s3, remote, ...) are refused.

    \b
      flywheel sql "SELECT outcome, count() FROM curation_events FINAL GROUP BY outcome"
      flywheel sql --format CSVWithNames "SELECT * FROM curation_windows ORDER BY window_start"
    """
    from kernel.cli import RunFailure
    from kernel.warehouse import WarehouseError

    settings = ctx().settings
    if not settings.clickhouse.url and not settings.chdb_path.exists():
        # opening would create an empty store here and answer 0 rows: that reads as data loss
        raise RunFailure(f"there is no flywheel store under {settings.data_dir.resolve()}: run this where you ran "
                         "`flywheel up`, or point --data-dir (FLYWHEEL_DATA_DIR) at its data dir")
    with ctx().store() as store:
        try:
            out = store.query_checked(query, "JSONCompact" if fmt == "table" else fmt, write=write)
        except WarehouseError as exc:
            raise click.ClickException(str(exc)) from None
    if fmt == "table":
        out = _table(out)
    sys.stdout.buffer.write(out)
    sys.stdout.flush()


def _table(out: bytes) -> bytes:
    import orjson

    from kernel.table import render

    if not out.strip():
        return b""  # a statement without a result (INSERT, CREATE, ...)
    try:
        doc = orjson.loads(out)
        meta, data = doc["meta"], doc["data"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return out  # the statement named its own FORMAT
    numeric = [re.match(r"(Nullable\()?(U?Int|Float|Decimal)", c["type"]) is not None for c in meta]
    text = render([c["name"] for c in meta], data, numeric=numeric)
    n = doc.get("rows", len(data))
    return (text + f"\n({n} row{'' if n == 1 else 's'})\n").encode()


@click.group()
def gold():
    """Gold sets: frozen, versioned evaluation data per task."""


@gold.command("import")
@click.option("--task", "task_name", required=True, help="Task name, as declared in its TOML file.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def gold_import(task_name, file):
    """Import FILE.jsonl as a new gold set version.

    Each line: {"id": "g1", "input": "...", "output": "label", "slice": "optional",
    "teacher_output": "optional"}. The new version holds the previous one plus these lines
    (a repeated id replaces its example); importing the same content twice makes no version.
    """
    from kernel.gold import GoldError, import_gold

    task = ctx().task(task_name)
    with ctx().store() as store:
        try:
            res = import_gold(store, task, file)
        except GoldError as exc:
            raise click.ClickException(str(exc)) from None
    if res.created:
        click.echo(f"gold set {res.task} v{res.version}: {res.n_total} examples "
                   f"({res.n_imported} from {file.name})")
    else:
        click.echo(f"gold set {res.task} v{res.version} unchanged: {file.name} adds nothing new")
    if res.redactions:
        click.echo("redacted ([privacy]): " + ", ".join(f"{k} {v}" for k, v in sorted(res.redactions.items())))


commands: list = [sql, gold]
