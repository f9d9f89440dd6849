"""What one model produced on a probe suite: its greedy answers, membership-inference scores and
TOFU answer likelihoods with the answers' teacher-forced greedy matches (made by
``evaluation/inference.py``, read by the metric families)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lune.core.models import ModelSpec


@dataclass
class TruthLikelihoods:
    """Length-normalised log-likelihoods of one TOFU item's answers under one model, and per token of
    the answer whether it is the model's teacher-forced greedy choice (empty when not scored)."""

    answer: float
    paraphrased: list[float]
    perturbed: list[float]
    answer_is_argmax: list[bool] = field(default_factory=list)

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
    # GRUN: probe set -> each probe's gate at its last prompt token, averaged over the edited layers
    gates: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
