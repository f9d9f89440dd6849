"""The logit-lens attack: is the forgotten answer still readable in a hidden layer?

An unlearned model may only suppress a fact in its last layers while the earlier ones still carry
it (Patil et al., 2023, arXiv 2309.17410: 38 % of "deleted" facts recovered). For every forget
question the model reads the question and its answer (teacher-forced) up to the key span; at the
position whose next token is the key span's first token, the hidden state after each decoder layer
goes through the model's final norm and output head. A fact counts as recovered when that token is
among the top ``k`` (``evaluate.logit_lens.top_k``) at any layer. Where the key span is not found in
the answer, the answer's own first token is the target (``detail.key_not_in_answer`` counts them).

transformers 5 returns ``num_layers + 1`` hidden states: the embeddings, then the output of each
decoder layer, except that the last entry is replaced by ``last_hidden_state``, which is already
normalised (``utils/output_capturing.py``, ``tie_last_hidden_states``). So the final norm is applied
to every layer but the last, and the lens at the last layer is the model's own next-token logits
(``tests/test_attacks.py`` checks it). The embeddings (entry 0) are not a layer and are left out.

Rows per model (base, each unlearned one, retain model), probe set ``forget``:
``attack.logit_lens.recovered`` (any layer; ``detail.per_layer``) and one
``attack.logit_lens.layer_<i>`` per decoder layer ``1..L`` (the last is the model's own top-k).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lune.core.tokens import answer_text, question_ids
from lune.data.errors import LuneError
from lune.evaluation.attacks.registry import AttackContext, attack
from lune.evaluation.metrics.registry import Row
from lune.evaluation.probes import EvalProbe


def final_norm(model: Any) -> Any:
    """The norm applied before the output head (Llama-style ``model.norm``; GPT-2's ``ln_f``)."""
    decoder = model.get_decoder()
    for name in ("norm", "final_layernorm", "ln_f"):
        module = getattr(decoder, name, None)
        if module is not None:
            return module
    raise LuneError(f"logit lens: no final norm found on {type(decoder).__name__} (looked for norm, ln_f)")


def lens_logits(model: Any, input_ids: Any, attention_mask: Any, positions: Any) -> Any:
    """``[layers, batch, vocab]`` float32 logits of the lens: final norm and output head applied to
    each decoder layer's hidden state at ``positions`` (one per row); the last layer's entry is
    already normalised by transformers (module docstring)."""
    import torch

    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        layers = out.hidden_states[1:]
        norm, head = final_norm(model), model.get_output_embeddings()
        return torch.stack(
            [
                head(state[rows, positions] if i == len(layers) - 1 else norm(state[rows, positions]))
                for i, state in enumerate(layers)
            ]
        ).float()


def key_target(tokenizer: Any, probe: EvalProbe) -> tuple[list[int], int, bool]:
    """``(ids, index, found)``: the token ids of prompt + answer (``core/tokens.py``: one BOS, the
    answer as it follows its prompt, tokenised apart), the index of the token that starts the key
    span in the answer, and whether the key span was found (else the answer's first token)."""
    head = question_ids(tokenizer, probe.question)
    completion = answer_text(tokenizer, probe.answer)
    tail = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    start = completion.lower().find(probe.key_span.strip().lower()) if probe.key_span.strip() else -1
    index = 0
    if start >= 0:
        index = next((i for i, (_, end) in enumerate(tail["offset_mapping"]) if end > start), 0)
    return head + list(tail["input_ids"]), len(head) + index, start >= 0


def in_top_k(model: Any, tokenizer: Any, probes: Sequence[EvalProbe], top_k: int, batch_size: int) -> tuple[Any, int]:
    """``([layers, probes] bool, missing)``: whether each probe's key token is in the lens's top-k
    at each layer, and how many probes had no key span in their answer."""
    import torch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    hits, missing = [], 0
    for start in range(0, len(probes), batch_size):
        targets = [key_target(tokenizer, p) for p in probes[start : start + batch_size]]
        missing += sum(not found for _, _, found in targets)
        width = max(len(ids) for ids, _, _ in targets)
        input_ids = torch.full((len(targets), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for i, (ids, _, _) in enumerate(targets):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        index = torch.tensor([i for _, i, _ in targets])
        token = input_ids[torch.arange(len(targets)), index].to(device)
        logits = lens_logits(model, input_ids.to(device), mask.to(device), (index - 1).to(device))
        hits.append((logits.topk(top_k, dim=-1).indices == token[None, :, None]).any(-1).cpu())
    return torch.cat(hits, dim=1), missing


@attack("logit_lens")
def logit_lens(ctx: AttackContext) -> list[Row]:
    """The lens's recovery rate of the forget facts' key tokens, any layer and per layer."""
    probes = ctx.suite.probes.get("forget", [])
    if not probes:
        return []
    top_k = ctx.config.logit_lens.top_k
    rows: list[Row] = []
    for spec, model, tokenizer in ctx.loaded_models():
        hits, missing = in_top_k(model, tokenizer, probes, top_k, ctx.config.batch_size)
        per_layer = hits.float().mean(dim=1).tolist()
        width = len(str(len(per_layer)))
        detail = {"top_k": top_k, "per_layer": per_layer, "key_not_in_answer": missing}
        rows.append(ctx.result(spec, "forget", "recovered", hits.any(dim=0).float().mean().item(), len(probes), detail))
        rows += [
            ctx.result(spec, "forget", f"layer_{layer:0{width}d}", rate, len(probes), {"top_k": top_k})
            for layer, rate in enumerate(per_layer, start=1)
        ]
    return rows
