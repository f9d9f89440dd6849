-- 007: the evaluation's word n-gram entropy of the answers was called `fluency`, like the scorer
-- that judges candidate texts (a different measure); it is stored as `word_ngram_entropy` now.
-- v_eval_compare names its column so, and still reads the runs stored before under the old name.

CREATE OR REPLACE VIEW v_eval_compare AS
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
    max(r.value) FILTER (WHERE r.metric IN ('word_ngram_entropy', 'fluency') AND r.probe_set = 'all') AS word_ngram_entropy,
    min(r.created_at) AS evaluated_at
FROM eval_results r
GROUP BY r.run_id, r.model_label;
