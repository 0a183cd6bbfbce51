"""CLI command of the trigger stage: `flywheel retrain` (the trigger's path, by hand)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import click

from kernel.cli import ctx
from schemas import messages
from schemas.topics import RETRAIN_REQUESTS


@click.command()
@click.option("--task", "task_name", required=True, help="Task name, as declared in its TOML file.")
@click.option("--reason", default="manual request", show_default=True, help="Why (kept in the request).")
def retrain(task_name, reason):
    """Ask for a retrain of a task now (published on retrain.requests).

    Takes the same path as the automatic trigger, skipping its policy: the watermark is the
    newest kept example, the gold version the current one. Asking twice with no new data makes
    the same request id, so one training run.
    """
    from aiokafka import AIOKafkaProducer

    from kernel.broker import start_client
    from streams.trigger import store as tstore

    c = ctx()
    c.task(task_name)
    settings = c.settings
    with c.store() as store:
        try:
            msg = tstore.plan_request(store, None, task_name, datetime.now(timezone.utc), manual=reason)
        except tstore.NoExamples as exc:
            raise click.ClickException(f"{exc}; curate some teacher logs first (flywheel produce)") from None

        async def call(fn, *args):
            return await asyncio.to_thread(fn, store, *args)

        async def run() -> bool:
            producer = AIOKafkaProducer(**settings.kafka.aiokafka_kwargs(), acks="all")
            await start_client(producer, settings.kafka.servers)
            try:
                async def publish(m):
                    await producer.send_and_wait(RETRAIN_REQUESTS.name, messages.encode(RETRAIN_REQUESTS, m),
                                                 key=m["task"].encode())

                return await tstore.issue_request(call, publish, msg)
            finally:
                await producer.stop()

        made = asyncio.run(run())
    if made:
        click.echo(f"retrain requested: {msg['request_id']} (task {task_name}, watermark {msg['watermark']}, "
                   f"gold v{msg['gold_version']})")
    else:
        click.echo(f"retrain request {msg['request_id']} was already made (no new kept examples since); "
                   "nothing published")


commands: list = [retrain]
