-- Partitions that no event time can break. A table partitioned by the month of the event's
-- own time refuses an INSERT whose rows span more than 100 months (ClickHouse's
-- max_partitions_per_insert_block, TOO_MANY_PARTS), and a producer decides those times.
-- curation_events is partitioned by the month of arrival (curated_at: one value per batch,
-- so one partition per insert); drift_windows is small and needs no partitions.
-- Existing stores are migrated once (copy, swap, drop); the guards make re-applying a no-op.
-- A replay that arrives in a later month than its first write lands in another partition:
-- FINAL still collapses it (FINAL merges across partitions), a plain count() may see both.

-- apply-if: SELECT count() > 0 FROM system.tables WHERE database = currentDatabase() AND name = 'curation_events' AND partition_key != 'toYYYYMM(curated_at)'
DROP TABLE IF EXISTS curation_events__repartition;
CREATE TABLE curation_events__repartition AS curation_events
ENGINE = ReplacingMergeTree(curated_at)
PARTITION BY toYYYYMM(curated_at)
ORDER BY (task, id)
SETTINGS non_replicated_deduplication_window = 1000;
INSERT INTO curation_events__repartition SELECT * FROM curation_events;
EXCHANGE TABLES curation_events AND curation_events__repartition;

-- apply-if: SELECT count() > 0 FROM system.tables WHERE database = currentDatabase() AND name = 'drift_windows' AND partition_key NOT IN ('', 'tuple()')
DROP TABLE IF EXISTS drift_windows__repartition;
CREATE TABLE drift_windows__repartition AS drift_windows
ENGINE = ReplacingMergeTree(updated_at)
PARTITION BY tuple()
ORDER BY (task, metric, window_seconds, window_start);
INSERT INTO drift_windows__repartition SELECT * FROM drift_windows;
EXCHANGE TABLES drift_windows AND drift_windows__repartition;

-- apply-always
DROP TABLE IF EXISTS curation_events__repartition;
DROP TABLE IF EXISTS drift_windows__repartition
