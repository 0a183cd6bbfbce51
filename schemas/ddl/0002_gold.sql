-- Gold sets: versioned, frozen. Each import makes a new version holding the full set.

CREATE TABLE IF NOT EXISTS gold_sets
(
    task           LowCardinality(String),
    version        UInt32,
    parent_version UInt32,          -- 0 for the first version
    created_at     DateTime64(3, 'UTC'),
    source         String,          -- file name, or 'review.verdicts'
    n_examples     UInt32,
    content_hash   String           -- sha256 over the sorted (id, input, output, slice)
)
ENGINE = ReplacingMergeTree
ORDER BY (task, version);

CREATE TABLE IF NOT EXISTS gold_examples
(
    task           LowCardinality(String),
    version        UInt32,
    id             String,
    input          String,
    output         String,          -- label, or JSON object for extraction tasks
    slice          LowCardinality(String),
    teacher_output Nullable(String),
    input_hash     UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (task, version, id);
