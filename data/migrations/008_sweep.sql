-- 008: results of `lune sweep`: one row per sweep point, model and metric (flows/sweep.py writes
-- them, data/sweep_queries.py reads them). A point is one configuration and one seed; its own
-- store (point_store) keeps every row of its runs, this table the numbers a sweep report compares.

CREATE TABLE sweep_points (
    sweep_id      VARCHAR NOT NULL,     -- hash of the sweep file's resolved config
    point_id      VARCHAR NOT NULL,     -- hash of the point's resolved pipeline config (seed included)
    seed          BIGINT NOT NULL,      -- the repeat's seed (written to the sweep's seed_keys)
    axis_values   VARCHAR NOT NULL,     -- JSON: axis label -> value label
    settings      VARCHAR NOT NULL,     -- JSON: config key path -> value, what the point changed
    model_label   VARCHAR NOT NULL,     -- base / the method's label, as in eval_results
    metric        VARCHAR NOT NULL,     -- usr / gur / apr / model_utility / forget_quality / ...
    value         DOUBLE,
    train_seconds DOUBLE,               -- cost: wall time of the point's unlearning
    trainable_params BIGINT,            -- cost: parameters the method trained
    point_store   VARCHAR,              -- the point's own store file
    run_id        VARCHAR,              -- the sweep's runs row
    created_at    TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (sweep_id, point_id, model_label, metric)
);
