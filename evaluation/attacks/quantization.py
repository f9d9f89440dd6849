"""The quantization attack: does the forgetting survive 8- and 4-bit weights?

An unlearning update that is small next to a weight's quantization step is rounded away, and a
quantized unlearned model answers like the quantized model before unlearning (Zhang et al., 2024,
arXiv 2410.16454: 21 % of the forgotten knowledge at full precision, 83 % after 4-bit). For every
model (before unlearning, each unlearned one, the retain model), on a merged copy (adapter merged
in with PEFT's ``merge_and_unload``), every linear weight but the output head is fake-quantized with
round-to-nearest (``rtn.py``) for each variant of ``evaluate.quantization`` (bits x group size x
scheme), and the model answers the forget and retained probes again. Rows, per model and variant
``rtn<bits>_g<group>[_zp]`` (``_zp``: with a zero point), plus ``full`` (the merged copy unquantized,
decoded the same way: the reference):

- ``attack.quantization.<variant>.forget_recall`` (probe set ``forget``): share of the forget
  questions answered with the key;
- ``attack.quantization.<variant>.gur`` (probe set ``all``): retained recall over the base model's
  at full precision, per retained set and averaged (``metrics.gur.gur``);
- ``attack.quantization.<variant>.flip_rate`` (probe set ``weights``, unlearned models only): the
  share of quantized weights that differ from the quantized model before unlearning (0: the
  unlearning update vanished entirely at that precision); ``detail.changed_full_precision`` is the
  share that differ before quantizing.

The output head stays in full precision, as bitsandbytes (``llm_int8_skip_modules``) and most 4-bit
recipes keep it; in tied models (the tiny default) it is the embedding matrix. bitsandbytes and
torchao are not installed here, so this RTN path is the only one (it runs on any device).
"""

from __future__ import annotations

import copy
from typing import Any

from lune.core.models import BASE_LABEL, RETAIN_LABEL
from lune.evaluation.attacks.registry import AttackContext, attack
from lune.evaluation.attacks.rtn import fake_quantize
from lune.evaluation.metrics.gur import gur
from lune.evaluation.metrics.registry import Row
from lune.evaluation.probes import RETAIN_SETS

FULL = "full"


def merged_copy(model: Any) -> Any:
    """A plain model with the weights ``model`` computes with: a PEFT model's adapters merged into a
    deep copy (the original keeps its adapter, unmerged), or a deep copy of a plain model."""
    from peft import PeftModel

    twin = copy.deepcopy(model)
    return twin.merge_and_unload() if isinstance(twin, PeftModel) else twin


def linear_weights(model: Any) -> dict[str, Any]:
    """Every ``nn.Linear`` weight of ``model`` by module name, the output head left out."""
    import torch

    head = model.get_output_embeddings()
    return {
        name: module.weight
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head
    }


def variant_name(bits: int, group_size: int, scheme: str) -> str:
    """``rtn4_g64``; ``rtn4_g64_zp`` with a zero point (scheme ``asymmetric``)."""
    return f"rtn{bits}_g{group_size}" + ("_zp" if scheme == "asymmetric" else "")


@attack("quantization")
def quantization(ctx: AttackContext) -> list[Row]:
    """Forget recall, GUR and flip rate of every model after RTN quantization (module docstring)."""
    import torch

    settings = ctx.config.quantization
    variants = [(b, g, s) for b in settings.bits for g in settings.group_sizes for s in settings.schemes]
    retained = [name for name in RETAIN_SETS if ctx.suite.probes.get(name)]
    forget = ["forget"] if ctx.suite.probes.get("forget") else []
    rows: list[Row] = []
    before: dict[str, Any] = {}  # the base model's full-precision linear weights (flip rate)
    base_recall: dict[str, float | None] = {}
    for spec, model, tokenizer in ctx.loaded_models():
        merged = merged_copy(model)
        weights = linear_weights(merged)
        original = {name: w.detach().clone() for name, w in weights.items()}
        if spec.label == BASE_LABEL:
            before = original
        for variant in [None, *variants]:
            label = FULL if variant is None else variant_name(*variant)
            with torch.no_grad():
                for name, weight in weights.items():
                    value = original[name]
                    if variant is not None:
                        value = fake_quantize(value, variant[0], variant[1], zero_point=variant[2] == "asymmetric")
                    weight.copy_(value)
            answers = ctx.answers(merged, tokenizer, forget + retained)
            if forget:
                rows.append(ctx.result(spec, "forget", f"{label}.forget_recall", ctx.recall(answers, "forget")))
            recall_now = {name: ctx.recall(answers, name).value for name in retained}
            if spec.label == BASE_LABEL and variant is None:
                base_recall = recall_now
            if retained:
                rows.append(ctx.result(spec, "all", f"{label}.gur", gur(recall_now, base_recall)))
            if variant is not None and spec.label not in (BASE_LABEL, RETAIN_LABEL) and before:
                rows.append(ctx.result(spec, "weights", f"{label}.flip_rate", *flip_rate(original, before, *variant)))
        del merged, weights, original
    return rows


def flip_rate(
    after: dict[str, Any], before: dict[str, Any], bits: int, group_size: int, scheme: str
) -> tuple[float, int, dict[str, Any]]:
    """``(rate, n, detail)``: the share of the ``n`` weights (of the linear layers both models have)
    whose quantized values differ between ``after`` and ``before``; ``detail.changed_full_precision``:
    the share that differ before quantizing."""
    zero_point = scheme == "asymmetric"
    flipped = changed = total = 0
    for name, weight in after.items():
        reference = before.get(name)
        if reference is None or reference.shape != weight.shape:
            continue
        q_after = fake_quantize(weight, bits, group_size, zero_point=zero_point)
        q_before = fake_quantize(reference, bits, group_size, zero_point=zero_point)
        flipped += int((q_after != q_before).sum())
        changed += int((weight != reference).sum())
        total += weight.numel()
    if not total:
        return float("nan"), 0, {}
    return flipped / total, total, {"changed_full_precision": changed / total}
