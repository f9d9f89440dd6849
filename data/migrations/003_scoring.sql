-- 003: scoring and curation. Verdicts of a curation policy, and the views a user queries.
-- The SQL that fills these lives in data/scoring_queries.py and data/curation_queries.py.

-- One row per candidate (or dataset probe) judged by a policy: kept or dropped, and why.
-- set_id is a curated set's id (`lune curate`), or 'preview' for the verdicts of the configured
-- policy written by `lune score` before any set is saved. The views read the most recent set.
CREATE TABLE candidate_verdicts (
    set_id       VARCHAR NOT NULL,
    candidate_id VARCHAR NOT NULL,          -- a candidate id, or a probe id for dataset-provided eval probes
    fact_id      VARCHAR NOT NULL,
    kind         VARCHAR NOT NULL,          -- negative / refusal / paraphrase / attack
    keep         BOOLEAN NOT NULL,
    reason       VARCHAR NOT NULL,          -- 'kept', or the first rule that dropped it (see docs/scoring.md)
    role         VARCHAR,                   -- train / eval for kept items, NULL for drops
    rank         INTEGER,                   -- 1 = best of its fact and kind among those passing the gates
    decided_at   TIMESTAMP DEFAULT current_timestamp
    -- No primary key on purpose: (set_id, candidate_id) is unique by construction (a set's verdicts are
    -- deleted before they are decided again), and an index over millions of verdicts would double
    -- the time of deciding them.
);

-- Every score of a candidate as a column: the latest value per scorer (any version).
CREATE VIEW v_candidate_scores AS
SELECT candidate_id,
       arg_max(value, created_at) FILTER (WHERE scorer = 'similarity')    AS similarity,
       arg_max(value, created_at) FILTER (WHERE scorer = 'answer_leak')   AS answer_leak,
       arg_max(value, created_at) FILTER (WHERE scorer = 'contradiction') AS contradiction,
       arg_max(value, created_at) FILTER (WHERE scorer = 'fluency')       AS fluency,
       arg_max(value, created_at) FILTER (WHERE scorer = 'duplicate')     AS duplicate,
       arg_max(value, created_at) FILTER (WHERE scorer = 'quality')       AS quality
FROM scores
GROUP BY candidate_id;

-- The verdicts of the most recently decided set (a saved curated set or the score-time preview).
CREATE VIEW v_current_verdicts AS
SELECT v.*
FROM candidate_verdicts v
WHERE v.set_id = (SELECT arg_max(set_id, decided_at) FROM candidate_verdicts);

CREATE VIEW v_candidate_quality AS
SELECT c.candidate_id, c.fact_id, c.kind, c.text, c.attack_type, c.generator, c.model, c.strategy,
       c.prompt_version,
       s.similarity, s.answer_leak, s.contradiction, s.fluency, s.duplicate, s.quality,
       v.keep, coalesce(v.reason, 'not judged yet') AS reason, v.role, v.rank, v.set_id
FROM candidates c
LEFT JOIN v_candidate_scores s USING (candidate_id)
LEFT JOIN v_current_verdicts v USING (candidate_id);

CREATE VIEW v_fact_coverage AS
SELECT f.fact_id, f.corpus, f.split, f.subject, f.question,
       count(q.candidate_id)                                             AS generated,
       count(q.candidate_id) FILTER (WHERE q.keep)                       AS kept,
       count(q.candidate_id) FILTER (WHERE q.keep AND q.kind = 'negative') AS kept_negatives,
       avg(q.quality)                                                    AS mean_quality,
       mode(q.reason) FILTER (WHERE NOT q.keep)                          AS top_drop_reason
FROM facts f
LEFT JOIN v_candidate_quality q USING (fact_id)
GROUP BY ALL;

CREATE VIEW v_generator_yield AS
SELECT generator, model, prompt_version, kind,
       count(*)                                       AS candidates,
       count(*) FILTER (WHERE keep)                   AS kept,
       count(*) FILTER (WHERE keep) / count(*)        AS kept_rate,
       avg(quality)                                   AS mean_quality,
       mode(reason) FILTER (WHERE NOT keep)           AS top_drop_reason
FROM v_candidate_quality
GROUP BY ALL;
