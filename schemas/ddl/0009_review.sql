-- People in the loop: review items and verdicts, what became of completed items, and the
-- source of every gold example. Every statement is idempotent.

-- One row per review item (task, item_id), rewritten by the review agent as verdicts arrive:
-- the latest updated_at wins (query with FINAL). status: pending, submitted, discarded.
CREATE TABLE IF NOT EXISTS review_items
(
    task           LowCardinality(String),
    item_id        String,
    kind           LowCardinality(String),   -- low_conf, canary_disagreement, live_sample
    slice          LowCardinality(String),
    input          String,
    answers        String,                   -- JSON: the answers shown {"teacher": ..., "incumbent": ..., "candidate": ...}
    confidence     Nullable(Float32),
    reason         String,                   -- why the item is in the queue
    source         String,                   -- JSON: where it came from (topic, offset, teacher, ts)
    meta           String,                   -- JSON
    arrived_at     DateTime64(3, 'UTC'),
    status         LowCardinality(String),
    open_reason    String,                   -- while pending: what it waits for (more verdicts, adjudication)
    answer         Nullable(String),         -- the completed answer (label, or canonical JSON)
    n_submitted    UInt16,
    n_discarded    UInt16,
    agreement      Nullable(Float32),        -- share of submitted verdicts agreeing with the top answer
    reviewers      Array(String),
    route          LowCardinality(String),   -- gold or pool, once complete
    completed_at   Nullable(DateTime64(3, 'UTC')),
    updated_at     DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (task, item_id);

-- Every verdict once: the same verdict_id delivered twice is one row.
CREATE TABLE IF NOT EXISTS review_verdicts
(
    task           LowCardinality(String),
    item_id        String,
    verdict_id     String,
    reviewer       String,
    action         LowCardinality(String),   -- submit, discard
    answer         Nullable(String),
    note           String,
    adjudicate     UInt8,
    decided_at     DateTime64(3, 'UTC'),
    received_at    DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (task, item_id, verdict_id);

-- What became of a completed item: added to a gold version, refused from it (with the
-- reason), or published to the training pool as a human-labelled example.
CREATE TABLE IF NOT EXISTS review_routing
(
    task           LowCardinality(String),
    item_id        String,
    destination    LowCardinality(String),   -- gold, pool
    outcome        LowCardinality(String),   -- added, refused, published
    gold_version   UInt32,
    reason         String,
    matched_id     String,
    decided_at     DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(decided_at)
ORDER BY (task, item_id);

-- Where each gold example came from: seed (imported), disagreement, low_conf, live_sample.
ALTER TABLE gold_examples ADD COLUMN IF NOT EXISTS source LowCardinality(String) DEFAULT 'seed';
