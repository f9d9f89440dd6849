"""Settings of the pipeline's select step (section ``select:``; the knowledge probe is ``probe:``,
``evaluation/knowledge_probe.py``). Kept apart from ``flows/select.py`` so that reading a config
does not import Prefect."""

from __future__ import annotations

from pydantic import Field, field_validator

from lune.core.config_base import ConfigModel


class SelectConfig(ConfigModel):
    """Caps on the facts a pipeline works on (section ``select:``); the knowledge probe is ``probe:``."""

    max_facts: dict[str, int] = Field(
        default_factory=dict,
        description="at most this many facts per split or per group (a group cap wins: e.g. {forget: 20, "
        "real_authors: 15}), the first in source order (whole subjects first); the others are set aside "
        "(split set_aside, reason over_cap)",
    )

    @field_validator("max_facts")
    @classmethod
    def _non_negative(cls, value: dict[str, int]) -> dict[str, int]:
        negative = [k for k, v in value.items() if v < 0]
        if negative:
            raise ValueError(f"caps must be >= 0 ({', '.join(negative)})")
        return value
