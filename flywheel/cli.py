"""The ``flywheel`` command line: the root group, built from the stages' commands.

This is the composition root: the only place that imports every stage. Each stage folder owns
its commands (a ``commands`` list in its ``commands`` module); ``STAGE_COMMANDS`` is the one
list of them, in the order of the loop.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import click

from console import commands as console_commands
from kernel import commands as kernel_commands
from kernel.cli import Ctx, FlywheelGroup
from serving import commands as serving_commands
from streams.canary import commands as canary_commands
from streams.canary.config import canary_config
from streams.curate import commands as curate_commands
from streams.drift.config import drift_config
from streams.drift import commands as drift_commands
from streams.promote import commands as promote_commands
from streams.review import commands as review_commands
from streams.trigger import commands as trigger_commands
from streams.trigger.config import trigger_config
from streams.worker import commands as worker_commands
from training.gate import commands as gate_commands
from training.gate.config import gate_config
from training.registry import commands as registry_commands
from training.students.config import train_config
from training.train import commands as train_commands

STAGE_COMMANDS: tuple[ModuleType, ...] = (
    worker_commands,     # up
    kernel_commands,     # sql, gold
    curate_commands,     # produce
    drift_commands,      # drift
    trigger_commands,    # retrain
    train_commands,      # train-worker
    gate_commands,       # gate
    registry_commands,   # models
    serving_commands,    # serve, predict
    promote_commands,    # promote, rollback
    review_commands,     # review, gold grow
    console_commands,    # console
    canary_commands,     # canary start|stop|status
)

# Every section of a task file, validated when the tasks are loaded (before anything starts).
SECTION_PARSERS = {
    "trigger": trigger_config,
    "drift": drift_config,
    "train": train_config,
    "gate": gate_config,
    "canary": canary_config,
}


@click.group(cls=FlywheelGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, envvar="FLYWHEEL_DATA_DIR",
              help="Where the embedded ClickHouse store, logs and artifacts live. [default: ./.flywheel]")
@click.option("--tasks", "tasks", type=click.Path(path_type=Path), default=None, envvar="FLYWHEEL_TASKS_DIR",
              help="Folder of task TOML files. [default: ./tasks]")
@click.version_option(package_name="flywheel")
@click.pass_context
def main(ctx, data_dir, tasks):
    """flywheel: curate teacher logs, watch drift, train and gate small models.

    Kafka topics carry the data between stages; ClickHouse holds every table a person would
    query. With no FLYWHEEL_KAFKA_BOOTSTRAP / FLYWHEEL_CLICKHOUSE_URL set, everything runs
    embedded on this machine. Start with `flywheel up`.

    --data-dir and --tasks may come before or after the command.
    """
    ctx.obj = Ctx(data_dir, tasks, SECTION_PARSERS)


for _module in STAGE_COMMANDS:
    for _cmd in _module.commands:
        main.add_command(_cmd)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
