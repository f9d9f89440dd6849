-- 001: the tables of the data contract (DESIGN.md section 1).
-- Ids are content hashes computed in data/ids.py, so writing the same thing twice is a no-op.
-- Columns named `extra` / `detail` / `config` hold JSON text for what does not deserve a column.

CREATE TABLE facts (
    fact_id          VARCHAR PRIMARY KEY,   -- hash(corpus, question, answer)
    corpus           VARCHAR NOT NULL,      -- tofu / rwku / knowundo / a user's corpus name
    source_file      VARCHAR NOT NULL,      -- file the fact was read from
    source_line      INTEGER,               -- 1-based line (JSONL/CSV) or array index + 1 (JSON)
    subject          VARCHAR,               -- who or what the fact is about
    question         VARCHAR NOT NULL,
    answer           VARCHAR NOT NULL,
    key_span         VARCHAR NOT NULL,      -- the part of the answer that must disappear
    key_span_source  VARCHAR NOT NULL,      -- dataset / derived / user
    split            VARCHAR NOT NULL,      -- forget / retain / holdout / utility
    group_name       VARCHAR,               -- finer origin: forget01, level2, unlearn_train, ...
    extra            VARCHAR,               -- JSON
    ingested_at      TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE probes (
    probe_id     VARCHAR PRIMARY KEY,       -- hash(corpus, kind, fact_id or subject, text)
    fact_id      VARCHAR,                   -- NULL for texts tied to a subject only (MIA)
    corpus       VARCHAR NOT NULL,
    subject      VARCHAR,
    kind         VARCHAR NOT NULL,          -- paraphrased_question / paraphrased_answer / perturbed_answer /
                                            -- adversarial / mia_member / mia_nonmember / negative_text
    text         VARCHAR NOT NULL,
    answer       VARCHAR,                   -- expected answer where the dataset gives one
    attack_type  VARCHAR,                   -- RWKU level-3 family
    source_file  VARCHAR NOT NULL,
    source_line  INTEGER,
    extra        VARCHAR,
    ingested_at  TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE candidates (
    candidate_id    VARCHAR PRIMARY KEY,    -- hash(fact_id, kind, text, generator, model, prompt_version, seed)
    fact_id         VARCHAR NOT NULL,
    kind            VARCHAR NOT NULL,       -- negative / paraphrase / attack / refusal
    text            VARCHAR NOT NULL,
    attack_type     VARCHAR,
    generator       VARCHAR NOT NULL,       -- backend: vllm / openai / transformers / rules / dataset
    model           VARCHAR,
    strategy        VARCHAR,
    prompt_version  VARCHAR,                -- hash of the prompt template
    sampling        VARCHAR,                -- JSON of the sampling parameters
    seed            BIGINT,
    source_probe_id VARCHAR,                -- for dataset-provided candidates
    run_id          VARCHAR,
    created_at      TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE scores (
    candidate_id   VARCHAR NOT NULL,
    scorer         VARCHAR NOT NULL,
    scorer_version VARCHAR NOT NULL,
    value          DOUBLE,
    detail         VARCHAR,
    run_id         VARCHAR,
    created_at     TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (candidate_id, scorer, scorer_version)
);

CREATE TABLE embeddings (
    text_hash  VARCHAR NOT NULL,
    model      VARCHAR NOT NULL,
    dim        INTEGER NOT NULL,
    vector     FLOAT[] NOT NULL,
    created_at TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (text_hash, model)
);

CREATE TABLE curated_sets (
    set_id     VARCHAR PRIMARY KEY,         -- hash(name, version)
    name       VARCHAR NOT NULL,
    version    INTEGER NOT NULL,
    policy     VARCHAR NOT NULL,            -- JSON of the resolved policy
    counts     VARCHAR,                     -- JSON
    run_id     VARCHAR,
    created_at TIMESTAMP DEFAULT current_timestamp,
    UNIQUE (name, version)
);

CREATE TABLE curated_items (
    set_id       VARCHAR NOT NULL,
    candidate_id VARCHAR NOT NULL,          -- a candidate id, or a probe id for dataset-provided eval probes
    fact_id      VARCHAR NOT NULL,
    role         VARCHAR NOT NULL,          -- train / eval
    kind         VARCHAR NOT NULL,
    PRIMARY KEY (set_id, candidate_id)
);

CREATE TABLE runs (
    run_id        VARCHAR PRIMARY KEY,
    kind          VARCHAR NOT NULL,         -- ingest / generate / score / curate / teach / unlearn / evaluate / pipeline
    parent_run_id VARCHAR,
    config        VARCHAR,                  -- JSON of the resolved config
    status        VARCHAR NOT NULL,         -- running / completed / failed
    started_at    TIMESTAMP DEFAULT current_timestamp,
    finished_at   TIMESTAMP,
    metrics       VARCHAR,                  -- JSON: timings, counts, resources
    artefacts     VARCHAR,                  -- JSON: name -> path
    error         VARCHAR
);

CREATE TABLE eval_results (
    result_id   VARCHAR PRIMARY KEY,        -- hash(run_id, model_label, probe_set, metric)
    run_id      VARCHAR NOT NULL,
    model_label VARCHAR NOT NULL,           -- base / unlearned / a method name
    method      VARCHAR,
    probe_set   VARCHAR NOT NULL,
    metric      VARCHAR NOT NULL,
    value       DOUBLE,
    n           INTEGER,
    detail      VARCHAR,
    created_at  TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE eval_items (
    item_id     VARCHAR PRIMARY KEY,        -- hash(run_id, model_label, probe_set, probe id)
    run_id      VARCHAR NOT NULL,
    model_label VARCHAR NOT NULL,
    method      VARCHAR,
    probe_set   VARCHAR NOT NULL,
    fact_id     VARCHAR,
    probe_id    VARCHAR,
    attack_type VARCHAR,
    prompt      VARCHAR,
    expected    VARCHAR,
    generation  VARCHAR,
    verdict     VARCHAR,                    -- leaked / forgotten / recalled / missed / ...
    score       DOUBLE,
    created_at  TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE rejections (
    rejection_id VARCHAR PRIMARY KEY,       -- hash(stage, source, location, reason)
    run_id       VARCHAR,
    stage        VARCHAR NOT NULL,
    source       VARCHAR NOT NULL,          -- file path, generator, scorer
    location     VARCHAR,                   -- line number, fact id, batch id
    field        VARCHAR,
    reason       VARCHAR NOT NULL,
    payload      VARCHAR,                   -- the refused text, truncated
    created_at   TIMESTAMP DEFAULT current_timestamp
);

CREATE VIEW v_facts_by_split AS
SELECT corpus, split, group_name, count(*) AS facts, count(DISTINCT subject) AS subjects
FROM facts
GROUP BY ALL
ORDER BY corpus, split, group_name;
