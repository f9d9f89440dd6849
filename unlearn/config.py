"""Settings of the teach and unlearn stages."""

from __future__ import annotations

from pydantic import Field

from lune.config_base import ConfigModel


class TeachConfig(ConfigModel):
    enabled: bool = Field(True, description="teach a model the facts before unlearning (TOFU protocol)")


class UnlearnConfig(ConfigModel):
    method: str = Field("lune", description="lune / grad_ascent / grad_diff / npo / idk / full_ft")
