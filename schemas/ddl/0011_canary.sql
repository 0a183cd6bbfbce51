-- Canary: paired answers of the serving version and the candidate on the same live requests,
-- per-minute windows of them, and the judge's decisions with their evidence.
-- Every statement is idempotent; canary_pairs is keyed by (task, candidate, request): a pair
-- written twice (at-least-once delivery) counts once under FINAL.
CREATE TABLE IF NOT EXISTS canary_pairs
(
    task                 LowCardinality(String),
    candidate_version    String,
    request_id           String,
    incumbent_version    String,
    slice                String,
    input                String,
    incumbent_answer     String,
    candidate_answer     Nullable(String),
    teacher_answer       Nullable(String),
    agree                Nullable(UInt8),
    paired               Nullable(Int8),
    error                String,
    incumbent_latency_ms Float32,
    candidate_latency_ms Float32,
    ts                   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ts)
ORDER BY (task, candidate_version, request_id);

-- Windows per task, candidate version and slice (one minute each): what the judge reads, and
-- the canary's drift metrics of the serving version (disagreement rate, candidate error rate).
CREATE VIEW IF NOT EXISTS canary_windows AS
SELECT task, candidate_version, incumbent_version, slice, toStartOfMinute(ts) AS window_start,
       count() AS pairs,
       countIf(agree = 0 OR error != '') AS disagree,
       countIf(error != '') AS errors,
       countIf(paired IS NOT NULL) AS teacher,
       countIf(paired = 1) AS cand_better,
       countIf(paired = -1) AS cand_worse,
       round(countIf(agree = 0 OR error != '') / count(), 4) AS disagreement_rate,
       round(countIf(error != '') / count(), 4) AS candidate_error_rate,
       quantile(0.5)(candidate_latency_ms) AS candidate_p50_ms
FROM canary_pairs FINAL
GROUP BY task, candidate_version, incumbent_version, slice, window_start;

CREATE TABLE IF NOT EXISTS canary_decisions
(
    task              LowCardinality(String),
    candidate_version String,
    incumbent_version String,
    outcome           LowCardinality(String),
    reason            String,
    pairs             UInt64,
    evidence          String,
    action            LowCardinality(String),
    decided_at        DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(decided_at)
ORDER BY (task, candidate_version, decided_at);
