-- PII redaction ([privacy] in a task file): how many matches of each rule were replaced in
-- the input before it was curated or imported into a gold set (empty when none, or off).
--   SELECT task, arrayJoin(mapKeys(redactions)) AS rule, sum(redactions[rule]) FROM curation_events FINAL GROUP BY task, rule
ALTER TABLE curation_events ADD COLUMN IF NOT EXISTS redactions Map(String, UInt32);
ALTER TABLE gold_examples ADD COLUMN IF NOT EXISTS redactions Map(String, UInt32)
