-- Training and the release gate: runs, the model registry, evaluation results, verdicts and
-- the pinned baselines. Every statement is idempotent.

-- One row per retrain request (keyed by request_id), replaced as the run progresses: the
-- latest updated_at wins. status: running, done, failed. A running row whose heartbeat
-- (updated_at) is older than the worker lease belongs to a dead worker and is retried.
CREATE TABLE IF NOT EXISTS retrain_runs
(
    task           LowCardinality(String),
    request_id     String,
    status         LowCardinality(String),
    attempt        UInt32,
    worker         String,
    model_version  String,
    model_seq      UInt32,
    progress       Float32,
    step           UInt32,
    total_steps    UInt32,
    message        String,
    watermark      String,
    gold_version   UInt32,
    dataset_manifest String,
    timings        String,
    requested_at   String,
    started_at     DateTime64(3, 'UTC'),
    finished_at    Nullable(DateTime64(3, 'UTC')),
    updated_at     DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (task, request_id);

-- The lineage of every model version. A version name is never reused.
-- status: candidate, approved, rejected (later stages add canary, promoted, retired).
CREATE TABLE IF NOT EXISTS model_registry
(
    task           LowCardinality(String),
    version        String,
    seq            UInt32,
    request_id     String,
    student        LowCardinality(String),
    base_model     String,
    base_model_identity String,
    adapter_uri    String,
    dataset_manifest String,
    dataset_hash   String,
    hyperparameters String,
    gold_version   UInt32,
    eval_results   String,
    overall_score  Nullable(Float64),
    baseline_score Nullable(Float64),
    status         LowCardinality(String),
    created_at     DateTime64(3, 'UTC'),
    updated_at     DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (task, version);

-- One row per model version, gold version and slice (slice '__overall__' for the whole set).
CREATE TABLE IF NOT EXISTS eval_results
(
    task           LowCardinality(String),
    model_version  String,
    gold_version   UInt32,
    slice          String,
    n              UInt32,
    score          Float64,
    baseline_score Float64,
    baseline       String,
    status         LowCardinality(String),
    evaluated_at   DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(evaluated_at)
ORDER BY (task, model_version, gold_version, slice);

CREATE TABLE IF NOT EXISTS gate_verdicts
(
    task           LowCardinality(String),
    model_version  String,
    gold_version   UInt32,
    approved       UInt8,
    overall        Float64,
    baseline_overall Float64,
    baseline       String,
    reasons        Array(String),
    warnings       Array(String),
    verdict        String,
    decided_at     DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(decided_at)
ORDER BY (task, model_version, gold_version);

-- The pinned baseline of each gold version: scored once, stored, reused. Plain MergeTree:
-- if two gates pin at the same moment, every reader takes the earliest row.
CREATE TABLE IF NOT EXISTS gate_baselines
(
    task           LowCardinality(String),
    gold_version   UInt32,
    baseline       String,
    overall        Float64,
    n              UInt32,
    scores         String,
    note           String,
    pinned_at      DateTime64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY (task, gold_version, pinned_at);
