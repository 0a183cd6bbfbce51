"""CLI command of the training stage: `flywheel train-worker`."""

from __future__ import annotations

import asyncio
import logging
import sys

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
    """Consume retrain.requests: dataset snapshot, LoRA training, gate, register (one job at a time).

    Prints one line per handled request (a rejection says why). Exits 0 when every request it
    handled ended approved (or had been handled before), 1 when any ended rejected or failed:
    a batch run (--max-requests, --idle-exit) can be chained with `&&`.
    """
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
        click.echo(outcome_line(o))
    sys.exit(1 if any(not ok(o) for o in outcomes) else 0)


def ok(o) -> bool:
    """Approved, or skipped because the request was handled before."""
    if o.status == "skipped":
        return bool(o.request_id)  # an unreadable request is skipped too, and is a failure
    return o.status == "done" and o.verdict is not None and o.verdict.approved


def outcome_line(o) -> str:
    from training.gate.policy import one_line

    if o.status == "done" and o.verdict is not None:
        return f"{o.request_id}: {one_line(o.verdict)}"
    return f"{o.request_id or '(unreadable request)'}: {o.status} {o.model_version} {o.message}".rstrip()


commands: list = [train_worker_cmd]
