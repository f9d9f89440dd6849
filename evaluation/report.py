"""The evaluation report, rendered from the store alone (``lune evaluate`` writes it after storing
the run; ``lune report --run ID`` renders the same run again):

- ``report.md``: headline table per model, per-probe-set and per-attack-type tables, MIA (with
  privacy leakage) and TOFU (with exact memorization and extraction strength) tables, a sample of
  what still leaks, the plots;
- ``report.json``: the same numbers for scripts (``headline`` per model, every ``metrics`` row);
- ``before_after.png``, ``apr_by_attack.png``, ``mia_scores.png``, ``relearning_recovery.png``
  (matplotlib, Agg backend).

Metric definitions: ``docs/evaluation.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lune.data import evaluation_queries as q
from lune.data.store import Store
from lune.evaluation.probes import FORGET_SETS, PROBE_SETS, RETAIN_SETS

Row = dict[str, Any]

HEADLINE_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    # (key in report.json's headline, column title, probe_set, metric)
    ("usr", "USR", "forget", "usr"),
    ("apr", "APR", "adversarial", "apr"),
    ("gur", "GUR", "all", "gur"),
    ("retain_recall", "retain recall", "retain", "recall"),
    ("mia_auc_loss", "MIA AUC (loss)", "mia", "mia_auc_loss"),
    ("mia_auc_min_k_plus_plus", "MIA AUC (min-k%++)", "mia", "mia_auc_min_k_plus_plus"),
    ("mia_threshold_acc", "MIA acc", "mia", "mia_threshold_acc"),
    ("forget_quality", "forget quality", "tofu", "forget_quality"),
    ("model_utility", "model utility", "tofu", "model_utility"),
    ("word_ngram_entropy", "word n-gram entropy", "all", "word_ngram_entropy"),
)
MIA_METRICS = (
    "mia_auc_loss",
    "mia_auc_zlib",
    "mia_auc_min_k",
    "mia_auc_min_k_plus_plus",
    "mia_threshold_acc",
    "privleak",
)


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if abs(value) < 10**-digits and value != 0:
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


class _Index:
    def __init__(self, results: Sequence[Row]):
        self.rows = {(r["model_label"], r["probe_set"], r["metric"]): r for r in results}
        self.labels = _ordered_labels(r["model_label"] for r in results)

    def value(self, label: str, probe_set: str, metric: str) -> float | None:
        row = self.rows.get((label, probe_set, metric))
        return row["value"] if row else None

    def n(self, label: str, probe_set: str, metric: str) -> int | None:
        row = self.rows.get((label, probe_set, metric))
        return row["n"] if row else None

    def has(self, probe_set: str, metric: str) -> bool:
        return any(self.has_for(label, probe_set, metric) for label in self.labels)

    def has_for(self, label: str, probe_set: str, metric: str) -> bool:
        return (label, probe_set, metric) in self.rows


def _ordered_labels(labels: Any) -> list[str]:
    unique = list(dict.fromkeys(labels))
    head = [x for x in ("base",) if x in unique]
    tail = [x for x in ("retain_model",) if x in unique]
    return head + [x for x in unique if x not in head + tail] + tail


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    if not rows:
        return []
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return lines + [""]


def headline(results: Sequence[Row]) -> dict[str, dict[str, float | None]]:
    """The headline metrics per model label (keys of ``HEADLINE_COLUMNS``), from result rows."""
    index = _Index(results)
    return {
        label: {
            key: index.value(label, probe_set, metric)
            for key, _, probe_set, metric in HEADLINE_COLUMNS
            if (label, probe_set, metric) in index.rows
        }
        for label in index.labels
    }


def build_report_data(store: Store, run_id: str) -> dict[str, Any]:
    """Everything the report shows, read from the store: the ``report.json`` document."""
    run = q.run_row(store, run_id)
    results = q.run_results(store, run_id)
    models = run["config"].get("models", [])
    return {
        "run_id": run_id,
        "status": run["status"],
        "started_at": str(run["started_at"]),
        "set_id": run["config"].get("set_id"),
        "models": models,
        "counts": run["metrics"].get("counts", {}),
        "notes": run["metrics"].get("notes", []),
        "probes_per_second": run["metrics"].get("probes_per_second", {}),
        "headline": headline(results),
        "metrics": [{k: r[k] for k in ("model_label", "method", "probe_set", "metric", "value", "n")} for r in results],
    }


def gate_section(index: _Index) -> list[str]:
    """GRUN's gate per probe set (``evaluation/metrics/gate.py``): one column per model with gates."""
    gated = [label for label in index.labels if any(index.has_for(label, name, "gate_mean") for name in PROBE_SETS)]
    if not gated:
        return []
    rows = [
        [name, metric, *[fmt(index.value(label, name, metric)) for label in gated]]
        for name in PROBE_SETS
        for metric in ("gate_mean", "gate_auc")
        if any(index.has_for(label, name, metric) for label in gated)
    ]
    lines = [
        "## GRUN gate",
        "",
        "Mean gate g(h) at the prompt's last token (1 = the edit fully on), and its AUC separating each "
        "forget-type set's prompts from the retain set's (1.0 = opens more on every one; 0.5 = no "
        "separation). Paraphrases and attacks were never trained on: does the gate open for them?",
        "",
    ]
    return lines + _table(["probe set", "metric", *gated], rows)


def render_markdown(data: dict[str, Any], results: Sequence[Row], leaks: Sequence[Row], plots: dict[str, str]) -> str:
    index = _Index(results)
    labels = [x for x in index.labels if x != "retain_model"]
    lines = [f"# lune evaluation report: run `{data['run_id']}`", ""]
    lines.append(
        f"Started {data['started_at']}; curated set `{data['set_id'] or 'none'}`; status {data['status']}. "
        "Metric definitions and formulas: `docs/evaluation.md`."
    )
    lines.append("")
    if data["models"]:
        lines += ["## Models", ""]
        lines += _table(
            ["label", "method", "model", "adapter", "answers via"],
            [
                [
                    mm["label"],
                    mm.get("method") or "–",
                    f"`{mm['model_path']}`",
                    f"`{mm['adapter_path']}`"
                    if mm.get("adapter_path")
                    else (f"`{mm['interventions_path']}` (interventions)" if mm.get("interventions_path") else "–"),
                    mm.get("generation_backend") or "–",
                ]
                for mm in data["models"]
            ],
        )
        if any(mm.get("interventions_path") for mm in data["models"]):
            lines += [
                "Interventions (GRUN) are forward hooks on the transformers model: those models were "
                "answered and scored through transformers, whatever the backend (vLLM has no LoRA request for them).",
                "",
            ]
    lines += [
        "## Headline",
        "",
        "USR, APR: share of forget / paraphrase+attack probes whose answer no longer states the key (higher "
        "is better after unlearning). GUR: retained recall after / before (1.0 = nothing lost). MIA: 0.5 = "
        "forget texts look unseen. Forget quality: KS-test p-value against the retain model (higher is better).",
        "",
    ]
    columns = [c for c in HEADLINE_COLUMNS if index.has(c[2], c[3])]
    lines += _table(
        ["model", *[c[1] for c in columns]],
        [[label, *[fmt(index.value(label, c[2], c[3])) for c in columns]] for label in labels],
    )
    # probe sets
    rows = []
    for name in (*FORGET_SETS, *RETAIN_SETS):
        metric = "usr" if name in FORGET_SETS else "recall"
        if not index.has(name, metric):
            continue
        n = next((index.n(label, name, metric) for label in labels if index.n(label, name, metric) is not None), None)
        rows.append(
            [
                name,
                metric.upper() if metric == "usr" else "recall",
                str(n),
                *[fmt(index.value(label, name, metric)) for label in labels],
            ]
        )
    if rows:
        lines += ["## Probe sets", "", "USR on forget-type sets, recall (key still stated) on retained sets.", ""]
        lines += _table(["probe set", "metric", "n", *labels], rows)
    # attack types
    types = sorted({r["probe_set"] for r in results if r["probe_set"].startswith("attack:")})
    if types or index.has("adversarial", "apr"):
        rows = [
            [name, *[fmt(index.value(label, name, "apr")) for label in labels]]
            for name in ("adversarial", "paraphrase", "attack", *types)
            if index.has(name, "apr")
        ]
        lines += [
            "## APR by attack type",
            "",
            "USR on each kind of held-out probe (`adversarial` = paraphrases and attacks together).",
            "",
        ]
        lines += _table(["probes", *labels], rows)
    # MIA
    if any(index.has("mia", metric) for metric in MIA_METRICS):
        lines += [
            "## Membership inference",
            "",
            "AUC of each score, forget texts (members) vs never-seen texts; "
            "threshold accuracy uses the loss threshold fitted on the base model; "
            "privleak: the min-k% AUC relative to the retain model's, in % (0 = as the retain model, "
            "negative = forget texts still stand out).",
            "",
        ]
        lines += _table(
            ["metric", *labels],
            [
                [metric, *[fmt(index.value(label, "mia", metric)) for label in labels]]
                for metric in MIA_METRICS
                if index.has("mia", metric)
            ],
        )
    # TOFU
    tofu_rows = [
        [probe_set, metric, *[fmt(index.value(label, probe_set, metric)) for label in labels]]
        for (probe_set, metric) in sorted(
            {(r["probe_set"], r["metric"]) for r in results if r["probe_set"].startswith("tofu")}
        )
    ]
    if tofu_rows:
        lines += [
            "## TOFU",
            "",
            "Truth ratio: `mean min(R, 1/R)` on forget, `mean max(0, 1 - R)` elsewhere; "
            "model utility: harmonic mean of probability, ROUGE-L recall and truth ratio on the retained sets; "
            "exact memorization: share of answer tokens that are the teacher-forced greedy choice; "
            "extraction strength: 1 - (shortest prefix after which the rest is greedy) / answer length.",
            "",
        ]
        lines += _table(["set", "metric", *labels], tofu_rows)
    # other per-set metrics
    rows = [
        [name, metric, *[fmt(index.value(label, name, metric)) for label in labels]]
        for metric in ("rouge_l_recall", "word_ngram_entropy")
        for name in (*FORGET_SETS, *RETAIN_SETS, "all")
        if index.has(name, metric)
    ]
    if rows:
        lines += ["## ROUGE-L recall and word n-gram entropy", ""]
        lines += _table(["probe set", "metric", *labels], rows)
    lines += gate_section(index)
    lines += does_it_hold(results)
    if data["counts"]:
        lines += ["## Probes", ""]
        lines += _table(["set", "items"], [[k, str(v)] for k, v in sorted(data["counts"].items()) if v])
    if data["notes"]:
        lines += ["Notes:", "", *[f"- {note}" for note in data["notes"]], ""]
    if leaks:
        lines += ["## Still leaking after unlearning (sample from `v_leaks`)", ""]
        lines += _table(
            ["model", "probes", "attack type", "prompt", "key", "generation"],
            [
                [
                    r["model_label"],
                    r["probe_set"],
                    r["attack_type"] or "–",
                    _clip(r["prompt"]),
                    _clip(r["expected"]),
                    _clip(r["generation"]),
                ]
                for r in leaks
            ],
        )
    if plots:
        lines += ["## Plots", ""]
        for name, path in plots.items():
            lines += [f"![{name}]({Path(path).name})", ""]
    return "\n".join(lines).rstrip() + "\n"


# The headline measure(s) of each attack in the "Does it hold" summary (metric suffixes after
# ``attack.<name>.``); every other attack measure is in the table of all measures below it.
SUMMARY_SUFFIXES = (".forget_recall", ".recovery", ".recovery_vs_retain", "recovered")
ATTACK_TITLES = {
    "relearning": "relearning",
    "quantization": "quantization",
    "logit_lens": "logit lens",
}


def does_it_hold(results: Sequence[Row]) -> list[str]:
    """The "Does it hold" section: one row per attack (and variant) with its headline measure, one
    column per model (before unlearning, each method, the retain model as the reference), then
    every attack measure (metrics ``attack.<name>.<measure>``, ``evaluation/attacks/``)."""
    index = _Index(results)
    measures = sorted({(r["metric"], r["probe_set"]) for r in results if r["metric"].startswith("attack.")})
    if not measures:
        return []
    lines = [
        "## Does it hold",
        "",
        "The forgetting under attack (docs/evaluation.md, Does it hold); `base` is the model before unlearning, "
        "`retain_model` never saw the forget facts. Relearning: the forget facts are split by fact into T and V; "
        "each model is fine-tuned a few steps on T (`forget`) or on as many retain facts (`retain`), and its "
        "recall on V measured; recovery R = (recall after - recall of the model itself) / (recall before "
        "unlearning - recall of the model itself) on V, 0 = nothing came back, 1 = all of it; `vs retain`: R "
        "minus the retain model's R under the same fine-tuning. Quantization: forget recall after round-to-"
        "nearest quantization of every linear weight (`full`: unquantized); flip rate: share of quantized "
        "weights that differ from the quantized model before unlearning. Logit lens: share of forget facts "
        "whose key token is in the top k of a layer's output read through the final norm and head "
        "(`recovered`: any layer).",
        "",
    ]
    summary = [(m, p) for m, p in measures if m.endswith(SUMMARY_SUFFIXES) or _relearned_recall(m)]
    lines += _table(
        ["attack", "measure", *index.labels],
        [
            [*_attack_title(metric), *[fmt(index.value(x, probe_set, metric)) for x in index.labels]]
            for metric, probe_set in summary
        ],
    )
    return lines + [
        "All attack measures:",
        "",
        *_table(
            ["attack measure", *index.labels],
            [
                [metric.removeprefix("attack."), *[fmt(index.value(x, probe_set, metric)) for x in index.labels]]
                for metric, probe_set in measures
            ],
        ),
    ]


def _relearned_recall(metric: str) -> bool:
    """``attack.relearning.<variant>.recall``: recall on V after the last step count."""
    parts = metric.split(".")
    return len(parts) == 4 and parts[1] == "relearning" and parts[3] == "recall"


def _attack_title(metric: str) -> tuple[str, str]:
    """``attack.relearning.forget.recovery`` -> ``("relearning (forget)", "recovery R")``."""
    name, _, rest = metric.removeprefix("attack.").partition(".")
    variant, _, measure = rest.rpartition(".")
    title = ATTACK_TITLES.get(name, name) + (f" ({variant})" if variant else "")
    words = {
        "recovery": "recovery R",
        "recovery_vs_retain": "R - retain model's R",
        "forget_recall": "forget recall",
        "recovered": "recovered (any layer)",
        "recall": "recall on V after relearning",
    }
    return title, words.get(measure, measure)


def _clip(text: str | None, width: int = 90) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


# -- plots -------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_before_after(results: Sequence[Row], path: Path) -> Path | None:
    """Share of probes whose answer states the key, per probe set and model."""
    index = _Index(results)
    labels = [x for x in index.labels if x != "retain_model"]
    sets = [(name, "usr") for name in FORGET_SETS if index.has(name, "usr")] + [
        (name, "recall") for name in RETAIN_SETS if index.has(name, "recall")
    ]
    if not sets or not labels:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(sets) + 2), 4))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        values = []
        for name, metric in sets:
            value = index.value(label, name, metric)
            values.append(float("nan") if value is None else (1 - value if metric == "usr" else value))
        ax.bar([x + i * width for x in range(len(sets))], values, width, label=label)
    ax.set_xticks([x + width * (len(labels) - 1) / 2 for x in range(len(sets))], [name for name, _ in sets])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of probes answered with the key")
    ax.set_title(
        "Key still stated: lower is better on forget / paraphrase / attack,\nhigher on retain / neighbor / utility",
        fontsize=10,
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_apr_by_attack(results: Sequence[Row], path: Path) -> Path | None:
    index = _Index(results)
    labels = [x for x in index.labels if x != "retain_model"]
    names = [
        n
        for n in ["paraphrase"] + sorted({r["probe_set"] for r in results if r["probe_set"].startswith("attack:")})
        if index.has(n, "apr")
    ]
    if not names:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names) * max(1, len(labels) / 2) + 2), 4))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        values = [index.value(label, n, "apr") for n in names]
        ax.bar(
            [x + i * width for x in range(len(names))],
            [float("nan") if v is None else v for v in values],
            width,
            label=label,
        )
    ax.set_xticks(
        [x + width * (len(labels) - 1) / 2 for x in range(len(names))],
        [n.removeprefix("attack:") for n in names],
        rotation=30,
        ha="right",
    )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("USR (share no longer stating the key)")
    ax.set_title("APR per attack type (higher is better)", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def relearning_curves(results: Sequence[Row]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{variant: {model: [(steps, recall on V), ...]}}`` from the rows
    ``attack.relearning.<variant>.step_<s>.recall`` (``evaluation/attacks/relearning.py``)."""
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for row in results:
        parts = row["metric"].split(".")
        if len(parts) != 5 or parts[:2] != ["attack", "relearning"] or not parts[3].startswith("step_"):
            continue
        if row["value"] is None:
            continue
        curve = curves.setdefault(parts[2], {}).setdefault(row["model_label"], [])
        curve.append((int(parts[3].removeprefix("step_")), row["value"]))
    for by_model in curves.values():
        for curve in by_model.values():
            curve.sort()
    return curves


def plot_relearning(results: Sequence[Row], path: Path) -> Path | None:
    """Forget recall on V over relearning steps, one panel per variant, one line per model (the
    model before unlearning and the retain model dashed: the ceiling and the floor)."""
    curves = relearning_curves(results)
    if not curves:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.6), squeeze=False, sharey=True)
    for ax, (variant, by_model) in zip(axes[0], sorted(curves.items())):
        for label in _ordered_labels(by_model):
            steps, values = zip(*by_model[label])
            style = "--" if label in ("base", "retain_model") else "-"
            ax.plot(steps, values, style, marker="o", label=label)
        ax.set_title(f"fine-tuned on {'T (other forget facts)' if variant == 'forget' else variant + ' facts'}")
        ax.set_xlabel("relearning steps")
        ax.set_ylim(-0.05, 1.05)
    axes[0][0].set_ylabel("forget recall on V")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Relearning: does fine-tuning bring the held-out forget facts (V) back?", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_mia(items: Sequence[Row], path: Path) -> Path | None:
    """Histograms of the loss score (mean token log-likelihood) of members vs non-members per model."""
    by_label: dict[str, dict[str, list[float]]] = {}
    for item in items:
        if item["probe_set"] in ("mia_member", "mia_nonmember") and item["score"] is not None:
            by_label.setdefault(item["model_label"], {}).setdefault(item["probe_set"], []).append(item["score"])
    labels = [x for x in _ordered_labels(by_label) if len(by_label[x]) == 2]
    if not labels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(labels), figsize=(4 * len(labels), 3.2), squeeze=False, sharey=True)
    for ax, label in zip(axes[0], labels):
        members, nonmembers = by_label[label]["mia_member"], by_label[label]["mia_nonmember"]
        lo, hi = min(members + nonmembers), max(members + nonmembers)
        bins = [lo + (hi - lo) * i / 20 for i in range(21)] if hi > lo else 10
        # densities: the two sides rarely have the same number of texts
        ax.hist(members, bins=bins, alpha=0.6, density=True, label=f"forget (members, n={len(members)})")
        ax.hist(nonmembers, bins=bins, alpha=0.6, density=True, label=f"non-members (n={len(nonmembers)})")
        ax.set_title(label)
        ax.set_xlabel("mean token log-likelihood")
    axes[0][0].set_ylabel("density")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("MIA score distributions (overlap = forget texts look unseen)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- the whole report --------------------------------------------------------------------------


def render_run(store: Store, run_id: str, out_dir: str | Path, *, plots: bool = True) -> dict[str, str]:
    """Write ``report.md``, ``report.json`` and the plots of a stored run into ``out_dir``; return
    ``{name: path}`` of the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = build_report_data(store, run_id)
    results = q.run_results(store, run_id)
    files: dict[str, str] = {}
    if plots:
        items = q.run_items(store, run_id, ["mia_member", "mia_nonmember"])
        for name, fn, arg in (
            ("before_after", plot_before_after, results),
            ("apr_by_attack", plot_apr_by_attack, results),
            ("mia_scores", plot_mia, items),
            ("relearning_recovery", plot_relearning, results),
        ):
            written = fn(arg, out / f"{name}.png")
            if written:
                files[name] = str(written)
    leaks = q.run_leaks(store, run_id, limit=15)
    (out / "report.md").write_text(render_markdown(data, results, leaks, files), encoding="utf-8")
    data["plots"] = {k: Path(v).name for k, v in files.items()}
    (out / "report.json").write_text(
        json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )
    return {"report_md": str(out / "report.md"), "report_json": str(out / "report.json"), **files}


def rendered_report(
    store: Store, run_id: str, out_dir: str | Path, report_files: dict[str, str], *, plots: bool = True
) -> dict[str, str]:
    """The report files of the stored run ``run_id`` in ``out_dir``: ``report_files`` where they are
    there and hold that run, else rendered again from the store (no model is loaded).

    A replayed pipeline run hands back the report paths of its evaluation, but the folder may since
    have been deleted, or rewritten by another run writing into it (another config with the same
    ``workdir``)."""
    try:
        current = json.loads((Path(out_dir) / "report.json").read_text(encoding="utf-8")).get("run_id") == run_id
    except (OSError, ValueError):
        current = False
    return report_files if current else render_run(store, run_id, out_dir, plots=plots)
