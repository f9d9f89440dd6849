"""GRUN's gate: does it open on the forget facts' prompts, and on questions about them it never saw?

GRUN (``unlearn/methods/grun.py``) edits a hidden state only as far as its soft gate
``g(h) = sigmoid(gate(h))`` opens; training pushes it to 1 on forget prompts and 0 on retain ones.
Per probe set, ``gate_mean`` is the mean over probes of ``g`` at the prompt's last token (averaged
over the edited layers; ``evaluation.inference.gate_values``). ``gate_auc`` (on each forget-type
set) is the ROC AUC of ``g`` separating that set's prompts (positives) from the retain set's
(negatives): 1.0 = the gate opens more on every forget prompt than on every retain prompt, 0.5 =
no separation. On ``paraphrase`` and ``attack`` (held out of training) it says whether the gate
generalises beyond the questions it was trained on. Only models with interventions have rows.

    >>> gate_auc([0.9, 0.6], [0.2, 0.7]).value   # 3 of the 4 (forget, retain) pairs ordered
    0.75
"""

from __future__ import annotations

from collections.abc import Sequence

from lune.evaluation.metrics.mia import mia_auc
from lune.evaluation.metrics.registry import MetricContext, MetricRows, metric
from lune.evaluation.metrics.result import MetricResult
from lune.evaluation.probes import FORGET_SETS

REFERENCE_SET = "retain"


def gate_auc(forget_gates: Sequence[float], retain_gates: Sequence[float]) -> MetricResult:
    """``P(g_forget > g_retain)`` over all pairs (ties count one half): the ROC AUC with forget prompts
    as positives. None when either side is empty."""
    return mia_auc(forget_gates, retain_gates)


@metric("gate")
def gate_rows(ctx: MetricContext) -> MetricRows:
    """``gate_mean`` on every probe set and ``gate_auc`` (against ``retain``) on every forget-type set,
    for each model whose gates were read (GRUN). No per-probe rows: a probe's ``eval_items`` row is
    its answer's (USR / recall)."""
    rows = MetricRows()
    for out in ctx.outputs:
        if not out.gates:
            continue
        for name, _ in ctx.probe_sets():
            values = out.gates.get(name, [])
            rows.results.append(ctx.result(out, name, "gate_mean", MetricResult.mean_of(values)))
            reference = out.gates.get(REFERENCE_SET, [])
            if name in FORGET_SETS and values and reference:
                result = gate_auc(values, reference)
                rows.results.append(ctx.result(out, name, "gate_auc", result, detail={"against": REFERENCE_SET}))
    return rows
