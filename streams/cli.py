"""The ``flywheel`` command line."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from .settings import SettingsError, load_settings

# Modules that contribute commands: each exposes ``commands``, a list of click commands.
COMMAND_MODULES = ("streams.drift.cli", "training.cli")


class Ctx:
    def __init__(self, data_dir: Path | None, tasks: Path | None) -> None:
        self._data_dir, self._tasks = data_dir, tasks
        self._settings = None

    @property
    def settings(self):
        if self._settings is None:
            try:
                self._settings = load_settings(data_dir=self._data_dir, tasks_dir=self._tasks)
            except SettingsError as exc:
                raise click.UsageError(str(exc)) from None
        return self._settings


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, envvar="FLYWHEEL_DATA_DIR",
              help="Where the embedded ClickHouse store and logs live. [default: ./.flywheel]")
@click.option("--tasks", "tasks", type=click.Path(path_type=Path), default=None, envvar="FLYWHEEL_TASKS_DIR",
              help="Folder of task TOML files. [default: ./tasks]")
@click.version_option(package_name="flywheel")
@click.pass_context
def main(ctx, data_dir, tasks):
    """flywheel: curate teacher logs, watch drift, train and gate small models.

    Kafka topics carry the data between stages; ClickHouse holds every table a person would
    query. With no FLYWHEEL_KAFKA_BOOTSTRAP / FLYWHEEL_CLICKHOUSE_URL set, everything runs
    embedded on this machine. Start with `flywheel up`.
    """
    ctx.obj = Ctx(data_dir, tasks)


def _load_extensions() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        for cmd in getattr(module, "commands", ()):
            main.add_command(cmd)


_load_extensions()
importlib.import_module("streams.commands")  # the core commands register themselves on `main`


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
