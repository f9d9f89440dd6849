"""Steps 2 and 3 of the evaluate stage: every model's greedy answers to every probe, and its
log-likelihoods (MIA scores, TOFU answer likelihoods), as :class:`~lune.evaluation.outputs.ModelOutputs`.

Generation goes through transformers (``core/greedy.py``, each adapter attached with PEFT) or vLLM
(``core/vllm_engine.py``: one engine per base model, each adapter a LoRA request, no merge);
log-likelihoods always through transformers (min-k%++ needs the whole next-token distribution).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from lune.core.models import RETAIN_LABEL, ModelSpec, iter_loaded
from lune.core.prompt_format import format_completion, render_prompt
from lune.core.vllm_engine import VLLMEngine, load_engine
from lune.evaluation.config import EvaluateConfig
from lune.evaluation.metrics.mia import mia_scores
from lune.evaluation.outputs import ModelOutputs, TruthLikelihoods
from lune.evaluation.probes import PROBE_SETS, ProbeSuite

GenerateFn = Callable[[Sequence[str]], list[str]]


# -- step 2: generation ------------------------------------------------------------------------


def _questions(suite: ProbeSuite) -> list[str]:
    """Every probe's question, set after set in ``PROBE_SETS`` order (see ``_split_by_set``)."""
    return [probe.question for name in PROBE_SETS for probe in suite.probes.get(name, [])]


def _split_by_set(suite: ProbeSuite, answers: Sequence[str]) -> dict[str, list[str]]:
    out, pos = {}, 0
    for name in PROBE_SETS:
        count = len(suite.probes.get(name, []))
        out[name] = list(answers[pos : pos + count])
        pos += count
    return out


def transformers_generate(model: Any, tokenizer: Any, config: EvaluateConfig) -> GenerateFn:
    """Greedy answers of an in-memory model (``core/greedy.py``)."""
    from lune.core.greedy import greedy_answers

    return lambda questions: greedy_answers(
        model, tokenizer, questions, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size
    )


def generate_with(suite: ProbeSuite, generate: GenerateFn) -> tuple[dict[str, list[str]], float]:
    """Every probe of the suite answered by ``generate`` in one call (one long batched run)."""
    questions = _questions(suite)
    start = time.perf_counter()
    answers = generate(questions) if questions else []
    if len(answers) != len(questions):
        raise RuntimeError(f"the generation backend returned {len(answers)} answers for {len(questions)} questions")
    return _split_by_set(suite, answers), time.perf_counter() - start


def _engine_answers(engine: VLLMEngine, adapter: str | None, config: EvaluateConfig) -> GenerateFn:
    """Greedy answers of the vLLM engine (with the LoRA ``adapter``, or the base model for None)."""

    def answer(questions: Sequence[str]) -> list[str]:
        tokenizer = engine.tokenizer
        prompts = [render_prompt(tokenizer, question) for question in questions]
        return engine.greedy(prompts, max_tokens=config.max_new_tokens, adapter=adapter)

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
            for spec in group:
                generations, seconds = generate_with(suite, _engine_answers(engine, spec.adapter_path, config))
                outputs[spec.label] = ModelOutputs(spec, generations, seconds={"generate": seconds})
        finally:
            engine.close()  # free the engine before the next one (or the transformers models) loads
    return outputs


# -- step 3: likelihoods -----------------------------------------------------------------------


def _completion(tokenizer: Any, answer: str) -> str:
    # After a chat template's generation prompt the answer starts bare; after "Answer:" with a space.
    return answer.strip() if getattr(tokenizer, "chat_template", None) else format_completion(answer)


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
    from lune.core.likelihood import completion_stats

    start = time.perf_counter()
    scores: dict[str, list[dict[str, float]]] = {}
    if (config.mia if mia is None else mia) and suite.mia_members and suite.mia_nonmembers:
        for side, texts in (("member", suite.mia_members), ("nonmember", suite.mia_nonmembers)):
            prompts = [render_prompt(tokenizer, t.question) if t.question else "" for t in texts]
            completions = [_completion(tokenizer, t.text) if t.question else t.text for t in texts]
            stats = completion_stats(model, tokenizer, prompts, completions, batch_size=max(1, config.batch_size // 2))
            scores[side] = [mia_scores(s, t.text, config.min_k) for s, t in zip(stats, texts)]
    truth: dict[str, list[TruthLikelihoods]] = {}
    if config.tofu:
        for group, items in suite.truth.items():
            if groups is not None and group not in groups:
                continue
            prompts, completions, shape = [], [], []
            for item in items:
                prompt = render_prompt(tokenizer, item.question)
                answers = [item.answer, *item.paraphrased, *item.perturbed]
                prompts += [prompt] * len(answers)
                completions += [_completion(tokenizer, a) for a in answers]
                shape.append((len(item.paraphrased), len(item.perturbed)))
            stats = completion_stats(
                model, tokenizer, prompts, completions, batch_size=config.batch_size, distribution=False
            )
            values = [s.mean_logprob for s in stats]
            pos, rows = 0, []
            for n_para, n_pert in shape:
                rows.append(
                    TruthLikelihoods(
                        values[pos],
                        values[pos + 1 : pos + 1 + n_para],
                        values[pos + 1 + n_para : pos + 1 + n_para + n_pert],
                        stats[pos].is_argmax.tolist(),
                    )
                )
                pos += 1 + n_para + n_pert
            truth[group] = rows
    return scores, truth, time.perf_counter() - start


def evaluate_specs(
    suite: ProbeSuite, specs: Sequence[ModelSpec], config: EvaluateConfig, retain_model: str | None = None
) -> tuple[list[ModelOutputs], ModelOutputs | None]:
    """Steps 2 and 3 for every spec (and the retain model's forget truth ratios and MIA scores: the
    references of forget quality and privacy leakage)."""
    outputs: dict[str, ModelOutputs] = {}
    if config.backend == "vllm":
        import torch

        threads = torch.get_num_threads()
        outputs = generate_all_vllm(suite, specs, config)
        torch.set_num_threads(threads)  # vLLM's CPU engine drops the process to one thread
    need_likelihoods = config.mia or config.tofu
    if config.backend == "transformers" or need_likelihoods:
        for spec, model, tokenizer in iter_loaded(specs):
            out = outputs.setdefault(spec.label, ModelOutputs(spec))
            if config.backend == "transformers":
                out.generations, out.seconds["generate"] = generate_with(
                    suite, transformers_generate(model, tokenizer, config)
                )
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
