"""What a stage of the stream worker gets when it is installed, and how it is declared.

The worker builds one ``WorkerContext`` and calls each ``WorkerStage.install`` in the order of
the worker's stage list (``streams.worker.app.WORKER_STAGES``). A stage adds its Faust agents
and timers to ``ctx.app``, may subscribe to durable curate batches through ``curate_hooks``,
and registers the object that holds its state in ``services`` (read by status lines and
benchmarks), so nothing is hung on the context by attribute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from kernel.settings import Settings
from kernel.tasks import TaskConfig
from kernel.warehouse import Warehouse

# called with the decisions of each curate batch once it is durable
CurateHook = Callable[[list[Any]], Awaitable[None] | None]


@dataclass
class WorkerContext:
    settings: Settings
    tasks: dict[str, TaskConfig]
    store: Warehouse
    app: Any  # faust.App
    curate_hooks: list[CurateHook] = field(default_factory=list)
    services: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerStage:
    name: str
    install: Callable[[WorkerContext], None]
