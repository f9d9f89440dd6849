-- 005: evaluation: per-item scores as JSON, and the views users ask the evaluation with.

-- Everything an item's verdict was computed from beyond `score` (MIA scores, key coverage,
-- truth-ratio likelihoods, ROUGE-L), so `lune report` can redraw every plot from the store alone.
ALTER TABLE eval_items ADD COLUMN detail VARCHAR;

-- Which forget, paraphrase and attack probes an unlearned model still answers, with the attack
-- type, its generation, and what the base model said to the same probe in the same run.
CREATE VIEW v_leaks AS
SELECT
    i.run_id,
    i.model_label,
    i.method,
    i.probe_set,
    i.attack_type,
    i.fact_id,
    f.subject,
    i.prompt,
    i.expected,
    i.generation,
    i.score,
    b.generation AS base_generation,
    b.verdict    AS base_verdict,
    i.created_at
FROM eval_items i
LEFT JOIN facts f ON f.fact_id = i.fact_id
LEFT JOIN eval_items b
       ON b.run_id = i.run_id AND b.model_label = 'base'
      AND b.probe_set = i.probe_set AND b.probe_id = i.probe_id
WHERE i.probe_set IN ('forget', 'paraphrase', 'attack')
  AND i.model_label <> 'base'
  AND i.verdict = 'leaked';

-- Every metric of every evaluated model next to the base model of the same run, long form:
-- one row per (run, model, probe set, metric).
CREATE VIEW v_eval_deltas AS
SELECT
    r.run_id,
    r.model_label,
    r.method,
    r.probe_set,
    r.metric,
    r.value,
    b.value           AS base_value,
    r.value - b.value AS delta,
    r.n,
    r.created_at
FROM eval_results r
LEFT JOIN eval_results b
       ON b.run_id = r.run_id AND b.model_label = 'base'
      AND b.probe_set = r.probe_set AND b.metric = r.metric;

-- The headline metrics side by side: one row per evaluated model of every run (methods and runs
-- compared in one table). NULL where a run did not measure a metric (e.g. no retain model, so no
-- forget quality).
CREATE VIEW v_eval_compare AS
SELECT
    r.run_id,
    r.model_label,
    any_value(r.method) AS method,
    max(r.value) FILTER (WHERE r.metric = 'usr'          AND r.probe_set = 'forget')     AS usr,
    max(r.value) FILTER (WHERE r.metric = 'apr'          AND r.probe_set = 'adversarial') AS apr,
    max(r.value) FILTER (WHERE r.metric = 'apr'          AND r.probe_set = 'paraphrase') AS apr_paraphrase,
    max(r.value) FILTER (WHERE r.metric = 'apr'          AND r.probe_set = 'attack')     AS apr_attack,
    max(r.value) FILTER (WHERE r.metric = 'gur'          AND r.probe_set = 'all')        AS gur,
    max(r.value) FILTER (WHERE r.metric = 'recall'       AND r.probe_set = 'retain')     AS retain_recall,
    max(r.value) FILTER (WHERE r.metric = 'recall'       AND r.probe_set = 'neighbor')   AS neighbor_recall,
    max(r.value) FILTER (WHERE r.metric = 'recall'       AND r.probe_set = 'utility')    AS utility_recall,
    max(r.value) FILTER (WHERE r.metric = 'mia_auc_loss' AND r.probe_set = 'mia')        AS mia_auc_loss,
    max(r.value) FILTER (WHERE r.metric = 'mia_auc_min_k_plus_plus' AND r.probe_set = 'mia') AS mia_auc_min_k_plus_plus,
    max(r.value) FILTER (WHERE r.metric = 'mia_threshold_acc' AND r.probe_set = 'mia')   AS mia_threshold_acc,
    max(r.value) FILTER (WHERE r.metric = 'forget_quality' AND r.probe_set = 'tofu')     AS forget_quality,
    max(r.value) FILTER (WHERE r.metric = 'model_utility'  AND r.probe_set = 'tofu')     AS model_utility,
    max(r.value) FILTER (WHERE r.metric = 'rouge_l_recall' AND r.probe_set = 'forget')   AS rouge_l_forget,
    max(r.value) FILTER (WHERE r.metric = 'fluency'      AND r.probe_set = 'all')        AS fluency,
    min(r.created_at) AS evaluated_at
FROM eval_results r
GROUP BY r.run_id, r.model_label;
