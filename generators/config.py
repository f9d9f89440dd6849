"""Settings of the generate, score and curate stages."""

from __future__ import annotations

from pydantic import Field

from lune.config_base import ConfigModel


class GenerateConfig(ConfigModel):
    backend: str = Field("rules", description="generator backend: rules / dataset / transformers / vllm / openai")


class ScoreConfig(ConfigModel):
    pass


class CurateConfig(ConfigModel):
    name: str = Field("default", description="name of the curated set")
