-- Serving and promotion: the history of every model.config decision (promote, rollback, canary).
-- One row per (task, revision); the same record is also the latest message of the task on the
-- compacted model.config topic. Every statement is idempotent.
CREATE TABLE IF NOT EXISTS model_config
(
    task             LowCardinality(String),
    revision         UInt32,
    action           LowCardinality(String),
    serving_version  Nullable(String),
    previous_version Nullable(String),
    canary_version   Nullable(String),
    canary_share     Float32,
    decided_by       String,
    reason           String,
    record           String,
    decided_at       DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(decided_at)
ORDER BY (task, revision);
