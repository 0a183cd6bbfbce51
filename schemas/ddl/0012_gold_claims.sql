-- Gold version claims: who may write which gold version. A writer inserts (task, version,
-- claim_id) with the insert deduplication token 'gold-claim:<task>:<version>'; ClickHouse
-- keeps only the first block with a token (checked and committed under one lock; through
-- Keeper on replicated tables), so exactly one claim row exists per version and reading it
-- back names the winner. The winner writes the version's examples, then its gold_sets row,
-- then a 'done' row; a loser waits for 'done' and recomputes on top of the new version.
CREATE TABLE IF NOT EXISTS gold_claims
(
    task       LowCardinality(String),
    version    UInt32,
    claim_id   String,
    state      LowCardinality(String),   -- claimed | done
    holder     String,                   -- what claimed it (host:pid, the command)
    claimed_at DateTime64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY (task, version, state)
SETTINGS non_replicated_deduplication_window = 100000;
