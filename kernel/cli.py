"""The one CLI idiom every stage's commands use.

- ``Ctx`` builds settings, tasks and the store from the global options, once, lazily.
- Global options (``--data-dir``, ``--tasks``) work before or after the subcommand:
  ``hoist_global_options`` moves them to the front before click parses.
- Errors have one style and two exit codes: a usage or configuration mistake (bad option,
  unknown task, bad task file, bad setting) prints ``Error: ...`` and exits 2; a failure at run
  time (store or broker unreachable) and a negative verdict (a rejected gate) exit 1.
  ``FlywheelGroup`` maps the kernel's exceptions that a command let through to that style, so no
  command prints a traceback for a known mistake (``FLYWHEEL_DEBUG=1`` shows it).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import click

from kernel.settings import Settings, SettingsError, load_settings
from kernel.tasks import TaskConfig, TaskConfigError, load_tasks

# name -> takes a value; the options the root group accepts anywhere on the line
GLOBAL_OPTIONS = ("--data-dir", "--tasks")


class UsageFailure(click.UsageError):
    """A mistake of the person at the keyboard: exit 2, message names the fix."""

    exit_code = 2


class ConfigFailure(click.ClickException):
    """A bad task file or setting: exit 2, the message names the file (or variable), key and fix;
    no usage banner (the command line itself was fine)."""

    exit_code = 2


class RunFailure(click.ClickException):
    """Something outside the command failed (store, broker): exit 1."""

    exit_code = 1


# section name -> the stage's parser of that section (raises TaskConfigError on a mistake)
SectionParsers = Mapping[str, Callable[[TaskConfig], Any]]


class Ctx:
    """``section_parsers`` (injected by the composition root, flywheel/cli.py: the kernel
    imports no stage) validate every section of every task file when the tasks are first
    loaded, so a bad key in [trigger], [drift], [train] or [gate] stops any command, ``up``
    included, with file, key and fix before anything starts."""

    def __init__(self, data_dir: Path | None = None, tasks: Path | None = None,
                 section_parsers: SectionParsers | None = None) -> None:
        self._data_dir, self._tasks_dir = data_dir, tasks
        self._parsers = dict(section_parsers or {})
        self._settings: Settings | None = None
        self._tasks: dict[str, TaskConfig] | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(data_dir=self._data_dir, tasks_dir=self._tasks_dir)
            except SettingsError as exc:
                raise ConfigFailure(str(exc)) from None
        return self._settings

    def replace_settings(self, settings: Settings) -> None:
        self._settings = settings

    def tasks(self) -> dict[str, TaskConfig]:
        if self._tasks is None:
            try:
                tasks = load_tasks(self.settings.tasks_dir)
                validate_sections(tasks, self._parsers)
            except TaskConfigError as exc:
                raise ConfigFailure(str(exc)) from None
            self._tasks = tasks
        return self._tasks

    def task(self, name: str) -> TaskConfig:
        tasks = self.tasks()
        if name not in tasks:
            declared = ", ".join(sorted(tasks)) or "none"
            raise UsageFailure(f"unknown task {name!r} (option --task); tasks declared in "
                               f"{self.settings.tasks_dir}: {declared}")
        return tasks[name]

    @contextlib.contextmanager
    def store(self) -> Iterator:
        """The warehouse: the running owner's endpoint, a server, or the embedded store (DDL
        applied). Closed when the block ends."""
        from kernel.warehouse import open_warehouse
        from kernel.warehouse.migrate import apply_ddl
        from kernel.warehouse.remote import OwnerUnreachable, RemoteWarehouse

        settings = self.settings
        try:
            store = open_warehouse(settings)
        except OwnerUnreachable as exc:
            raise RunFailure(str(exc)) from None
        try:
            if not isinstance(store, RemoteWarehouse):  # the owner has applied the DDL already
                apply_ddl(store, window_seconds=settings.window_seconds)
            yield store
        finally:
            store.close()


def validate_sections(tasks: Mapping[str, TaskConfig], parsers: SectionParsers) -> None:
    """Run every section parser on every task; the first mistake raises TaskConfigError.

    A problem of the machine rather than of the file (its ``file`` is "-", e.g. the packaged
    base model is not installed) is left to the stage that needs it: it must not stop `up`."""
    for task in tasks.values():
        for _name, parse in parsers.items():
            try:
                parse(task)
            except TaskConfigError as exc:
                if exc.file == "-":
                    continue
                raise


def ctx() -> Ctx:
    """The root context object of the running command."""
    root = click.get_current_context().find_root()
    if not isinstance(root.obj, Ctx):
        root.obj = Ctx()
    return root.obj


pass_ctx = click.make_pass_decorator(Ctx, ensure=True)


def hoist_global_options(argv: Sequence[str]) -> list[str]:
    """Move the global options (and their values) to the front so that
    ``flywheel up --data-dir X`` means ``flywheel --data-dir X up``. Stops at ``--``."""
    args = list(argv)
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest.extend(args[i:])
            break
        name = a.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            if "=" in a:
                front.append(a)
            else:
                front.append(a)
                if i + 1 < len(args):
                    front.append(args[i + 1])
                    i += 1
        else:
            rest.append(a)
        i += 1
    return front + rest


def known_failure(exc: BaseException) -> click.ClickException | None:
    """The CLI message for an exception from the kernel that a command did not handle."""
    from kernel.broker import BrokerError
    from kernel.warehouse import WarehouseError
    from kernel.warehouse.remote import OwnerUnreachable

    if isinstance(exc, (SettingsError, TaskConfigError)):
        return ConfigFailure(str(exc))
    if isinstance(exc, (OwnerUnreachable, BrokerError, WarehouseError)):
        return RunFailure(str(exc))
    try:
        from aiokafka.errors import KafkaConnectionError
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, KafkaConnectionError):
        from kernel.broker import unreachable
        from kernel.settings import load_settings

        try:
            servers = load_settings().kafka.servers
        except SettingsError:
            servers = "the configured address"
        return RunFailure(str(unreachable(servers, exc)))
    return None


class FlywheelGroup(click.Group):
    """The root group: hoists the global options, then maps the kernel's exceptions that a
    command let through to one message and exit code (``FLYWHEEL_DEBUG=1``: the traceback)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args = hoist_global_options(sys.argv[1:] if args is None else args)
        try:
            rv = super().main(args=args, prog_name=prog_name or "flywheel", complete_var=complete_var,
                              standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            code = 1
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.ClickException as exc:
            exc.show()
            code = exc.exit_code
        except Exception as exc:
            mapped = known_failure(exc)
            if mapped is None or os.environ.get("FLYWHEEL_DEBUG"):
                raise
            mapped.show()
            code = mapped.exit_code
        else:
            if not standalone_mode:
                return rv
            code = rv if isinstance(rv, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)
