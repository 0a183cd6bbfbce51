"""What the curate pipeline reports about each durable batch: Prometheus metrics and the
health of the write loop (kernel.metrics). One call per batch, after it is durable."""

from __future__ import annotations

from collections import Counter

from kernel import metrics
from schemas import messages

# /health fails when batches have failed to become durable for this long
PROGRESS = metrics.Progress(stall_after=120.0)
metrics.HEALTH.add("curate", PROGRESS)


def batch_in(n: int, topic: str = "teacher.logs") -> None:
    metrics.EVENTS_IN.labels("curate", topic).inc(n)


def batch_durable(decisions, write_seconds: float) -> Counter:
    """Count a batch that is now durable (its offsets may be committed); returns its outcomes
    counted (one pass over the batch)."""
    outcomes: Counter = Counter()
    big = 0
    for d in decisions:
        outcomes[d.outcome] += 1
        if d.outcome == "invalid":
            big += messages.needs_payload_row(d.message.value)
        elif d.outcome == "conflict":
            metrics.CONFLICTS.labels(d.log.task).inc()
        if d.redactions:
            for rule, n in d.redactions.items():
                metrics.REDACTIONS.labels(d.log.task, rule).inc(n)
    for outcome, n in outcomes.items():
        metrics.EVENTS_OUT.labels("curate", outcome).inc(n)
    metrics.BATCH_WRITE_SECONDS.labels("curate").observe(write_seconds)
    metrics.BATCH_ROWS.labels("curate").observe(len(decisions))
    if outcomes["invalid"]:
        metrics.DEAD_LETTERS.labels("teacher.logs").inc(outcomes["invalid"])
        if big:
            metrics.DEAD_LETTER_PAYLOADS.inc(big)
    PROGRESS.ok()
    return outcomes
