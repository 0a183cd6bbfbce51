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
from streams.canary import stage as canary_stage
from streams.curate import agent as curate_agent
from streams.drift import stage as drift_stage
from streams.worker.transport import App, broker_urls, check_faust_version
from streams.review import agent as review_agent

log = logging.getLogger("flywheel.worker")

# The stages of the stream worker, in the order of the loop.
WORKER_STAGES: tuple[WorkerStage, ...] = (
    WorkerStage("curate", curate_agent.install),
    WorkerStage("drift", drift_stage.install),
    WorkerStage("review", review_agent.install),
    WorkerStage("canary", canary_stage.install),
)


def build_app(settings: Settings, tasks: dict[str, TaskConfig], store: Warehouse,
              stages: tuple[WorkerStage, ...] = WORKER_STAGES) -> tuple[App, WorkerContext]:
    check_faust_version()
    # flywheel's transport (streams/worker/transport.py): batched drain, 50 ms poll, fetch wait
    # from settings, no Monitor sensor in the per-event path
    app = App(
        settings.consumer_group,
        broker=broker_urls(settings.kafka.servers.split(","), fetch_max_wait_ms=settings.fetch_max_wait_ms),
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
        # Faust's own data directory (unused: memory tables) under ours, not in the cwd
        datadir=str(settings.data_dir / "faust"),
        # cython_optimizations stays off: on a decode-only agent it measured 0.97-1.06x of off
        # (bench/curate_bench.py, 3 interleaved runs), within noise, and it enables Faust code
        # paths that its docs say have never run in production.
        cython_optimizations=False,
    )
    ctx = WorkerContext(settings, tasks, store, app)
    for stage in stages:
        stage.install(ctx)
    return app, ctx


def _credentials(settings: Settings):
    """Faust's broker credentials: SASL (over TLS for SASL_SSL), TLS alone for SSL, or none."""
    k = settings.kafka
    if k.sasl_mechanism:
        return faust.SASLCredentials(username=k.sasl_username,
                                     password=k.sasl_password.get() if k.sasl_password else None,
                                     mechanism=k.sasl_mechanism, ssl_context=k.ssl_context())
    if k.tls:
        return faust.SSLCredentials(k.ssl_context())
    return None
