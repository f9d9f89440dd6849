"""Settings of the evaluate stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lune.core.config_base import ConfigModel


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
