-- Drift detection and the retrain trigger (streams/drift). Every statement is idempotent.

-- One row per task, metric and tumbling window of event time (window_seconds): the number of
-- events, the metric's value in the window, the reference it is judged against (the mean since
-- the last alert, or for label_mix the divergence threshold), the detector's statistic and the
-- verdict (warmup, ok, suppressed, drift, no_reference). A window is rewritten while it is
-- open: query with FINAL.
--   SELECT window_start, value FROM drift_windows FINAL
--   WHERE task = 'transactions' AND metric = 'off_schema_rate' ORDER BY window_start
CREATE TABLE IF NOT EXISTS drift_windows
(
    task           LowCardinality(String),
    metric         LowCardinality(String),
    detector       LowCardinality(String),
    window_start   DateTime('UTC'),
    window_seconds UInt32,
    n              UInt64,
    value          Float64,
    reference      Nullable(Float64),
    statistic      Nullable(Float64),
    verdict        LowCardinality(String),
    alerts         UInt32,
    detail         String,
    updated_at     DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (task, metric, window_seconds, window_start);

-- One row per alert (alert_id is deterministic: a re-made alert replaces its own row).
CREATE TABLE IF NOT EXISTS drift_alerts
(
    alert_id       String,
    task           LowCardinality(String),
    metric         LowCardinality(String),
    detector       LowCardinality(String),
    detected_at    DateTime64(3, 'UTC'),
    value          Float64,
    reference      Float64,
    severity       LowCardinality(String),
    evidence       String
)
ENGINE = ReplacingMergeTree
ORDER BY (task, alert_id);

-- One row per retrain request id, as published on retrain.requests.
CREATE TABLE IF NOT EXISTS retrain_requests
(
    request_id     String,
    task           LowCardinality(String),
    reason_kind    LowCardinality(String),
    alert_ids      Array(String),
    detail         String,
    watermark      String,
    gold_version   UInt32,
    requested_at   DateTime64(3, 'UTC'),
    message        String
)
ENGINE = ReplacingMergeTree
ORDER BY (task, request_id);

-- The drift stage's detector state per task (a compressed pickle, base64), written after
-- every batch and before its offsets are committed. The highest version wins.
CREATE TABLE IF NOT EXISTS drift_state
(
    task           LowCardinality(String),
    version        UInt64,
    saved_at       DateTime64(3, 'UTC'),
    state          String
)
ENGINE = ReplacingMergeTree(version)
ORDER BY task
