"""CLI commands of promotion: `flywheel promote`, `flywheel rollback`."""

from __future__ import annotations

import asyncio
import json

import click

from kernel.cli import RunFailure, ctx


def _decide(action: str, task_name: str, version: str | None, reason: str, as_json: bool) -> None:
    from kernel.lifecycle import TransitionError

    from .apply import apply
    from .policy import PromotionError

    c = ctx()
    c.task(task_name)
    with c.store() as store:
        try:
            d = asyncio.run(apply(store, c.settings.kafka, action, task_name, version, reason=reason))
        except (PromotionError, TransitionError) as exc:
            raise RunFailure(str(exc)) from None
    r = d.route
    if as_json:
        click.echo(json.dumps(r.to_record()))
        return
    verb = "promoted" if action == "promote" else "rolled back to"
    click.echo(f"{task_name}: {verb} {d.version} (revision {r.revision}); previous: {r.previous or '-'}")
    click.echo("routers apply it within a second; `flywheel models --task "
               f"{task_name}` shows the history")


@click.command("promote")
@click.option("--task", "task_name", required=True, help="Task name.")
@click.option("--model", "version", required=True, help="A gate-approved model version.")
@click.option("--reason", default="", help="Why (kept in the history).")
@click.option("--json", "as_json", is_flag=True, help="Print the new model.config record.")
def promote_cmd(task_name, version, reason, as_json):
    """Make a gate-approved version serve the task (the current one stays loaded as previous)."""
    _decide("promote", task_name, version, reason, as_json)


@click.command("rollback")
@click.option("--task", "task_name", required=True, help="Task name.")
@click.option("--reason", default="", help="Why (kept in the history).")
@click.option("--json", "as_json", is_flag=True, help="Print the new model.config record.")
def rollback_cmd(task_name, reason, as_json):
    """Return the task to its previous serving version (still loaded: seconds)."""
    _decide("rollback", task_name, None, reason, as_json)



commands: list = [promote_cmd, rollback_cmd]
