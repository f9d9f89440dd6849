"""The knowledge probe: which facts does a model actually answer, before anyone unlearns them?

A pretrained model knows few of a benchmark's facts (SmolLM2-135M answers about 5 % of RWKU's
level-1 cloze questions), and unlearning a fact it never knew measures nothing. The probe asks the
model each fact's question (and, with ``paraphrases``, the dataset's paraphrased questions of it)
greedily, exactly as the evaluate stage will (``core.greedy``, the prompt layout of
``core.prompt_format``), and judges each answer with the evaluate stage's own rule
(:func:`lune.evaluation.metrics.usr.key_score`): 1 or 0 for a short key span (whole-token match,
``core.matching``), the key-content coverage for a long one. A fact is *known* when the mean key
score over its prompts reaches ``threshold``::

    known(fact) <=> mean_{p in prompts(fact)} key_score(answer(p), key_span) >= threshold

With one prompt and a short span any threshold in (0, 1] means "the answer states the key span".

A fact whose own question already states its key span (RWKU: "In 1956, Buffett founded ___
Partnership Ltd.", key "Buffett") is not asked: an answer that echoes the question would count as
knowing it, and after unlearning as a leak. Its verdict is not known, reason ``key_in_question``.

    >>> verdicts = probe_facts(model, tokenizer, facts, ProbeConfig(threshold=1.0))
    >>> [v.fact_id for v in verdicts if v.known]

The pipeline runs it in its ``select`` step (``flows/select.py``), which sets the unknown facts
aside before generation (``data/fact_selection.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from lune.core.config_base import ConfigModel
from lune.data.records import SPLITS

GenerateFn = Callable[[Sequence[str]], list[str]]
# The evaluate stage's default (evaluation/metrics/usr.py LONG_SPAN_TOKENS; a test keeps them equal),
# repeated so that reading a config does not import the metrics (and the store with them).
LONG_SPAN_TOKENS = 8


class ProbeConfig(ConfigModel):
    """The knowledge probe (section ``probe:``): keep only the facts the model answers."""

    enabled: bool = Field(
        False, description="probe the model before generation and set aside the facts it does not answer"
    )
    model: str | None = Field(
        None, description="the model to probe (a folder, a GGUF file or a known name); default: the pipeline's `model`"
    )
    splits: list[str] = Field(
        ["forget", "retain"],
        description="splits whose facts are probed (retain: RWKU neighbour facts too); other splits are kept whole",
    )
    corpora: list[str] | None = Field(
        None, description="corpora whose facts are probed (default: every corpus the config ingests)"
    )
    threshold: float = Field(
        1.0,
        gt=0,
        le=1,
        description="a fact is known when the mean key score of its answers reaches this (short key span: 1 if "
        "stated, else 0; long span: key-content coverage)",
    )
    paraphrases: bool = Field(
        False, description="also ask the dataset's paraphrased questions of each fact (the mean is over all prompts)"
    )
    long_span_tokens: int = Field(
        LONG_SPAN_TOKENS, ge=1, description="a key span longer than this (normalised tokens) is scored by coverage"
    )
    backend: Literal["transformers", "vllm"] = Field(
        "transformers", description="greedy answers through transformers (in process) or a vLLM engine"
    )
    max_new_tokens: int = Field(32, ge=1, le=1024, description="longest answer, in tokens (greedy)")
    batch_size: int = Field(32, ge=1, description="prompts per generation batch (transformers)")

    @field_validator("splits")
    @classmethod
    def _known_splits(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(SPLITS))
        if unknown:
            raise ValueError(f"unknown split(s) {', '.join(unknown)}; use {', '.join(SPLITS)}")
        return value


@dataclass(frozen=True)
class ProbeVerdict:
    """The probe's verdict on one fact: the prompts asked, the answers, their mean key score."""

    fact_id: str
    prompts: tuple[str, ...]
    answers: tuple[str, ...]
    score: float
    known: bool
    reason: str = ""  # why not known: "unknown" (answered without the key) or "key_in_question"


def fact_score(answers: Sequence[str], key_span: str, *, long_span_tokens: int = LONG_SPAN_TOKENS) -> float:
    """Mean key score of ``answers`` (see the module docstring); 0.0 for no answers."""
    from lune.evaluation.metrics.usr import key_score

    if not answers:
        return 0.0
    return sum(key_score(a, key_span, long_span_tokens=long_span_tokens) for a in answers) / len(answers)


def fact_prompts(fact: Mapping[str, Any], paraphrases: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The questions asked of ``fact``: its own, then its paraphrased questions (deduplicated, in order)."""
    questions = [fact["question"], *(paraphrases or {}).get(fact["fact_id"], ())]
    return list(dict.fromkeys(q.strip() for q in questions if q and q.strip()))


def judge(
    facts: Sequence[Mapping[str, Any]],
    prompts: Sequence[Sequence[str]],
    answers: Sequence[Sequence[str]],
    *,
    threshold: float = 1.0,
    long_span_tokens: int = LONG_SPAN_TOKENS,
) -> list[ProbeVerdict]:
    """Verdicts of facts whose prompts were answered: known when the mean key score >= ``threshold``."""
    if not len(facts) == len(prompts) == len(answers):
        raise ValueError(f"{len(facts)} facts, {len(prompts)} prompt lists, {len(answers)} answer lists")
    out = []
    for fact, asked, said in zip(facts, prompts, answers):
        score = fact_score(said, fact["key_span"], long_span_tokens=long_span_tokens)
        known = score >= threshold
        out.append(
            ProbeVerdict(fact["fact_id"], tuple(asked), tuple(said), round(score, 6), known, "" if known else "unknown")
        )
    return out


def states_key_itself(
    fact: Mapping[str, Any], threshold: float = 1.0, long_span_tokens: int = LONG_SPAN_TOKENS
) -> bool:
    """Whether ``fact``'s question states its key span by the probe's own rule (an echo would pass)."""
    return fact_score([fact["question"]], fact["key_span"], long_span_tokens=long_span_tokens) >= threshold


def probe_with(
    generate: GenerateFn,
    facts: Sequence[Mapping[str, Any]],
    config: ProbeConfig,
    paraphrases: Mapping[str, Sequence[str]] | None = None,
) -> list[ProbeVerdict]:
    """Ask every prompt of every fact in one call of ``generate`` (questions -> greedy answers) and judge;
    a fact whose question states its key span is not asked (verdict reason ``key_in_question``)."""
    echoes = {
        f["fact_id"] for f in facts if states_key_itself(f, config.threshold, long_span_tokens=config.long_span_tokens)
    }
    asked_facts = [f for f in facts if f["fact_id"] not in echoes]
    verdicts = {v.fact_id: v for v in _ask_and_judge(generate, asked_facts, config, paraphrases)}
    for fact_id in echoes:
        verdicts[fact_id] = ProbeVerdict(fact_id, (), (), 0.0, False, "key_in_question")
    return [verdicts[f["fact_id"]] for f in facts]


def _ask_and_judge(
    generate: GenerateFn,
    facts: Sequence[Mapping[str, Any]],
    config: ProbeConfig,
    paraphrases: Mapping[str, Sequence[str]] | None,
) -> list[ProbeVerdict]:
    prompts = [fact_prompts(f, paraphrases if config.paraphrases else None) for f in facts]
    flat = [p for asked in prompts for p in asked]
    said = generate(flat) if flat else []
    if len(said) != len(flat):
        raise RuntimeError(f"the probe's generation returned {len(said)} answers for {len(flat)} questions")
    answers, pos = [], 0
    for asked in prompts:
        answers.append(said[pos : pos + len(asked)])
        pos += len(asked)
    return judge(facts, prompts, answers, threshold=config.threshold, long_span_tokens=config.long_span_tokens)


def probe_facts(
    model: Any,
    tokenizer: Any,
    facts: Sequence[Mapping[str, Any]],
    config: ProbeConfig | None = None,
    paraphrases: Mapping[str, Sequence[str]] | None = None,
) -> list[ProbeVerdict]:
    """Probe an in-memory transformers model (plain or PEFT-wrapped) on ``facts`` (fact_id,
    question, key_span): greedy answers as the evaluate stage asks them."""
    from lune.core.greedy import greedy_answers

    config = config or ProbeConfig()
    return probe_with(
        lambda questions: greedy_answers(
            model, tokenizer, questions, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size
        ),
        facts,
        config,
        paraphrases,
    )


def probe_model(
    model_ref: str,
    facts: Sequence[Mapping[str, Any]],
    config: ProbeConfig | None = None,
    paraphrases: Mapping[str, Sequence[str]] | None = None,
) -> list[ProbeVerdict]:
    """Load ``model_ref`` (a folder, a GGUF file or a known name) with the configured backend and probe it."""
    from lune.core.model_refs import resolve_model

    config = config or ProbeConfig()
    folder = str(resolve_model(model_ref, "probe.model"))
    if config.backend == "vllm":
        from lune.core.prompt_format import render_prompt
        from lune.core.threads import kept_torch_threads
        from lune.core.vllm_engine import load_engine

        with kept_torch_threads():  # vLLM's CPU engine changes the process's thread count
            engine = load_engine(folder)
            try:

                def generate(questions: Sequence[str]) -> list[str]:
                    prompts = [render_prompt(engine.tokenizer, q) for q in questions]
                    return engine.greedy(prompts, max_tokens=config.max_new_tokens)

                return probe_with(generate, facts, config, paraphrases)
            finally:
                engine.close()
    from lune.core.models import load_causal_lm

    model, tokenizer = load_causal_lm(folder)
    return probe_facts(model, tokenizer, facts, config, paraphrases)
