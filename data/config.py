"""Settings of the ingest stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lune.core.config_base import ConfigModel


class IngestSource(ConfigModel):
    """One input to ingest: a benchmark by reference (``benchmark: tofu:forget10``), or a file or
    folder in a format (``format`` and ``path``; relative paths are resolved against the config
    file's folder)."""

    benchmark: str | None = Field(
        None,
        description="a benchmark by reference, instead of format and path: tofu:forget01 / forget05 / "
        "forget10, rwku:<target folder> (e.g. rwku:1_Stephen_King) or rwku:all, knowundo:privacy; read from the "
        "copy shipped with lune (docs/ingest.md)",
    )
    hub: bool = Field(
        False,
        description="with benchmark: read the Hugging Face dataset instead of the shipped copy "
        "(needs network and HF_HUB_OFFLINE=0; LUNE_BENCHMARK_SOURCE=hub does the same for every source)",
    )
    format: Literal["tofu", "rwku", "knowundo", "generic"] | None = Field(
        None, description="which loader reads `path` (not with benchmark)"
    )
    path: str | None = Field(None, description="file or folder to read (not with benchmark)")
    forget: str | None = Field(None, description="TOFU: forget split file stem, e.g. forget01")
    corpus: str | None = Field(None, description="corpus name stored on each row (default: the format)")
    split: str | None = Field(None, description="generic: split for every row when no split field is mapped")
    fields: dict[str, str] = Field(default_factory=dict, description="generic: our field -> the file's column")
    skip_invalid: bool = Field(False, description="write good rows and a rejections row per bad one")

    @model_validator(mode="after")
    def _one_way_to_name_the_input(self) -> IngestSource:
        if self.benchmark is None:
            missing = [name for name in ("format", "path") if getattr(self, name) is None]
            if missing:
                raise ValueError(
                    f"give a benchmark (e.g. tofu:forget10), or a format and a path ({' and '.join(missing)} missing)"
                )
            if self.hub:
                raise ValueError("hub applies to a benchmark reference only")
            return self
        given = [name for name in ("format", "path", "forget") if getattr(self, name) is not None]
        if given:
            raise ValueError(f"benchmark {self.benchmark} names its files itself: leave out {', '.join(given)}")
        from lune.data.loaders.benchmarks import check  # lazy: the loaders import this module

        check(self.benchmark, hub=self.hub)
        return self


class IngestConfig(ConfigModel):
    sources: list[IngestSource] = Field(default_factory=list, description="inputs to ingest, in order")
