-- The full original of every dead letter too large to carry it (over ~900 KB once base64'd:
-- the producer's 1,000,000-byte request limit). The dead letter carries the head, the size
-- and the sha256; the bytes are here, base64, keyed by sha256 (a replayed one collapses).
--   SELECT base64Decode(payload_b64) FROM dead_letter_payloads FINAL WHERE sha256 = '...'
CREATE TABLE IF NOT EXISTS dead_letter_payloads
(
    sha256           String,
    source_topic     LowCardinality(String),
    source_partition UInt32,
    source_offset    UInt64,
    size             UInt64,
    payload_b64      String CODEC(ZSTD(3)),
    dead_at          DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(dead_at)
ORDER BY (sha256, source_topic, source_partition, source_offset)
