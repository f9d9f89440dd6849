"""The attack registry: every attack of ``evaluation/attacks/`` by name, and the one function that
runs those the config names (``evaluate.attacks``) after the metrics.

An attack is a function of an :class:`AttackContext` returning ``eval_results`` rows, made with
``ctx.result`` (which prefixes the metric with ``attack.<name>.``). It registers itself with
``@attack(name)``; a module of this package that defines one is found by :func:`registered`, so
adding an attack is adding one file, e.g. ``evaluation/attacks/noise.py``:

    @attack("noise")
    def noise(ctx: AttackContext) -> list[Row]:
        # forget recall after adding Gaussian noise to every weight
        rows = []
        for spec, model, tokenizer in ctx.loaded_models():
            ...  # perturb a copy of the model, then
            answers = ctx.answers(model, tokenizer, ["forget"])
            rows.append(ctx.result(spec, "forget", "sigma_0.01.forget_recall", ctx.recall(answers, "forget")))
        return rows

Its settings, if any, are a section of ``EvaluateConfig`` named after it (``evaluate.noise``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lune.core.models import RETAIN_LABEL, ModelSpec, iter_loaded
from lune.core.progress import announce
from lune.core.registry import Registry
from lune.evaluation.config import EvaluateConfig
from lune.evaluation.metrics.registry import MetricContext, Row
from lune.evaluation.metrics.result import MetricResult
from lune.evaluation.metrics.usr import recall
from lune.evaluation.outputs import ModelOutputs
from lune.evaluation.probes import ProbeSuite


@dataclass(frozen=True)
class AttackContext:
    """What an attack reads: the run's probes and settings (``metrics``, the metric families'
    context: the full-precision answers of step 2 are there too) and the retain model to attack
    as the reference that never saw the forget facts."""

    name: str
    metrics: MetricContext
    retain_model: str | None = None
    # Fine-tuning for the relearning attack (``relearning.Finetune``), handed in by the caller:
    # training is the unlearn stage's, which evaluation does not import (flows/attacks.py has it).
    finetune: Callable[..., None] | None = None

    @property
    def config(self) -> EvaluateConfig:
        return self.metrics.config

    @property
    def suite(self) -> ProbeSuite:
        return self.metrics.suite

    def models(self) -> list[ModelSpec]:
        """The base model, every unlearned model, then the retain model when there is one."""
        specs = [out.spec for out in self.metrics.outputs]
        return specs + ([ModelSpec(RETAIN_LABEL, self.retain_model)] if self.retain_model else [])

    def loaded_models(self) -> Iterator[tuple[ModelSpec, Any, Any]]:
        """``(spec, model, tokenizer)`` of :meth:`models` in turn (``core.models.iter_loaded``: an
        adapter is attached with PEFT, unmerged; use each before asking for the next). Says on
        stderr which model the attack is on (an attack on a real model runs for minutes each)."""
        specs = self.models()
        started = time.perf_counter()
        for index, loaded in enumerate(iter_loaded(specs), start=1):
            elapsed = time.perf_counter() - started
            announce(f"[evaluate] attack {self.name}: model {index}/{len(specs)} ({loaded[0].label}), {elapsed:.0f} s")
            yield loaded
        announce(f"[evaluate] attack {self.name}: done in {time.perf_counter() - started:.0f} s")

    def answers(self, model: Any, tokenizer: Any, probe_sets: Iterable[str]) -> dict[str, list[str]]:
        """Greedy answers (transformers, the evaluation's settings) to every probe of ``probe_sets``."""
        from lune.evaluation.inference import generate_with, transformers_generate

        chosen = ProbeSuite({name: self.suite.probes[name] for name in probe_sets if self.suite.probes.get(name)})
        answers, _ = generate_with(chosen, transformers_generate(model, tokenizer, self.config))
        return answers

    def recall(self, answers: Mapping[str, Sequence[str]], probe_set: str) -> MetricResult:
        """Share of ``probe_set``'s answers that state the key span (``metrics.usr.recall``)."""
        probes = self.suite.probes[probe_set]
        return recall(answers[probe_set], [p.key_span for p in probes], **self.metrics.key_options)

    def result(
        self,
        spec: ModelSpec,
        probe_set: str,
        measure: str,
        result: MetricResult | float | None,
        n: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Row:
        """One ``eval_results`` row of metric ``attack.<name>.<measure>``."""
        return self.metrics.result(spec, probe_set, f"attack.{self.name}.{measure}", result, n, detail)


Attack = Callable[[AttackContext], list[Row]]
# Filled by the modules of this package as they are imported (``@attack(name)``).
ATTACKS: Registry[Attack] = Registry("attack", __name__.rpartition(".")[0])
attack = ATTACKS.register


def registered() -> dict[str, Attack]:
    """Every attack, sorted by name (importing each module of this package registers its attacks)."""
    return ATTACKS.entries()


def run_attacks(
    run_id: str,
    suite: ProbeSuite,
    outputs: Sequence[ModelOutputs],
    retain: ModelOutputs | None,
    config: EvaluateConfig,
    retain_model: str | None = None,
    finetune: Callable[..., None] | None = None,
) -> list[Row]:
    """The ``eval_results`` rows of every attack in ``config.attacks``, in that order, on the base
    model (``outputs[0]``), every unlearned model and ``retain_model``; ``finetune``: the training
    the relearning attack uses (``flows.attacks.relearn``)."""
    attacks = registered()
    metrics = MetricContext(run_id, suite, outputs, retain, config)
    rows: list[Row] = []
    for name in config.attacks:
        rows += attacks[name](AttackContext(name, metrics, retain_model, finetune))
    return rows
