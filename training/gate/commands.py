"""CLI command of the gate stage: `flywheel gate`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from kernel.cli import ctx
from training.registry.store import registry_store


@click.command("gate")
@click.option("--task", "task_name", required=True, help="Task name (a tasks/<name>.toml).")
@click.option("--model", "model_version", default=None, help="A registered model version to gate.")
@click.option("--predictions", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help='JSONL of {"id": <gold id>, "output": ...} produced anywhere.')
@click.option("--gold-version", type=int, default=None, help="Gold set version [default: current].")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@click.option("--no-publish", is_flag=True, help="Do not publish the verdict on model.events.")
def gate_cmd(task_name, model_version, predictions, gold_version, as_json, no_publish):
    """Gate a candidate on the frozen gold set against the pinned baseline.

    Exits 0 when approved, 1 when rejected; a rejection ends with one line saying why.
    """
    from kernel.tasks import TaskConfigError
    from schemas.topics import MODEL_EVENTS
    from training.gate.config import gate_config
    from training.gate.gating import GateError, event_for, gate, gold_for, publish_sync, read_predictions
    from training.gate.policy import one_line, render_table
    from training.registry import store as st
    from training.students.load import load_predictor

    if (model_version is None) == (predictions is None):
        raise click.UsageError("give exactly one of --model VERSION or --predictions FILE.jsonl")
    c = ctx()
    settings = c.settings
    task = c.task(task_name)
    try:
        cfg = gate_config(task)
    except TaskConfigError as exc:
        raise click.UsageError(str(exc)) from None
    store = registry_store(c)
    try:
        gv, gold_rows = gold_for(store, task.name, gold_version)
        if predictions is not None:
            answers, name = read_predictions(predictions, gold_rows)
            registered = False
        else:
            row = st.get_model(store, task.name, model_version)
            if row is None:
                known = [m["version"] for m in st.list_models(store, task.name)][-5:]
                raise click.UsageError(f"no model version {model_version!r} for task {task.name!r}; "
                                       f"recent versions: {known} (see `flywheel models --task {task.name}`)")
            name, registered = model_version, True
            cached = Path(row["adapter_uri"]).parent / f"gold_predictions_v{gv}.jsonl"
            if cached.is_file():
                answers, _ = read_predictions(cached, gold_rows)
            else:
                preds = load_predictor(row)([r["input"] for r in gold_rows])
                answers = {r["id"]: p for r, p in zip(gold_rows, preds)}
        verdict = gate(store, task, cfg, name, answers, gv, gold_rows, load_predictor, registered=registered)
    except GateError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    if not no_publish:
        try:
            publish_sync(settings.kafka, MODEL_EVENTS.name, [(task.name, event_for(verdict))])
        except Exception as exc:
            click.echo(f"warning: the verdict is recorded but was not published on {MODEL_EVENTS.name} "
                       f"({exc}); is the broker up (`flywheel up`)? use --no-publish to skip", err=True)
    if as_json:
        click.echo(json.dumps(verdict.to_dict(), indent=2))
    else:
        click.echo(render_table(verdict))
        if not verdict.approved:
            click.echo("")
            click.echo(one_line(verdict))
    sys.exit(0 if verdict.approved else 1)


commands: list = [gate_cmd]
