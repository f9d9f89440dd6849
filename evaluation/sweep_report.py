"""The report of a sweep: a table of every point, a Pareto plot of forgetting against utility with
cost as marker size, and one effect plot per axis with confidence intervals over seeds.

Input: ``sweep_points`` rows as plain dicts (``data.sweep_queries.sweep_rows``): ``point_id``,
``seed``, ``axis_values`` (axis -> value), ``model_label``, ``metric``, ``value``, ``train_seconds``,
``trainable_params``. Only the unlearned models are compared (not ``base``).

Files (``write_report``): ``sweep.md`` and ``sweep.csv`` (the table), ``pareto.png``,
``effect_<axis>.png``.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lune.core.models import BASE_LABEL, RETAIN_LABEL

FORGET = "usr"  # unlearning success rate on the forget probes: higher is more forgotten
UTILITY = ("gur", "model_utility")  # general utility retention, TOFU model utility: higher is better
TABLE_METRICS = ("usr", "apr", "gur", "model_utility", "forget_quality", "negatives_per_fact")


@dataclass
class PointResult:
    """One measured point: its axis values, seed, metrics and cost."""

    point_id: str
    seed: int
    values: dict[str, str]
    model_label: str
    metrics: dict[str, float | None] = field(default_factory=dict)
    train_seconds: float | None = None
    trainable_params: int | None = None


def collect(rows: Sequence[dict[str, Any]]) -> list[PointResult]:
    """Rows (one per point, model and metric) as one result per point and unlearned model."""
    found: dict[tuple[str, str], PointResult] = {}
    for row in rows:
        if row["model_label"] in (BASE_LABEL, RETAIN_LABEL):
            continue
        key = (row["point_id"], row["model_label"])
        point = found.setdefault(
            key,
            PointResult(
                row["point_id"],
                int(row["seed"]),
                dict(row["axis_values"]),
                row["model_label"],
                train_seconds=row.get("train_seconds"),
                trainable_params=row.get("trainable_params"),
            ),
        )
        point.metrics[row["metric"]] = row["value"]
    return sorted(found.values(), key=lambda p: (sorted(p.values.items()), p.seed))


def pareto_front(pairs: Sequence[tuple[float, float]]) -> list[bool]:
    """For each (utility, forget) pair, whether no other pair is at least as good in both and
    better in one (both are maximised).

    >>> pareto_front([(0.9, 0.5), (0.8, 0.9), (0.7, 0.4), (0.9, 0.5)])
    [True, True, False, True]
    """
    flags = []
    for i, (u, f) in enumerate(pairs):
        dominated = any((u2 >= u and f2 >= f) and (u2 > u or f2 > f) for j, (u2, f2) in enumerate(pairs) if j != i)
        flags.append(not dominated)
    return flags


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of its ``level`` confidence interval (Student t over the values, one per
    seed): ``t_{(1+level)/2, n-1} * s / sqrt(n)``; 0 for a single value.

    >>> mean_ci([0.5, 0.7])   # s = 0.1414, t(0.975, 1) = 12.706 -> 12.706 * 0.1414 / 1.414
    (0.6, 1.2706204736174...)
    """
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf((1 + level) / 2, n - 1) * sd / math.sqrt(n))


def axis_effect(points: Sequence[PointResult], axis: str, metric: str) -> list[tuple[str, float, float, int]]:
    """Per value of ``axis``: (value, mean, CI half-width, seeds) of ``metric``. Each seed's number is
    the mean over the other axes' points at that value (a marginal effect); the interval is over seeds."""
    by_value: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    order: list[str] = []
    for p in points:
        value = p.values.get(axis)
        if value is None or p.metrics.get(metric) is None:
            continue
        if value not in order:
            order.append(value)
        by_value[value][p.seed].append(float(p.metrics[metric]))  # type: ignore[arg-type]
    effects = []
    for value in order:
        per_seed = [sum(v) / len(v) for v in by_value[value].values()]
        mean, half = mean_ci(per_seed)
        effects.append((value, mean, half, len(per_seed)))
    return effects


def effect_cell(value: str, mean: float, half: float, seeds: int) -> str:
    """One value's effect as the report writes it; one seed has no interval, and says so."""
    if seeds < 2:
        return f"{value}: {mean:.3f} (1 seed, no interval)"
    return f"{value}: {mean:.3f} ± {half:.3f} ({seeds} seeds)"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def table(points: Sequence[PointResult], axes: Sequence[str]) -> tuple[list[str], list[list[Any]]]:
    header = [*axes, "seed", "model", *TABLE_METRICS, "train_s", "trainable_params"]
    body = [
        [
            *(p.values.get(a) for a in axes),
            p.seed,
            p.model_label,
            *(p.metrics.get(m) for m in TABLE_METRICS),
            p.train_seconds,
            p.trainable_params,
        ]
        for p in points
    ]
    return header, body


def utility_metric(points: Sequence[PointResult]) -> str:
    """GUR where measured, else TOFU model utility."""
    for name in UTILITY:
        if any(p.metrics.get(name) is not None for p in points):
            return name
    return UTILITY[0]


def plot_pareto(points: Sequence[PointResult], path: Path, axes: Sequence[str]) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    utility = utility_metric(points)
    shown = [p for p in points if p.metrics.get(FORGET) is not None and p.metrics.get(utility) is not None]
    if not shown:
        return None
    pairs = [(float(p.metrics[utility]), float(p.metrics[FORGET])) for p in shown]  # type: ignore[arg-type]
    front = pareto_front(pairs)
    cost_name = "train_seconds" if any(p.train_seconds for p in shown) else "trainable_params"
    costs = [float(getattr(p, cost_name) or 0.0) for p in shown]
    biggest = max(costs) or 1.0
    sizes = [30 + 300 * c / biggest for c in costs]
    fig, ax = plt.subplots(figsize=(7, 5))
    colours = ["tab:red" if f else "tab:blue" for f in front]
    ax.scatter([u for u, _ in pairs], [f for _, f in pairs], s=sizes, c=colours, alpha=0.6, edgecolors="black")
    for p, (u, f) in zip(shown, pairs, strict=True):
        ax.annotate(
            ",".join(p.values.get(a, "") for a in axes), (u, f), fontsize=7, xytext=(4, 4), textcoords="offset points"
        )
    ax.set_xlabel(f"{utility} (utility, higher is better)")
    ax.set_ylabel(f"{FORGET} (forgetting, higher is better)")
    ax.set_title(f"sweep: red = Pareto front; marker size = {cost_name}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_effect(points: Sequence[PointResult], axis: str, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [FORGET, utility_metric(points)]
    effects = {m: axis_effect(points, axis, m) for m in metrics}
    if not any(effects.values()):
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for offset, metric in zip((-0.05, 0.05), metrics, strict=True):
        rows = effects[metric]
        xs = [i + offset for i in range(len(rows))]
        ax.errorbar(xs, [r[1] for r in rows], yerr=[r[2] for r in rows], fmt="o-", capsize=4, label=metric)
    labels = [r[0] for r in effects[FORGET]] or [r[0] for r in effects[metrics[1]]]
    ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
    seeds = max((r[3] for rows in effects.values() for r in rows), default=0)
    ax.set_xlabel(axis)
    ax.set_ylabel("mean over the other axes")
    ax.set_title(f"effect of {axis}: 95% CI over {seeds} seed(s)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(rows: Sequence[dict[str, Any]], out_dir: str | Path, axes: Sequence[str]) -> dict[str, str]:
    """Write the table (Markdown, CSV), the Pareto plot and the effect plots; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    points = collect(rows)
    header, body = table(points, axes)
    files: dict[str, str] = {}
    with (out / "sweep.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(body)
    files["table_csv"] = str(out / "sweep.csv")
    lines = ["# Sweep", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in body]
    lines += ["", "## Effect of each axis (mean over the other axes; 95% CI over seeds)", ""]
    for axis in axes:
        for metric in (FORGET, utility_metric(points)):
            cells = ", ".join(effect_cell(*effect) for effect in axis_effect(points, axis, metric))
            lines.append(f"- {axis}, {metric}: {cells or '-'}")
    pareto = plot_pareto(points, out / "pareto.png", axes)
    if pareto:
        files["pareto_png"] = str(pareto)
        lines += ["", "![Pareto front](pareto.png)"]
    for axis in axes:
        name = "".join(c if c.isalnum() else "_" for c in axis)
        effect = plot_effect(points, axis, out / f"effect_{name}.png")
        if effect:
            files[f"effect_{name}_png"] = str(effect)
            lines.append(f"![effect of {axis}](effect_{name}.png)")
    (out / "sweep.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    files["report_md"] = str(out / "sweep.md")
    return files
