"""Settings of the ingest stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lune.core.config_base import ConfigModel


class IngestSource(ConfigModel):
    """One input to ingest. Relative paths are resolved against the config file's folder."""

    format: Literal["tofu", "rwku", "knowundo", "generic"] = Field(description="which loader reads `path`")
    path: str = Field(description="file or folder to read")
    forget: str | None = Field(None, description="TOFU: forget split file stem, e.g. forget01")
    corpus: str | None = Field(None, description="corpus name stored on each row (default: the format)")
    split: str | None = Field(None, description="generic: split for every row when no split field is mapped")
    fields: dict[str, str] = Field(default_factory=dict, description="generic: our field -> the file's column")
    skip_invalid: bool = Field(False, description="write good rows and a rejections row per bad one")


class IngestConfig(ConfigModel):
    sources: list[IngestSource] = Field(default_factory=list, description="inputs to ingest, in order")
