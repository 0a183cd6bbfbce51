"""CLI command of the registry: `flywheel models`."""

from __future__ import annotations

import json

import click

from kernel.cli import ctx
from training.registry.store import registry_store


@click.command("models")
@click.option("--task", "task_name", required=True, help="Task name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def models_cmd(task_name, as_json):
    """List the model versions of a task (lifecycle state, scores) and its promotion history."""
    from training.registry import store as st

    from kernel.lifecycle import TransitionError, state_of
    from serving import history

    c = ctx()
    c.task(task_name)
    store = registry_store(c)
    try:
        rows = st.list_models(store, task_name)
        history.ensure_table(store)
        decisions = history.history(store, task_name)
    finally:
        store.close()
    for r in rows:   # lifecycle state (statuses of older stores read as today's states)
        try:
            r["state"] = str(state_of(r["status"]))
        except TransitionError:
            r["state"] = r["status"]
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
        for d in decisions:
            click.echo(json.dumps({"promotion": d}))
        return
    if not rows:
        click.echo(f"no model versions for task {task_name!r} yet")
        return
    from kernel.table import render

    fmt = lambda v: "-" if v is None else f"{float(v):.4f}"  # noqa: E731
    click.echo(render(("version", "state", "gold", "score", "baseline", "dataset", "created_at"),
                      [(r["version"], r["state"], f"v{r['gold_version']}", fmt(r["overall_score"]),
                        fmt(r["baseline_score"]), r["dataset_hash"][:12], r["created_at"]) for r in rows],
                      numeric=(False, False, False, True, True, False, False)))
    if decisions:
        click.echo("")
        click.echo(render(("rev", "action", "serving", "previous", "decided_by", "decided_at", "reason"),
                          [(d["revision"], d["action"], d["serving_version"] or "-", d["previous_version"] or "-",
                            d["decided_by"], d["decided_at"], d["reason"]) for d in decisions],
                          title="promotion history (newest first)"))


commands: list = [models_cmd]
