-- 009: facts set aside before generation, and why. The `select` step of a pipeline (data/fact_selection.py)
-- keeps the facts a model actually answers (knowledge probe, evaluation/knowledge_probe.py) and at
-- most `select.max_facts` per split; every other fact of the pipeline's corpora gets split
-- 'set_aside', which no stage reads. Its original split is recorded here, so the next selection
-- (another threshold, another model) starts again from every fact.

CREATE TABLE fact_selection (
    run_id     VARCHAR NOT NULL,            -- the select stage run
    fact_id    VARCHAR NOT NULL,
    split      VARCHAR NOT NULL,            -- the fact's split before selection
    keep       BOOLEAN NOT NULL,
    reason     VARCHAR NOT NULL,            -- kept / unknown (the probe's model does not answer it) / over_cap
    model      VARCHAR,                     -- knowledge probe: the model reference asked (NULL: not probed)
    answers    VARCHAR,                     -- knowledge probe: JSON list of the greedy answers, one per prompt
    score      DOUBLE,                      -- knowledge probe: mean key score of the answers (0..1)
    created_at TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (run_id, fact_id)
);

-- The latest selection of each fact, with the fact: what was kept, what was set aside and why.
CREATE VIEW v_fact_selection AS
SELECT f.corpus, f.subject, f.group_name, s.split, s.keep, s.reason, s.score, s.answers, f.question,
       f.key_span, s.model, s.run_id, s.fact_id, s.created_at
FROM (SELECT * FROM fact_selection QUALIFY row_number() OVER (PARTITION BY fact_id ORDER BY created_at DESC) = 1) s
JOIN facts f USING (fact_id);
