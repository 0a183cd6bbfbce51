"""CLI command of the training stage: `flywheel train-worker`."""

from __future__ import annotations

import asyncio
import logging

import click

from kernel.cli import ctx
from training.registry.store import registry_store


@click.command("train-worker")
@click.option("--group", default="flywheel-training", show_default=True, help="Consumer group of the workers.")
@click.option("--max-requests", type=int, default=None, help="Stop after handling this many requests.")
@click.option("--idle-exit", type=float, default=None, help="Stop after this many seconds without requests.")
@click.option("--lease", type=float, default=None,
              help="Seconds without a heartbeat after which another worker's run counts as dead.")
@click.option("-v", "--verbose", is_flag=True)
def train_worker_cmd(group, max_requests, idle_exit, lease, verbose):
    """Consume retrain.requests: dataset snapshot, LoRA training, gate, register (one job at a time)."""
    from training.train.worker import WorkerOptions, run_worker

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    c = ctx()
    settings = c.settings
    tasks = c.tasks()
    opts = WorkerOptions(group=group, max_requests=max_requests, idle_exit_seconds=idle_exit)
    if lease is not None:
        opts.lease_seconds = lease
    store = registry_store(c)
    try:
        outcomes = asyncio.run(run_worker(settings, tasks, store, opts))
    except KeyboardInterrupt:
        return
    finally:
        store.close()
    for o in outcomes:
        click.echo(f"{o.request_id}: {o.status} {o.model_version} {o.message}")


commands: list = [train_worker_cmd]
