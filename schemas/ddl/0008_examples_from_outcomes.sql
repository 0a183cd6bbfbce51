-- One insert writes both tables, so `examples` and `curation_events` never disagree after a
-- crash: the curate pipeline inserts only curation_events, whose kept rows carry the example's
-- own columns (input, meta), and this materialised view derives `examples` from them in the
-- same INSERT. A retried INSERT that curation_events drops as a duplicate still reaches the
-- view (INSERT_SETTINGS: deduplicate_blocks_in_dependent_materialized_views = 1), so a crash
-- between the two parts of one INSERT is healed by the replay.
-- content_hash: what the event said (kernel: streams.curate.policy.content_hash), so a re-sent
-- id with other content is a `conflict` with its own row (id '<id>#conflict-<hash>').
ALTER TABLE curation_events ADD COLUMN IF NOT EXISTS input String CODEC(ZSTD(1));
ALTER TABLE curation_events ADD COLUMN IF NOT EXISTS meta String CODEC(ZSTD(1));
ALTER TABLE curation_events ADD COLUMN IF NOT EXISTS content_hash UInt64;

CREATE MATERIALIZED VIEW IF NOT EXISTS examples_mv TO examples AS
SELECT id, ts, task, input, label AS output, slice, toFloat32(ifNull(confidence, 0)) AS confidence, teacher,
       meta, input_hash, source_partition, source_offset, curated_at
FROM curation_events
WHERE outcome = 'kept'
