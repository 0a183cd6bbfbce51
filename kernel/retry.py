"""Retry an async operation until it succeeds: for work whose batch must not be acked before
it is done (publishing, writing to ClickHouse). The agent stalls, which is the backpressure.

Only faults that can heal are retried as they are (kernel.faults.classify: the store or the
broker unreachable, the disk full). With ``data_faults="raise"`` a fault in the data itself
(the store cannot parse a row, a record is too large) is raised at once, for the caller to
split the batch and isolate the rows; every retry is counted in ``flywheel_retries``.
"""

from __future__ import annotations

import asyncio
import logging

from kernel import metrics
from kernel.faults import classify


async def retry_forever(what: str, fn, *args, log: logging.Logger, first_delay: float = 0.5,
                        max_delay: float = 30.0, data_faults: str = "retry",
                        progress: "metrics.Progress | None" = None):
    """Await ``fn(*args)`` until it succeeds and return its result, sleeping with exponential
    backoff (first_delay doubling to max_delay) between attempts. ``data_faults``: "retry"
    (every fault is retried) or "raise" (a fault in the data is raised to the caller)."""
    delay = first_delay
    while True:
        try:
            result = await fn(*args)
            if progress is not None:
                progress.ok()
            return result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            fault = classify(exc)
            if data_faults == "raise" and not fault.heals:
                raise
            metrics.RETRIES.labels(what, fault.kind).inc()
            if progress is not None:
                progress.failing(f"{what}: {exc}"[:300])
            log.error("could not %s (%s: %s); retrying in %.1fs, the batch stays unacknowledged",
                      what, fault.kind, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
