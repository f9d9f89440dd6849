"""Settings of the evaluate stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from lune.core.config_base import ConfigModel


class QuantizationAttackSettings(ConfigModel):
    """Settings of the quantization attack: one variant per bits x group size x scheme.

    Round-to-nearest fake quantization of every linear weight of a merged copy of each model
    (evaluation/attacks/quantization.py)."""

    bits: list[int] = Field([8, 4], min_length=1, description="bit widths, each 2 to 8")
    group_sizes: list[int] = Field(
        [64, 128], min_length=1, description="inputs per quantization group (a shorter last group takes the rest)"
    )
    schemes: list[Literal["symmetric", "asymmetric"]] = Field(
        ["symmetric"], min_length=1, description="symmetric absmax, and/or asymmetric min-max with a zero point"
    )

    @field_validator("bits")
    @classmethod
    def _bits_in_range(cls, value: list[int]) -> list[int]:
        if any(not 2 <= b <= 8 for b in value):
            raise ValueError(f"each bit width must be between 2 and 8, got {value}")
        return value

    @field_validator("group_sizes")
    @classmethod
    def _positive_groups(cls, value: list[int]) -> list[int]:
        if any(g < 1 for g in value):
            raise ValueError(f"each group size must be at least 1, got {value}")
        return value


class LogitLensAttackSettings(ConfigModel):
    """Settings of the logit-lens attack: every layer read through the final norm and output head.

    At the position before the key answer's first token (evaluation/attacks/logit_lens.py)."""

    top_k: int = Field(
        4, ge=1, description="a fact counts as recovered when its key token is in the top k at any layer"
    )


class RelearningAttackSettings(ConfigModel):
    """Settings of the relearning attack: fine-tune each model a little, then ask the facts it did not see.

    The forget facts are split by fact into T (trained on) and V (asked); each model (a merged copy)
    is fine-tuned on T, or on as many retain facts, and its recall on V measured at every step of
    ``steps`` (evaluation/attacks/relearning.py; the fine-tuning is unlearn's training loop)."""

    variants: list[Literal["forget", "retain"]] = Field(
        ["forget", "retain"],
        min_length=1,
        description="what to fine-tune on: forget (the forget facts of T) and/or retain (as many retain facts, "
        "text unrelated to V)",
    )
    steps: list[int] = Field(
        [10, 20, 40],
        min_length=1,
        description="optimiser steps after which recall on V is measured (one run to the largest; the report "
        "plots them)",
    )
    train_share: float = Field(0.5, gt=0, lt=1, description="share of the forget facts in T (the rest are V)")
    batch_size: int = Field(4, ge=1, description="training rows per step")
    learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate (constant, no warm-up)")
    mode: Literal["lora", "full"] = Field(
        "lora", description="lora: a fresh LoRA adapter on the merged model; full: every weight"
    )
    lora_rank: int = Field(8, ge=1, description="rank of the attacker's adapter (mode lora)")
    lora_alpha: float = Field(16.0, gt=0, description="scaling numerator of the attacker's adapter (mode lora)")
    seed: int = Field(0, description="seed of the T / V split, the retain facts drawn and the training order")

    @field_validator("steps")
    @classmethod
    def _positive_steps(cls, value: list[int]) -> list[int]:
        if any(s < 1 for s in value):
            raise ValueError(f"each step count must be at least 1, got {value}")
        return sorted(set(value))


class EvaluateConfig(ConfigModel):
    backend: Literal["transformers", "vllm"] = Field(
        "transformers",
        description="generation backend for probes: transformers (in-process, PEFT adapter) or "
        "vllm (the adapter served as a LoRA request); log-likelihood metrics always use transformers",
    )
    set: str | None = Field(
        None, description="curated set (name or id) whose held-out probes to use; default: the latest set in the store"
    )
    retain_model: str | None = Field(
        None,
        description="model taught without the forget facts (TOFU forget quality); "
        "default: none, and forget quality is not measured",
    )
    max_new_tokens: int = Field(
        200,
        ge=1,
        le=1024,
        description="longest generated answer, in tokens (greedy; open-unlearning's 200). lune's old cap was 48, "
        "below 14-26% of TOFU forget10 answers",
    )
    fit_max_new_tokens: bool = Field(
        True,
        description="stop generating at the longest reference answer of the probes (in the model's tokens, plus 8), "
        "never above max_new_tokens: every answer fits, and nothing is generated past that; false: max_new_tokens",
    )
    batch_size: int = Field(
        64,
        ge=1,
        description="prompts per generation / scoring batch (membership "
        "inference: half, it keeps the whole next-token distribution)",
    )
    max_per_set: int | None = Field(
        500,
        ge=1,
        description="cap on the probes of each set (a fixed pseudo-random "
        "subset, the same for every model); null for all",
    )
    long_span_tokens: int = Field(
        8,
        ge=1,
        description="a key span longer than this (normalised tokens) is judged "
        "by key-content coverage instead of exact containment",
    )
    coverage_threshold: float = Field(
        0.5, gt=0, le=1, description="coverage at or above which a long key span counts as still stated"
    )
    include_dataset_probes: bool = Field(
        True,
        description="add the dataset's paraphrased questions and adversarial queries to the held-out generated ones",
    )
    mia: bool = Field(True, description="measure membership inference (AUC of loss, zlib, min-k%, min-k%++)")
    min_k: float = Field(
        0.4,
        gt=0,
        le=1,
        description="share of lowest-likelihood tokens for min-k% and min-k%++ (open-unlearning's TOFU / MUSE 0.4; "
        "lune's old variant: 0.2 with min_k_rounding ceil)",
    )
    min_k_rounding: Literal["floor", "ceil"] = Field(
        "floor",
        description="how k x n tokens becomes a count (at least 1): floor, as open-unlearning (int(n*k)); ceil, "
        "lune's old variant",
    )
    score_eos: bool = Field(
        True,
        description="score the answer's end-of-sequence token with the answer in every likelihood (TOFU "
        "probability, truth ratio, MIA on facts, exact memorization), as open-unlearning does and as teaching "
        "trains; false: the answer's own tokens only (lune's old variant)",
    )
    mia_nonmembers: Literal["holdout", "perturbed"] = Field(
        "holdout",
        description="non-members of membership inference on facts (corpora without their own MIA texts, e.g. "
        "TOFU): holdout facts never taught (open-unlearning's forget vs holdout; perturbed answers when a corpus "
        "has no holdout facts), or the forget facts' perturbed answers (lune's old variant)",
    )
    retain_probes: Literal["retain_perturbed", "all"] = Field(
        "retain_perturbed",
        description="the retain probe set: where a corpus's retain facts have perturbed answers (TOFU's "
        "retain_perturbed), those facts only, as open-unlearning's retain ROUGE; all: every retain fact "
        "(capped by max_per_set; lune's old variant)",
    )
    utility_missing: Literal["error", "skip"] = Field(
        "error",
        description="TOFU model utility needs its nine components (retain, real_authors, world_facts x "
        "probability, ROUGE-L recall, truth ratio): error names the missing ones; skip: the harmonic mean of "
        "those present (lune's old variant)",
    )
    tofu: bool = Field(
        True,
        description="measure TOFU's truth ratio, forget quality and model utility where the "
        "facts have perturbed answers",
    )
    plots: bool = Field(True, description="draw the report's PNG plots")
    attacks: list[str] = Field(
        [],
        description="attacks run after the metrics on the base, unlearned and retain models, one file each in "
        "evaluation/attacks/: quantization, logit_lens, relearning",
    )
    quantization: QuantizationAttackSettings = Field(
        default_factory=QuantizationAttackSettings, description="settings of the quantization attack"
    )
    logit_lens: LogitLensAttackSettings = Field(
        default_factory=LogitLensAttackSettings, description="settings of the logit-lens attack"
    )
    relearning: RelearningAttackSettings = Field(
        default_factory=RelearningAttackSettings, description="settings of the relearning attack"
    )

    @field_validator("attacks")
    @classmethod
    def _known_attacks(cls, value: list[str]) -> list[str]:
        if not value:
            return value
        # the registry imports this module: looked up when a config names an attack, not before
        from lune.evaluation.attacks.registry import registered

        known = registered()
        unknown = [name for name in value if name not in known]
        if unknown:
            raise ValueError(f"unknown attack(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return list(dict.fromkeys(value))
