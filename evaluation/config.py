"""Settings of the evaluate stage."""

from __future__ import annotations

from pydantic import Field

from lune.config_base import ConfigModel


class EvaluateConfig(ConfigModel):
    backend: str = Field("transformers", description="generation backend for probes: transformers / vllm")
