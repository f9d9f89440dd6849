-- 002: the generate stage: which batches are complete (what lets a rerun resume), and views.

-- The batch that wrote a candidate (NULL for candidates written outside a batched run).
ALTER TABLE candidates ADD COLUMN batch_id VARCHAR;

CREATE TABLE generation_batches (
    batch_id       VARCHAR PRIMARY KEY,   -- hash(fact ids, backend identity, settings, prompt versions)
    run_id         VARCHAR,               -- the run that completed it
    generator      VARCHAR NOT NULL,      -- backend: rules / dataset / transformers / vllm / openai
    model          VARCHAR,
    batch_index    INTEGER,               -- position in that run's list of batches
    facts          INTEGER NOT NULL,
    fact_ids       VARCHAR NOT NULL,      -- JSON list
    requests       INTEGER,
    outputs        INTEGER,               -- texts the backend returned
    candidates     INTEGER,               -- candidates parsed from them
    new_candidates INTEGER,               -- rows newly written (the rest were already stored)
    rejected       INTEGER,               -- rejections rows (parse failures, rules that could not apply)
    seconds        DOUBLE,                -- generation time in the worker
    completed_at   TIMESTAMP DEFAULT current_timestamp
);

-- How many candidates each generator and model made, per kind and attack type.
CREATE VIEW v_candidates_by_generator AS
SELECT generator, model, kind, attack_type,
       count(*) AS candidates, count(DISTINCT fact_id) AS facts,
       min(created_at) AS first_at, max(created_at) AS last_at
FROM candidates
GROUP BY ALL
ORDER BY generator, model, kind, attack_type;

-- Candidates per fact and kind (facts without any show zeros).
CREATE VIEW v_candidates_per_fact AS
SELECT f.fact_id, f.corpus, f.split, f.subject, f.question, f.key_span,
       count(c.candidate_id) FILTER (WHERE c.kind = 'negative')   AS negatives,
       count(c.candidate_id) FILTER (WHERE c.kind = 'paraphrase') AS paraphrases,
       count(c.candidate_id) FILTER (WHERE c.kind = 'attack')     AS attacks,
       count(c.candidate_id) FILTER (WHERE c.kind = 'refusal')    AS refusals
FROM facts f
LEFT JOIN candidates c ON c.fact_id = f.fact_id
GROUP BY ALL
ORDER BY f.corpus, f.split, f.fact_id;

-- Why generation output was refused, most frequent first, with one example each.
CREATE VIEW v_generation_rejections AS
SELECT source AS generator, field AS strategy, reason, count(*) AS rejections,
       count(DISTINCT location) AS facts, any_value(payload) AS example
FROM rejections
WHERE stage = 'generate'
GROUP BY ALL
ORDER BY rejections DESC;

-- Per run: batches, candidates and throughput.
CREATE VIEW v_generation_runs AS
SELECT b.run_id, b.generator, b.model, r.status,
       count(*) AS batches, sum(b.facts) AS facts, sum(b.candidates) AS candidates,
       sum(b.new_candidates) AS new_candidates, sum(b.rejected) AS rejected,
       round(sum(b.seconds), 3) AS worker_seconds,
       round(sum(b.candidates) / nullif(sum(b.seconds), 0), 1) AS candidates_per_worker_s,
       min(b.completed_at) AS first_batch_at, max(b.completed_at) AS last_batch_at
FROM generation_batches b
LEFT JOIN runs r ON r.run_id = b.run_id
GROUP BY ALL
ORDER BY last_batch_at;
