"""The evaluate stage: ask the base model and every unlearned model the same probes, score them,
store the results and write the report.

    >>> outcome = evaluate_models(store, "runs/x/taught", {"lune": "runs/x/adapter"},
    ...                           retain_model="runs/x/retain", set_id="default", out_dir="runs/x/eval")
    >>> outcome.headline["lune"]["usr"]

Steps (each a function, each a Prefect task in ``flows/evaluate.py``):

1. :func:`evaluation.probes.load_probe_suite`: the probe sets, MIA texts and TOFU items;
2. :func:`generate_all`: greedy answers of every model to every probe (transformers, or vLLM with
   each adapter as a LoRA request);
3. :func:`score_all`: log-likelihoods (MIA scores, TOFU truth ratios) under every model, and under
   the retain model for forget quality;
4. :func:`compute_results`: the metrics (``evaluation/metrics.py``, ``mia.py``, ``tofu_metrics.py``)
   as ``eval_results`` rows and one ``eval_items`` row per probe and model;
5. :func:`store_results`, then :func:`evaluation.report.render_run`, which reads the run back from
   the store, so the report shows exactly what is stored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lune.data import evaluation_queries as q
from lune.data.errors import LuneError
from lune.data.ids import content_id
from lune.core.prompt_format import format_completion, render_prompt
from lune.data.store import Store
from lune.evaluation import metrics as m
from lune.evaluation import mia as mia_lib
from lune.evaluation import tofu_metrics as tofu
from lune.evaluation.config import EvaluateConfig
from lune.core.models import BASE_LABEL, RETAIN_LABEL, ModelSpec, iter_loaded, model_specs
from lune.evaluation.probes import FORGET_SETS, PROBE_SETS, ProbeSuite, load_probe_suite

Row = dict[str, Any]
GenerateFn = Callable[[Sequence[str]], list[str]]


@dataclass
class TruthLikelihoods:
    """Length-normalised log-likelihoods of one TOFU item's answers under one model."""

    answer: float
    paraphrased: list[float]
    perturbed: list[float]

    @property
    def paraphrased_mean(self) -> float:
        return sum(self.paraphrased) / len(self.paraphrased) if self.paraphrased else self.answer


@dataclass
class ModelOutputs:
    """What one model produced on a probe suite (aligned with the suite's lists)."""

    spec: ModelSpec
    generations: dict[str, list[str]] = field(default_factory=dict)
    mia: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # member / nonmember -> scores per text
    truth: dict[str, list[TruthLikelihoods]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class EvaluationOutcome:
    """What ``evaluate_models`` returns: the run, where the report is, and the headline numbers
    per model label (``usr``, ``apr``, ``gur``, ``mia_auc_loss``, ...)."""

    run_id: str
    out_dir: Path
    report_files: dict[str, str]
    headline: dict[str, dict[str, float | None]]
    counts: dict[str, int]
    notes: list[str]


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
    from lune.core.greedy import greedy_answers

    return lambda questions: greedy_answers(model, tokenizer, questions, max_new_tokens=config.max_new_tokens,
                                            batch_size=config.batch_size)


def generate_with(suite: ProbeSuite, generate: GenerateFn) -> tuple[dict[str, list[str]], float]:
    """Every probe of the suite answered by ``generate`` in one call (one long batched run)."""
    questions = _questions(suite)
    start = time.perf_counter()
    answers = generate(questions) if questions else []
    if len(answers) != len(questions):
        raise RuntimeError(f"the generation backend returned {len(answers)} answers for {len(questions)} questions")
    return _split_by_set(suite, answers), time.perf_counter() - start


def generate_all_vllm(suite: ProbeSuite, specs: Sequence[ModelSpec], config: EvaluateConfig) -> dict[str, ModelOutputs]:
    """Greedy answers of every spec through the vLLM backend (``generators.backends.VLLMGenerator``):
    one engine per base model, each PEFT adapter sent as a LoRA request (no merge)."""
    import gc

    from lune.generators.backends import make_backend
    from lune.generators.backends.vllm_backend import adapter_rank

    outputs: dict[str, ModelOutputs] = {}
    by_model: dict[str, list[ModelSpec]] = {}
    for spec in specs:
        by_model.setdefault(spec.model_path, []).append(spec)
    for model_path, group in by_model.items():
        adapters = [s.adapter_path for s in group if s.adapter_path]
        ranks = [adapter_rank(a) or 16 for a in adapters]
        generator = make_backend("vllm", model=model_path, enable_lora=bool(adapters),
                                 max_lora_rank=max(ranks) if ranks else None, max_loras=max(1, len(adapters)))
        generator.load()
        tokenizer = generator.llm.get_tokenizer()
        try:
            for spec in group:
                def answer(questions: Sequence[str], adapter: str | None = spec.adapter_path, engine: Any = generator,
                           tok: Any = tokenizer) -> list[str]:
                    prompts = [render_prompt(tok, question) for question in questions]
                    return engine.greedy(prompts, max_tokens=config.max_new_tokens, adapter=adapter or False)

                generations, seconds = generate_with(suite, answer)
                outputs[spec.label] = ModelOutputs(spec, generations, seconds={"generate": seconds})
        finally:
            generator.llm = None  # free the engine before the next one (or the transformers models) loads
            gc.collect()
    return outputs


# -- step 3: likelihoods -----------------------------------------------------------------------


def _completion(tokenizer: Any, answer: str) -> str:
    # After a chat template's generation prompt the answer starts bare; after "Answer:" with a space.
    return answer.strip() if getattr(tokenizer, "chat_template", None) else format_completion(answer)


def score_likelihoods(model: Any, tokenizer: Any, suite: ProbeSuite, config: EvaluateConfig, *,
                      groups: Sequence[str] | None = None, mia: bool | None = None) -> tuple[dict, dict, float]:
    """MIA scores of the suite's member / non-member texts and TOFU answer likelihoods of its truth
    items (``groups``: which truth groups, default all) under one model."""
    from lune.core.likelihood import completion_stats, mean_logprobs

    start = time.perf_counter()
    mia_scores: dict[str, list[dict[str, float]]] = {}
    if (config.mia if mia is None else mia) and suite.mia_members and suite.mia_nonmembers:
        for side, texts in (("member", suite.mia_members), ("nonmember", suite.mia_nonmembers)):
            prompts = [render_prompt(tokenizer, t.question) if t.question else "" for t in texts]
            completions = [_completion(tokenizer, t.text) if t.question else t.text for t in texts]
            stats = completion_stats(model, tokenizer, prompts, completions, batch_size=max(1, config.batch_size // 2))
            mia_scores[side] = [mia_lib.mia_scores(s, t.text, config.min_k) for s, t in zip(stats, texts)]
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
            values = mean_logprobs(model, tokenizer, prompts, completions, batch_size=config.batch_size)
            pos, rows = 0, []
            for n_para, n_pert in shape:
                answer = values[pos]
                rows.append(TruthLikelihoods(answer, values[pos + 1 : pos + 1 + n_para],
                                             values[pos + 1 + n_para : pos + 1 + n_para + n_pert]))
                pos += 1 + n_para + n_pert
            truth[group] = rows
    return mia_scores, truth, time.perf_counter() - start


def evaluate_specs(suite: ProbeSuite, specs: Sequence[ModelSpec], config: EvaluateConfig,
                   retain_model: str | None = None) -> tuple[list[ModelOutputs], ModelOutputs | None]:
    """Steps 2 and 3 for every spec (and the retain model's forget truth ratios)."""
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
                    suite, transformers_generate(model, tokenizer, config))
            if need_likelihoods:
                out.mia, out.truth, out.seconds["likelihood"] = score_likelihoods(model, tokenizer, suite, config)
    retain = None
    if retain_model and config.tofu and suite.truth.get("forget"):
        for spec, model, tokenizer in iter_loaded([ModelSpec(RETAIN_LABEL, str(retain_model))]):
            _, truth, seconds = score_likelihoods(model, tokenizer, suite, config, groups=["forget"], mia=False)
            retain = ModelOutputs(spec, truth=truth, seconds={"likelihood": seconds})
    return [outputs[s.label] for s in specs], retain


# -- step 4: metrics ---------------------------------------------------------------------------


def _result(run_id: str, out: ModelOutputs | ModelSpec, probe_set: str, metric: str, result: m.MetricResult | float | None,
            n: int | None = None, detail: Mapping[str, Any] | None = None) -> Row:
    spec = out.spec if isinstance(out, ModelOutputs) else out
    if isinstance(result, m.MetricResult):
        value, n, detail = result.value, result.n, {**result.detail, **(detail or {})}
    else:
        value = result
    value = None if value is None or not math.isfinite(value) else float(value)
    return {"result_id": content_id(run_id, spec.label, probe_set, metric), "run_id": run_id,
            "model_label": spec.label, "method": spec.method, "probe_set": probe_set, "metric": metric,
            "value": value, "n": n, "detail": dict(detail) if detail else None}


def _item(run_id: str, spec: ModelSpec, probe_set: str, probe_id: str, **fields: Any) -> Row:
    return {"item_id": content_id(run_id, spec.label, probe_set, probe_id), "run_id": run_id,
            "model_label": spec.label, "method": spec.method, "probe_set": probe_set, "probe_id": probe_id, **fields}


def _judge(generations: list[str], suite: ProbeSuite, name: str, config: EvaluateConfig) -> m.MetricResult:
    spans = [p.key_span for p in suite.probes.get(name, [])]
    kwargs = {"long_span_tokens": config.long_span_tokens, "coverage_threshold": config.coverage_threshold}
    return m.usr(generations, spans, **kwargs) if name in FORGET_SETS else m.recall(generations, spans, **kwargs)


def compute_results(run_id: str, suite: ProbeSuite, outputs: Sequence[ModelOutputs], retain: ModelOutputs | None,
                    config: EvaluateConfig) -> tuple[list[Row], list[Row]]:
    """Metric rows (``eval_results``) and per-probe rows (``eval_items``) for every model.

    ``outputs[0]`` must be the base model: GUR divides by its recall, and the MIA threshold
    accuracy of every model uses the threshold fitted on its scores.
    """
    if not outputs or outputs[0].spec.label != BASE_LABEL:
        raise ValueError("compute_results needs the base model's outputs first")
    results: list[Row] = []
    items: list[Row] = []
    kwargs = {"long_span_tokens": config.long_span_tokens, "coverage_threshold": config.coverage_threshold}
    base_recall: dict[str, float | None] = {}
    base_threshold: float | None = None
    retain_ratios = None
    if retain is not None and retain.truth.get("forget"):
        retain_ratios = tofu.truth_ratios([t.paraphrased_mean for t in retain.truth["forget"]],
                                          [t.perturbed for t in retain.truth["forget"]])
        for item, ratio in zip(suite.truth["forget"], retain_ratios):
            items.append(_item(run_id, retain.spec, "tofu_forget", item.fact_id, fact_id=item.fact_id,
                               prompt=item.question, expected=item.answer, score=_finite_or_none(ratio),
                               detail={"truth_ratio": _finite_or_none(ratio)}))
    for out in outputs:
        spec = out.spec
        all_generations: list[str] = []
        recall_now: dict[str, float | None] = {}
        # probe sets: USR / recall, ROUGE-L recall, fluency, items
        for name in PROBE_SETS:
            probes = suite.probes.get(name, [])
            if not probes:
                continue
            gens = out.generations.get(name, [])
            judged = _judge(gens, suite, name, config)
            rouge = m.rouge_l_recall(gens, [p.answer for p in probes])
            flu = m.fluency(gens)
            all_generations += gens
            if name in FORGET_SETS:
                results.append(_result(run_id, out, name, "usr", judged))
            else:
                results.append(_result(run_id, out, name, "recall", judged))
                recall_now[name] = judged.value
            results.append(_result(run_id, out, name, "rouge_l_recall", rouge))
            results.append(_result(run_id, out, name, "fluency", flu))
            for probe, gen, value, rl in zip(probes, gens, judged.per_item, rouge.per_item):
                stated = (value == 0.0) if name in FORGET_SETS else (value == 1.0)
                verdict = ("leaked" if stated else "forgotten") if name in FORGET_SETS else \
                          ("recalled" if stated else "missed")
                items.append(_item(run_id, spec, name, probe.probe_id, fact_id=probe.fact_id,
                                   attack_type=probe.attack_type, prompt=probe.question, expected=probe.key_span,
                                   generation=gen, verdict=verdict,
                                   score=m.key_score(gen, probe.key_span, long_span_tokens=config.long_span_tokens),
                                   detail={"rouge_l_recall": rl, "source": probe.source, "answer": probe.answer}))
        # APR: paraphrase and attack probes together, then per attack type
        adv = [p for name in ("paraphrase", "attack") for p in suite.probes.get(name, [])]
        if adv:
            gens = out.generations.get("paraphrase", []) + out.generations.get("attack", [])
            types = [p.attack_type if p.probe_set == "attack" else None for p in adv]
            result = m.apr(gens, [p.key_span for p in adv], types, **kwargs)
            results.append(_result(run_id, out, "adversarial", "apr", result))
            for name in ("paraphrase", "attack"):
                probes = suite.probes.get(name, [])
                if probes:
                    results.append(_result(run_id, out, name, "apr", _judge(out.generations[name], suite, name, config)))
            attack_probes = suite.probes.get("attack", [])
            per_type: dict[str, list[int]] = {}
            for i, probe in enumerate(attack_probes):
                per_type.setdefault(probe.attack_type or "unspecified", []).append(i)
            for attack_type, idx in sorted(per_type.items()):
                gens = [out.generations["attack"][i] for i in idx]
                spans = [attack_probes[i].key_span for i in idx]
                results.append(_result(run_id, out, f"attack:{attack_type}", "apr", m.usr(gens, spans, **kwargs)))
        results.append(_result(run_id, out, "all", "fluency", m.fluency(all_generations)))
        # GUR against the base model
        if spec.label == BASE_LABEL:
            base_recall = recall_now
        else:
            result = m.gur(recall_now, base_recall)
            results.append(_result(run_id, out, "all", "gur", result))
            for name, ratio in result.detail["per_set"].items():
                results.append(_result(run_id, out, name, "gur", ratio, n=len(suite.probes.get(name, []))))
        # membership inference
        if out.mia.get("member") and out.mia.get("nonmember"):
            for score in mia_lib.SCORE_NAMES:
                members = [s[score] for s in out.mia["member"]]
                nonmembers = [s[score] for s in out.mia["nonmember"]]
                results.append(_result(run_id, out, "mia", f"mia_auc_{score}", mia_lib.mia_auc(members, nonmembers)))
            members = [s["loss"] for s in out.mia["member"]]
            nonmembers = [s["loss"] for s in out.mia["nonmember"]]
            if spec.label == BASE_LABEL:
                base_threshold = mia_lib.best_threshold(members, nonmembers)
            acc = mia_lib.threshold_accuracy(members, nonmembers, base_threshold)
            results.append(_result(run_id, out, "mia", "mia_threshold_acc", acc, detail={"score": "loss"}))
            for side, texts in (("member", suite.mia_members), ("nonmember", suite.mia_nonmembers)):
                for text, scores in zip(texts, out.mia[side]):
                    predicted = "member" if base_threshold is not None and scores["loss"] >= base_threshold else "nonmember"
                    items.append(_item(run_id, spec, f"mia_{side}", text.text_id, fact_id=text.fact_id,
                                       prompt=(text.question or text.text)[:2000],
                                       expected=text.text[:2000] if text.question else None,
                                       verdict=predicted, score=_finite_or_none(scores["loss"]),
                                       detail={**{k: _finite_or_none(v) for k, v in scores.items()}, "source": text.source}))
        # TOFU
        if out.truth:
            results += _tofu_results(run_id, out, suite, retain_ratios, items)
    return results, items


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _tofu_results(run_id: str, out: ModelOutputs, suite: ProbeSuite, retain_ratios: list[float] | None,
                  items: list[Row]) -> list[Row]:
    results: list[Row] = []
    components: dict[str, float | None] = {}
    for group, rows in out.truth.items():
        ratios = tofu.truth_ratios([t.paraphrased_mean for t in rows], [t.perturbed for t in rows])
        probe_set = f"tofu_{group}"
        for item, lik, ratio in zip(suite.truth[group], rows, ratios):
            items.append(_item(run_id, out.spec, probe_set, item.fact_id, fact_id=item.fact_id, prompt=item.question,
                               expected=item.answer, score=_finite_or_none(ratio),
                               detail={"truth_ratio": _finite_or_none(ratio), "answer_lp": lik.answer,
                                       "paraphrased_lp": lik.paraphrased, "perturbed_lp": lik.perturbed}))
        if group == "forget":
            results.append(_result(run_id, out, probe_set, "truth_ratio", tofu.truth_ratio_forget(ratios)))
            results.append(_result(run_id, out, probe_set, "probability",
                                   tofu.answer_probability([t.answer for t in rows])))
            if retain_ratios is not None:
                results.append(_result(run_id, out, "tofu", "forget_quality", tofu.forget_quality(ratios, retain_ratios)))
            continue
        stat = tofu.truth_ratio_retain(ratios)
        if group == "retain":
            prob = tofu.answer_probability([t.answer for t in rows])
            gens = out.generations.get("retain", [])
            rouge = m.rouge_l_recall(gens, [p.answer for p in suite.probes.get("retain", [])])
        else:
            prob = tofu.relative_answer_probability([t.answer for t in rows], [t.perturbed for t in rows])
            pairs = [(g, p.answer) for g, p in zip(out.generations.get("utility", []), suite.probes.get("utility", []))
                     if (p.group or "utility") == group]
            rouge = m.rouge_l_recall([g for g, _ in pairs], [a for _, a in pairs])
        results.append(_result(run_id, out, probe_set, "truth_ratio", stat))
        results.append(_result(run_id, out, probe_set, "probability", prob))
        results.append(_result(run_id, out, probe_set, "rouge_l_recall", rouge))
        components.update({f"{group}_probability": prob.value, f"{group}_truth_ratio": stat.value,
                           f"{group}_rouge_l_recall": rouge.value})
    if components:
        results.append(_result(run_id, out, "tofu", "model_utility", tofu.model_utility(components)))
    return results


# -- step 5: storing, and the whole stage ------------------------------------------------------


def store_results(store: Store, results: Sequence[Row], items: Sequence[Row]) -> tuple[int, int]:
    return q.write_results(store, results, items)


def resolve_set_id(store: Store, set_name: str | None) -> str | None:
    """A curated set's id from its name or id; the latest set when None; None when the store has none."""
    if set_name:
        from lune.data.export import resolve_set

        return resolve_set(store, set_name)
    latest = q.latest_set(store)
    return latest["set_id"] if latest else None


StepRunner = Callable[..., Any]


def run_directly(name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """The default step runner: call the step. ``flows/evaluate.py`` passes one that runs each step
    as a Prefect task of that name."""
    del name
    return fn(*args, **kwargs)


def evaluate_models(store: Store, base_model: str | Path, adapters: Mapping[str, str | Path | None], *,
                    retain_model: str | Path | None = None, set_id: str | None = None,
                    out_dir: str | Path = "runs/evaluate", run_id: str | None = None,
                    parent_run_id: str | None = None, config: EvaluateConfig | None = None,
                    step: StepRunner = run_directly) -> EvaluationOutcome:
    """Evaluate the base model and every unlearned model on the same probes, store the results
    (``eval_results``, ``eval_items``, a ``runs`` row of kind ``evaluate``) and write the report
    (``report.md``, ``report.json``, PNG plots) into ``out_dir``.

    ``adapters``: label -> PEFT adapter directory (or full model directory) of each unlearned model
    (the labels name the rows and the report's columns, e.g. ``{"lune": ..., "npo": ...}``); an
    empty mapping evaluates the base model alone.
    ``set_id``: a curated set name or id (default ``config.set``, else the latest set; no set: all
    forget facts and the dataset's probes only).
    ``retain_model``: a model taught without the forget facts, for TOFU forget quality (default
    ``config.retain_model``).
    ``run_id`` / ``parent_run_id``: the ``runs`` row to write (a pipeline passes its ids).
    """
    from lune.evaluation.report import headline, render_run

    config = config or EvaluateConfig()
    retain_model = retain_model if retain_model is not None else config.retain_model
    specs = model_specs(base_model, {k: (str(v) if v is not None else None) for k, v in adapters.items()})
    chosen = resolve_set_id(store, set_id or config.set)
    resolved = {"evaluate": config.model_dump(), "base_model": str(base_model),
                "adapters": {k: str(v) for k, v in adapters.items() if v is not None},
                "retain_model": str(retain_model) if retain_model else None, "out_dir": str(out_dir),
                "set_id": chosen, "models": [spec.__dict__ for spec in specs]}
    run_id = store.start_run("evaluate", resolved, run_id=run_id, parent_run_id=parent_run_id)
    try:
        suite = step("load-probes", load_probe_suite, store, chosen, max_per_set=config.max_per_set,
                     include_dataset_probes=config.include_dataset_probes, mia=config.mia, tofu=config.tofu)
        if not suite.all_probes():
            raise LuneError(f"{store.path}: no probes to evaluate (no forget, retain or utility facts); "
                            "run `lune ingest` first")
        outputs, retain = step("answer-and-score", evaluate_specs, suite, specs, config,
                               str(retain_model) if retain_model else None)
        results, items = step("compute-metrics", compute_results, run_id, suite, outputs, retain, config)
        step("store-results", store_results, store, results, items)
        timings = {out.spec.label: out.seconds for out in outputs}
        n_probes = len(suite.all_probes())
        run_metrics = {"counts": suite.counts(), "seconds": timings, "notes": suite.notes, "probes": n_probes,
                       "probes_per_second": {label: n_probes / t["generate"] for label, t in timings.items()
                                             if t.get("generate")}}
        store.finish_run(run_id, metrics=run_metrics, artefacts={"out_dir": str(out_dir)})
        files = step("write-report", render_run, store, run_id, out_dir, plots=config.plots)
        store.finish_run(run_id, metrics=run_metrics, artefacts={**files, "out_dir": str(out_dir)})
    except BaseException as err:
        store.finish_run(run_id, status="failed", error=f"{type(err).__name__}: {err}")
        raise
    return EvaluationOutcome(run_id, Path(out_dir), files, headline(results), suite.counts(), suite.notes)
