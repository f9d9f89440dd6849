"""The results of a pipeline run, as the table `lune run` prints and as ``results.json`` (written
beside the report, for scripts). Both are read from the report's ``report.json``, which the
evaluation stage renders from the store, so the three always agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lune.commands.sql import format_table
from lune.evaluation.report import fmt

# (row title, probe_set, metric, transform) in the order a reader checks them.
ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("forget recall (key answer stated)", "forget", "usr", "one_minus"),
    ("USR: unlearning success rate", "forget", "usr", ""),
    ("GUR: general utility retention", "all", "gur", ""),
    ("retain recall", "retain", "recall", ""),
    ("utility recall", "utility", "recall", ""),
    ("APR: adversarial paraphrase robustness", "adversarial", "apr", ""),
    ("APR on paraphrased questions", "paraphrase", "apr", ""),
    ("APR on attacks (all families)", "attack", "apr", ""),
    ("MIA AUC (loss)", "mia", "mia_auc_loss", ""),
    ("MIA AUC (min-k%++)", "mia", "mia_auc_min_k_plus_plus", ""),
    ("TOFU truth ratio (forget)", "tofu_forget", "truth_ratio", ""),
    ("TOFU forget quality (KS p-value)", "tofu", "forget_quality", ""),
    ("TOFU model utility", "tofu", "model_utility", ""),
    ("privacy leakage (min-k% AUC vs retain, %)", "mia", "privleak", ""),
    ("exact memorization (TOFU forget)", "tofu_forget", "exact_memorization", ""),
    ("extraction strength (TOFU forget)", "tofu_forget", "extraction_strength", ""),
)


def _report(summary: dict[str, Any]) -> dict[str, Any]:
    path = summary["evaluation"]["report_files"]["report_json"]
    return json.loads(Path(path).read_text(encoding="utf-8"))


def results_document(summary: dict[str, Any]) -> dict[str, Any]:
    """``results.json``: the pipeline's ids and paths, the metric rows, and wall times."""
    report = _report(summary)
    values: dict[str, dict[str, Any]] = {}
    for row in report["metrics"]:
        values.setdefault(row["model_label"], {})[f"{row['probe_set']}/{row['metric']}"] = row["value"]
    return {
        "pipeline_run_id": summary["pipeline_run_id"],
        "evaluation_run_id": summary["evaluation"]["run_id"],
        "set_id": summary["set_id"],
        "methods": summary["methods"],
        "models": {"base": summary["model_dir"], "retain_model": summary["retain_model_dir"], **summary["adapters"]},
        "headline": report["headline"],
        "metrics": values,
        "stage_seconds": summary["stage_seconds"],
        "wall_seconds": summary["wall_seconds"],
        "report": summary["evaluation"]["report_files"],
    }


def write_results(summary: dict[str, Any]) -> Path:
    """Write ``results.json`` beside the report; return its path."""
    path = Path(summary["evaluation"]["report_files"]["report_json"]).with_name("results.json")
    path.write_text(json.dumps(results_document(summary), indent=2, default=str), encoding="utf-8")
    return path


def results_table(summary: dict[str, Any]) -> str:
    """One row per metric, one column per model (base first, then each method)."""
    metrics = results_document(summary)["metrics"]
    # base, then the methods in the order asked (the store returns them sorted by label)
    ordered = ["base", *summary["methods"]]
    labels = [label for label in ordered if label in metrics]
    labels += [label for label in metrics if label not in ordered and label != "retain_model"]
    lines: list[tuple[Any, ...]] = []
    for title, probe_set, metric, transform in ROWS:
        key = f"{probe_set}/{metric}"
        if not any(key in metrics[label] for label in labels):
            continue
        cells = []
        for label in labels:
            value = metrics[label].get(key)
            if value is not None and transform == "one_minus":
                value = 1.0 - value
            cells.append(fmt(value))
        lines.append((title, *cells))
    families = sorted({k.split("/")[0] for label in labels for k in metrics[label] if k.startswith("attack:")})
    for family in families:
        lines.append(
            (f"  APR, {family.split(':', 1)[1]}", *[fmt(metrics[label].get(f"{family}/apr")) for label in labels])
        )
    blank = ["" for _ in labels[1:]]
    lines.append(("wall time of the run (s)", f"{summary['wall_seconds']:.0f}", *blank))
    reused = summary.get("reused_stages") or []
    if reused:  # a resumed or replayed run: say what was not redone, and what it had cost
        spent = sum(summary["stage_seconds"].get(name, 0.0) for name in reused)
        lines.append((f"  {len(reused)} stages reused, had taken (s)", f"{spent:.0f}", *blank))
    return format_table(["metric", *labels], lines, width=48)
