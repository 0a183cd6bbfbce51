"""Retry an async operation until it succeeds: for work whose batch must not be acked before
it is done (publishing, writing to ClickHouse). The agent stalls, which is the backpressure."""

from __future__ import annotations

import asyncio
import logging


async def retry_forever(what: str, fn, *args, log: logging.Logger, first_delay: float = 0.5,
                        max_delay: float = 30.0) -> None:
    delay = first_delay
    while True:
        try:
            await fn(*args)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("could not %s (%s); retrying in %.1fs, the batch stays unacknowledged",
                      what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
