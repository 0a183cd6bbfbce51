-- Curation: every teacher log's outcome, the kept training pool, and windowed counts.
-- Applied in file order by streams.warehouse.migrate; every statement is idempotent.
-- ${window_seconds} is the tumbling window of curation_windows (FLYWHEEL_WINDOW_SECONDS).

-- One row per teacher log id (a replayed event replaces its own row: query with FINAL
-- or count(DISTINCT id) for exact counts while merges are pending).
CREATE TABLE IF NOT EXISTS curation_events
(
    id             String,
    ts             DateTime64(3, 'UTC'),
    task           LowCardinality(String),
    outcome        LowCardinality(String),
    reason         String,
    slice          LowCardinality(String),
    label          String,
    confidence     Nullable(Float32),
    teacher        LowCardinality(String),
    input_hash     UInt64,
    matched_id     String,          -- the kept example or gold id this event duplicated
    source_partition UInt32,
    source_offset  UInt64,
    curated_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(curated_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (task, id)
SETTINGS non_replicated_deduplication_window = 1000;

-- The training pool: kept examples only.
CREATE TABLE IF NOT EXISTS examples
(
    id             String,
    ts             DateTime64(3, 'UTC'),
    task           LowCardinality(String),
    input          String,
    output         String,          -- the label, or the JSON object of an extraction task
    slice          LowCardinality(String),
    confidence     Float32,
    teacher        LowCardinality(String),
    meta           String,          -- JSON
    input_hash     UInt64,
    source_partition UInt32,
    source_offset  UInt64,
    curated_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(curated_at)
ORDER BY (task, id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Counts per task, outcome and tumbling window, exact under replays: the state counts
-- distinct event ids, so a re-delivered event is never counted twice.
CREATE TABLE IF NOT EXISTS curation_windows_state
(
    task           LowCardinality(String),
    window_start   DateTime('UTC'),
    window_seconds UInt32,
    outcome        LowCardinality(String),
    ids            AggregateFunction(uniqExact, String),
    confidence_sum AggregateFunction(sum, Float64)
)
ENGINE = AggregatingMergeTree
ORDER BY (task, window_seconds, window_start, outcome);

DROP VIEW IF EXISTS curation_windows_mv;

CREATE MATERIALIZED VIEW curation_windows_mv TO curation_windows_state AS
SELECT
    task,
    toDateTime(toStartOfInterval(ts, INTERVAL ${window_seconds} SECOND), 'UTC') AS window_start,
    toUInt32(${window_seconds}) AS window_seconds,
    outcome,
    uniqExactState(id) AS ids,
    sumState(toFloat64(ifNull(confidence, 0))) AS confidence_sum
FROM curation_events
GROUP BY task, window_start, window_seconds, outcome;

-- What analysts and the drift stage read: one row per task, window and outcome.
CREATE OR REPLACE VIEW curation_windows AS
SELECT
    task,
    window_start,
    window_seconds,
    outcome,
    uniqExactMerge(ids) AS n
FROM curation_windows_state
GROUP BY task, window_start, window_seconds, outcome;

-- Shares per window: the cheapest drift alarm (off_schema and low_conf rates).
CREATE OR REPLACE VIEW curation_window_rates AS
SELECT
    task,
    window_start,
    window_seconds,
    sum(n) AS total,
    sumIf(n, outcome = 'off_schema') / sum(n) AS off_schema_rate,
    sumIf(n, outcome = 'low_conf') / sum(n) AS low_conf_rate,
    sumIf(n, outcome = 'kept') / sum(n) AS kept_rate
FROM curation_windows
GROUP BY task, window_start, window_seconds;
