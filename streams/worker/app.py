"""The stream worker: one Faust app, and the stages installed into it in loop order.

Each stage owns its agents (``install(ctx)`` in its own folder); this module builds the app
with flywheel's settings and installs ``WORKER_STAGES``. Agents stay thin and read raw bytes;
decoding, validation and decisions happen in the stages' pure code.
"""

from __future__ import annotations

import logging

import faust

from kernel.settings import Settings
from kernel.stage import WorkerContext, WorkerStage
from kernel.tasks import TaskConfig
from kernel.warehouse import Warehouse
from streams.curate import agent as curate_agent
from streams.drift import stage as drift_stage
from streams.review import agent as review_agent

log = logging.getLogger("flywheel.worker")

# The stages of the stream worker, in the order of the loop.
WORKER_STAGES: tuple[WorkerStage, ...] = (
    WorkerStage("curate", curate_agent.install),
    WorkerStage("drift", drift_stage.install),
    WorkerStage("review", review_agent.install),
)


def tune_fetch_wait(ms: int) -> None:
    """Faust's aiokafka driver hard-codes fetch_max_wait_ms=1500. With Faust's idle internal
    topic co-subscribed, fetches for a busy topic queue behind that wait (measured with plain
    aiokafka on Tansu: 16k events/s alone, 8k with an idle topic co-subscribed). Lower it on every worker consumer Faust creates. (bench/curate_bench.py compares it
    with the stock value; on the embedded Tansu build the two were within noise.)"""
    from faust.transport.drivers import aiokafka as drv

    original = getattr(drv.AIOKafkaConsumerThread._create_worker_consumer, "__wrapped__",
                       drv.AIOKafkaConsumerThread._create_worker_consumer)

    def create(self, transport):
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = ms
        return consumer

    create.__wrapped__ = original
    drv.AIOKafkaConsumerThread._create_worker_consumer = create


def build_app(settings: Settings, tasks: dict[str, TaskConfig], store: Warehouse,
              stages: tuple[WorkerStage, ...] = WORKER_STAGES) -> tuple[faust.App, WorkerContext]:
    tune_fetch_wait(settings.fetch_max_wait_ms)
    app = faust.App(
        settings.consumer_group,
        broker=";".join(f"kafka://{h}" for h in settings.kafka.servers.split(",")),
        broker_credentials=_credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        topic_replication_factor=1,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        # Tansu answers a group join after half the session timeout: Faust's 60 s default
        # meant a 30 s start-up. Inserts run off the event loop, so 10 s is ample.
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=max(settings.session_timeout_seconds / 5, 0.5),
        producer_acks=-1,
        logging_config=None,
    )
    ctx = WorkerContext(settings, tasks, store, app)
    for stage in stages:
        stage.install(ctx)
    return app, ctx


def _credentials(settings: Settings):
    k = settings.kafka
    if not k.sasl_mechanism:
        return None
    return faust.SASLCredentials(username=k.sasl_username, password=k.sasl_password.get() if k.sasl_password else None,
                                 mechanism=k.sasl_mechanism)
