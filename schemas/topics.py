"""The topic catalogue: every Kafka topic flywheel reads or writes.

One place names each topic, its key, partition count and cleanup policy, and the JSON Schema
file that a producer in any language can validate against.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    key: str  # which field of the message is the Kafka key
    partitions: int
    cleanup_policy: str  # "delete" or "compact"
    schema: str | None  # file name under schemas/json/, or None for opaque payloads
    doc: str


TEACHER_LOGS = Topic("teacher.logs", "task", 4, "delete", "teacher.logs.schema.json",
                     "Teacher model calls published by producers; input of curation.")
LIVE_REQUESTS = Topic("live.requests", "task", 4, "delete", "live.requests.schema.json",
                      "What production served; input of drift detection.")
DEAD_LETTERS = Topic("dead.letters", "source_topic", 1, "delete", "dead.letters.schema.json",
                     "Messages that could not be decoded or validated, with the reason and original bytes.")
REVIEW_QUEUE = Topic("review.queue", "task", 1, "delete", "review.queue.schema.json",
                     "Items for a human: low-confidence teacher answers, canary disagreements.")
REVIEW_VERDICTS = Topic("review.verdicts", "task", 1, "delete", "review.verdicts.schema.json",
                        "Human verdicts on review items; grow the gold set.")
DRIFT_ALERTS = Topic("drift.alerts", "task", 1, "delete", "drift.alerts.schema.json",
                     "One alert per detected change of a drift metric.")
RETRAIN_REQUESTS = Topic("retrain.requests", "task", 1, "delete", "retrain.requests.schema.json",
                         "Idempotent retrain requests consumed by the training worker.")
MODEL_EVENTS = Topic("model.events", "task", 1, "delete", "model.events.schema.json",
                     "Candidate approved / rejected, canary and promotion events.")
CANARY_PAIRS = Topic("canary.pairs", "task", 4, "delete", "canary.pairs.schema.json",
                     "Incumbent and candidate answers to the same live request.")
MODEL_CONFIG = Topic("model.config", "task", 1, "compact", "model.config.schema.json",
                     "Which adapter serves each task: promotion is a config change here.")

CATALOGUE: tuple[Topic, ...] = (
    TEACHER_LOGS, LIVE_REQUESTS, DEAD_LETTERS, REVIEW_QUEUE, REVIEW_VERDICTS,
    DRIFT_ALERTS, RETRAIN_REQUESTS, MODEL_EVENTS, CANARY_PAIRS, MODEL_CONFIG,
)

BY_NAME = {t.name: t for t in CATALOGUE}
