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
    max_new_tokens: int = Field(48, ge=1, le=1024, description="longest generated answer, in tokens (greedy)")
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
    min_k: float = Field(0.2, gt=0, le=1, description="share of lowest-likelihood tokens for min-k% and min-k%++")
    tofu: bool = Field(
        True,
        description="measure TOFU's truth ratio, forget quality and model utility where the "
        "facts have perturbed answers",
    )
    plots: bool = Field(True, description="draw the report's PNG plots")
    attacks: list[str] = Field(
        [],
        description="attacks run after the metrics on the base, unlearned and retain models, one file each in "
        "evaluation/attacks/: quantization, logit_lens",
    )
    quantization: QuantizationAttackSettings = Field(
        default_factory=QuantizationAttackSettings, description="settings of the quantization attack"
    )
    logit_lens: LogitLensAttackSettings = Field(
        default_factory=LogitLensAttackSettings, description="settings of the logit-lens attack"
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
