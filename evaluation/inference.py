"""Steps 2 and 3 of the evaluate stage: every model's greedy answers to every probe, and its
log-likelihoods (MIA scores, TOFU answer likelihoods), as :class:`~lune.evaluation.outputs.ModelOutputs`.

Generation goes through transformers (``core/greedy.py``, each adapter attached with PEFT) or vLLM
(``core/vllm_engine.py``: one engine per base model, each adapter a LoRA request, no merge; GRUN's
interventions always through transformers, :func:`generation_backend`); log-likelihoods always
through transformers (min-k%++ needs the whole next-token distribution).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from lune.core.models import RETAIN_LABEL, ModelSpec, iter_loaded
from lune.core.prompt_format import render_prompt
from lune.core.tokens import answer_text, encode_pair
from lune.core.vllm_engine import VLLMEngine, load_engine
from lune.evaluation.config import EvaluateConfig
from lune.evaluation.metrics.mia import mia_scores
from lune.evaluation.outputs import ModelOutputs, TruthLikelihoods
from lune.evaluation.probes import PROBE_SETS, ProbeSuite

GenerateFn = Callable[[Sequence[str]], list[str]]


# -- step 2: generation ------------------------------------------------------------------------


T = TypeVar("T")


def _questions(suite: ProbeSuite) -> list[str]:
    """Every probe's question, set after set in ``PROBE_SETS`` order (see ``_split_by_set``)."""
    return [probe.question for name in PROBE_SETS for probe in suite.probes.get(name, [])]


def _split_by_set(suite: ProbeSuite, answers: Sequence[T]) -> dict[str, list[T]]:
    out, pos = {}, 0
    for name in PROBE_SETS:
        count = len(suite.probes.get(name, []))
        out[name] = list(answers[pos : pos + count])
        pos += count
    return out


# Room past the longest reference answer: a chat template's end-of-turn tokens, a trailing full stop.
FIT_MARGIN_TOKENS = 8


def generation_cap(tokenizer: Any, suite: ProbeSuite, config: EvaluateConfig) -> int:
    """New tokens a greedy answer may take: ``config.max_new_tokens``, or with ``fit_max_new_tokens``
    the longest reference answer of the suite's probes in this tokenizer's tokens (as it follows the
    prompt, ``core/tokens.py``) plus FIT_MARGIN_TOKENS, never above ``max_new_tokens``: a model that
    reproduces any answer exactly is never cut off (ROUGE-L recall 1), and no answer runs longer."""
    if not config.fit_max_new_tokens:
        return config.max_new_tokens
    answers = {probe.answer for probe in suite.all_probes() if probe.answer}
    if not answers:
        return config.max_new_tokens
    longest = max(len(tokenizer(answer_text(tokenizer, a), add_special_tokens=False)["input_ids"]) for a in answers)
    return min(config.max_new_tokens, longest + FIT_MARGIN_TOKENS)


def transformers_generate(
    model: Any, tokenizer: Any, config: EvaluateConfig, max_new_tokens: int | None = None
) -> GenerateFn:
    """Greedy answers of an in-memory model (``core/greedy.py``), at most ``max_new_tokens`` new
    tokens each (default ``config.max_new_tokens``; :func:`generation_cap` fits it to a suite)."""
    from lune.core.greedy import greedy_answers

    cap = config.max_new_tokens if max_new_tokens is None else max_new_tokens
    return lambda questions: greedy_answers(
        model, tokenizer, questions, max_new_tokens=cap, batch_size=config.batch_size
    )


def generate_with(suite: ProbeSuite, generate: GenerateFn) -> tuple[dict[str, list[str]], float]:
    """Every probe of the suite answered by ``generate`` in one call (one long batched run)."""
    questions = _questions(suite)
    start = time.perf_counter()
    answers = generate(questions) if questions else []
    if len(answers) != len(questions):
        raise RuntimeError(f"the generation backend returned {len(answers)} answers for {len(questions)} questions")
    return _split_by_set(suite, answers), time.perf_counter() - start


def _engine_answers(engine: VLLMEngine, adapter: str | None, max_new_tokens: int) -> GenerateFn:
    """Greedy answers of the vLLM engine (with the LoRA ``adapter``, or the base model for None);
    the engine tokenises each prompt with ``core/tokens.py`` (one BOS)."""

    def answer(questions: Sequence[str]) -> list[str]:
        tokenizer = engine.tokenizer
        prompts = [render_prompt(tokenizer, question) for question in questions]
        return engine.greedy(prompts, max_tokens=max_new_tokens, adapter=adapter)

    return answer


def generate_all_vllm(suite: ProbeSuite, specs: Sequence[ModelSpec], config: EvaluateConfig) -> dict[str, ModelOutputs]:
    """Greedy answers of every spec through vLLM: one engine per base model, each PEFT adapter sent
    as a LoRA request (no merge)."""
    outputs: dict[str, ModelOutputs] = {}
    by_model: dict[str, list[ModelSpec]] = {}
    for spec in specs:
        by_model.setdefault(spec.model_path, []).append(spec)
    for model_path, group in by_model.items():
        adapters = [s.adapter_path for s in group if s.adapter_path]
        engine = load_engine(model_path, enable_lora=bool(adapters), adapters=adapters, max_loras=max(1, len(adapters)))
        try:
            cap = generation_cap(engine.tokenizer, suite, config)
            for spec in group:
                generations, seconds = generate_with(suite, _engine_answers(engine, spec.adapter_path, cap))
                outputs[spec.label] = ModelOutputs(spec, generations, seconds={"generate": seconds})
        finally:
            engine.close()  # free the engine before the next one (or the transformers models) loads
    return outputs


def gate_values(model: Any, tokenizer: Any, suite: ProbeSuite, config: EvaluateConfig) -> dict[str, list[float]]:
    """GRUN's gate on every probe: ``g(h)`` at the prompt's last token, averaged over the edited
    layers, from one forward of the prompt as its greedy answer starts (``core.tokens.question_ids``),
    by probe set. Empty for a model without interventions attached."""
    import torch

    from lune.core.greedy import left_padded
    from lune.core.interventions import attached
    from lune.core.tokens import question_ids

    handle = attached(model)
    if handle is None:
        return {}
    rows = [question_ids(tokenizer, q) for q in _questions(suite)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    values: list[float] = []
    for start in range(0, len(rows), config.batch_size):
        input_ids, mask = left_padded(rows[start : start + config.batch_size], pad_id)
        with torch.no_grad():
            model(input_ids=input_ids.to(device), attention_mask=mask.to(device))
        values.extend(torch.stack(handle.gates).mean(0).tolist())  # [layers, B] -> [B]
    return _split_by_set(suite, values)


# -- step 3: likelihoods -----------------------------------------------------------------------


def score_likelihoods(
    model: Any,
    tokenizer: Any,
    suite: ProbeSuite,
    config: EvaluateConfig,
    *,
    groups: Sequence[str] | None = None,
    mia: bool | None = None,
) -> tuple[dict, dict, float]:
    """MIA scores of the suite's member / non-member texts and TOFU answer likelihoods of its truth
    items (``groups``: which truth groups, default all; with each answer's teacher-forced greedy
    matches, from the same pass) under one model."""
    from lune.core.likelihood import pair_stats

    start = time.perf_counter()
    scores: dict[str, list[dict[str, float]]] = {}
    if (config.mia if mia is None else mia) and suite.mia_members and suite.mia_nonmembers:
        for side, texts in (("member", suite.mia_members), ("nonmember", suite.mia_nonmembers)):
            # a fact's answer closes with EOS as taught (score_eos); a passage is scored as it stands
            eos = [config.score_eos and bool(t.question) for t in texts]
            pairs = [encode_pair(tokenizer, t.question, t.text, eos=e) for t, e in zip(texts, eos)]
            stats = pair_stats(model, tokenizer, pairs, batch_size=max(1, config.batch_size // 2))
            scores[side] = [
                mia_scores(s, t.text, config.min_k, config.min_k_rounding, eos_scored=e)
                for s, t, e in zip(stats, texts, eos)
            ]
    truth: dict[str, list[TruthLikelihoods]] = {}
    if config.tofu:
        for group, items in suite.truth.items():
            if groups is not None and group not in groups:
                continue
            pairs, shape = [], []
            for item in items:
                answers = [item.answer, *item.paraphrased, *item.perturbed]
                pairs += [encode_pair(tokenizer, item.question, a, eos=config.score_eos) for a in answers]
                shape.append((len(item.paraphrased), len(item.perturbed)))
            stats = pair_stats(model, tokenizer, pairs, batch_size=config.batch_size, distribution=False)
            values = [s.mean_logprob for s in stats]
            pos, rows = 0, []
            for n_para, n_pert in shape:
                rows.append(
                    TruthLikelihoods(
                        values[pos],
                        values[pos + 1 : pos + 1 + n_para],
                        values[pos + 1 + n_para : pos + 1 + n_para + n_pert],
                        # exact memorization / extraction strength: the answer's own tokens (EOS left out,
                        # as open-unlearning's tokenwise_logprobs leaves it out)
                        (stats[pos].without_last() if config.score_eos else stats[pos]).is_argmax.tolist(),
                    )
                )
                pos += 1 + n_para + n_pert
            truth[group] = rows
    return scores, truth, time.perf_counter() - start


def generation_backend(spec: ModelSpec, config: EvaluateConfig) -> str:
    """Where ``spec``'s answers are generated: ``config.backend``, except interventions (GRUN),
    which only transformers runs."""
    return "transformers" if spec.needs_transformers else config.backend


def evaluate_specs(
    suite: ProbeSuite, specs: Sequence[ModelSpec], config: EvaluateConfig, retain_model: str | None = None
) -> tuple[list[ModelOutputs], ModelOutputs | None]:
    """Steps 2 and 3 for every spec (and the retain model's forget truth ratios and MIA scores: the
    references of forget quality and privacy leakage)."""
    outputs: dict[str, ModelOutputs] = {}
    if config.backend == "vllm":
        from lune.core.threads import kept_torch_threads

        with kept_torch_threads():  # vLLM's CPU engine changes the process's thread count
            # interventions (GRUN) are hooks on a transformers model: no LoRA request carries them
            outputs = generate_all_vllm(suite, [s for s in specs if not s.needs_transformers], config)
    need_likelihoods = config.mia or config.tofu
    in_transformers = [s for s in specs if generation_backend(s, config) == "transformers"]
    if in_transformers or need_likelihoods:
        for spec, model, tokenizer in iter_loaded(specs if need_likelihoods else in_transformers):
            out = outputs.setdefault(spec.label, ModelOutputs(spec))
            if generation_backend(spec, config) == "transformers":
                cap = generation_cap(tokenizer, suite, config)
                out.generations, out.seconds["generate"] = generate_with(
                    suite, transformers_generate(model, tokenizer, config, cap)
                )
                out.gates = gate_values(model, tokenizer, suite, config)
            if need_likelihoods:
                out.mia, out.truth, out.seconds["likelihood"] = score_likelihoods(model, tokenizer, suite, config)
    retain = None
    wants_truth = config.tofu and bool(suite.truth.get("forget"))
    wants_mia = config.mia and bool(suite.mia_members and suite.mia_nonmembers)
    if retain_model and (wants_truth or wants_mia):
        for spec, model, tokenizer in iter_loaded([ModelSpec(RETAIN_LABEL, str(retain_model))]):
            mia, truth, seconds = score_likelihoods(model, tokenizer, suite, config, groups=["forget"])
            retain = ModelOutputs(spec, mia=mia, truth=truth, seconds={"likelihood": seconds})
    return [outputs[s.label] for s in specs], retain
