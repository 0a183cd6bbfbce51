"""CLI commands of the training stage (`flywheel gate`, `flywheel models`, `flywheel train-worker`)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import click


def _settings():
    root = click.get_current_context().find_root()
    obj = root.obj
    if obj is None or not hasattr(obj, "settings"):
        from streams.settings import load_settings

        return load_settings()
    return obj.settings


def _tasks(settings):
    from streams.tasks import TaskConfigError, load_tasks

    try:
        return load_tasks(settings.tasks_dir)
    except TaskConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _task(settings, name: str):
    tasks = _tasks(settings)
    if name not in tasks:
        raise click.UsageError(f"no task {name!r} in {settings.tasks_dir}; known tasks: {sorted(tasks)}")
    return tasks[name]


def _store(settings):
    from streams.warehouse import open_warehouse

    from .store import ensure_tables

    store = open_warehouse(settings)
    ensure_tables(store)
    return store


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

    Exits 0 when approved, 1 when rejected.
    """
    from schemas.topics import MODEL_EVENTS
    from streams.tasks import TaskConfigError

    from . import store as st
    from .artifacts import load_predictor
    from .config import gate_config
    from .gate import render_table
    from .gating import GateError, event_for, gate, gold_for, publish_sync, read_predictions

    if (model_version is None) == (predictions is None):
        raise click.UsageError("give exactly one of --model VERSION or --predictions FILE.jsonl")
    settings = _settings()
    task = _task(settings, task_name)
    try:
        cfg = gate_config(task)
    except TaskConfigError as exc:
        raise click.UsageError(str(exc)) from None
    store = _store(settings)
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
    sys.exit(0 if verdict.approved else 1)


@click.command("models")
@click.option("--task", "task_name", required=True, help="Task name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def models_cmd(task_name, as_json):
    """List the model versions of a task with status and scores."""
    from . import store as st

    settings = _settings()
    store = _store(settings)
    try:
        rows = st.list_models(store, task_name)
    finally:
        store.close()
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
        return
    if not rows:
        click.echo(f"no model versions for task {task_name!r} yet")
        return
    table = [("version", "status", "gold", "score", "baseline", "dataset", "created_at")]
    for r in rows:
        fmt = lambda v: "-" if v is None else f"{float(v):.4f}"  # noqa: E731
        table.append((r["version"], r["status"], f"v{r['gold_version']}", fmt(r["overall_score"]),
                      fmt(r["baseline_score"]), r["dataset_hash"][:12], r["created_at"]))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    for i, row in enumerate(table):
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))


@click.command("train-worker")
@click.option("--group", default="flywheel-training", show_default=True, help="Consumer group of the workers.")
@click.option("--max-requests", type=int, default=None, help="Stop after handling this many requests.")
@click.option("--idle-exit", type=float, default=None, help="Stop after this many seconds without requests.")
@click.option("--lease", type=float, default=None,
              help="Seconds without a heartbeat after which another worker's run counts as dead.")
@click.option("-v", "--verbose", is_flag=True)
def train_worker_cmd(group, max_requests, idle_exit, lease, verbose):
    """Consume retrain.requests: dataset snapshot, LoRA training, gate, register (one job at a time)."""
    from .worker import WorkerOptions, run_worker

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    settings = _settings()
    tasks = _tasks(settings)
    opts = WorkerOptions(group=group, max_requests=max_requests, idle_exit_seconds=idle_exit)
    if lease is not None:
        opts.lease_seconds = lease
    store = _store(settings)
    try:
        outcomes = asyncio.run(run_worker(settings, tasks, store, opts))
    except KeyboardInterrupt:
        return
    finally:
        store.close()
    for o in outcomes:
        click.echo(f"{o.request_id}: {o.status} {o.model_version} {o.message}")


commands: list = [gate_cmd, models_cmd, train_worker_cmd]
