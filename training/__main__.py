"""`python -m training ...`: the training commands without the rest of the CLI."""

from pathlib import Path

import click

from .cli import commands


class _Obj:
    def __init__(self, data_dir, tasks):
        self._kw = {"data_dir": data_dir, "tasks_dir": tasks}
        self._settings = None

    @property
    def settings(self):
        if self._settings is None:
            from streams.settings import load_settings

            self._settings = load_settings(**self._kw)
        return self._settings


@click.group()
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, envvar="FLYWHEEL_DATA_DIR")
@click.option("--tasks", type=click.Path(path_type=Path), default=None, envvar="FLYWHEEL_TASKS_DIR")
@click.pass_context
def main(ctx, data_dir, tasks):
    """flywheel training commands."""
    ctx.obj = _Obj(data_dir, tasks)


for _c in commands:
    main.add_command(_c)

if __name__ == "__main__":
    main()
