"""The pipeline config: one validated file (YAML) with a section per stage.

Each section's class lives with its stage (``data/config.py``, ``generators/config.py``,
``unlearn/config.py``, ``evaluation/config.py``); this module composes them, loads files and
resolves relative paths. The resolved config is saved beside every artefact and in ``runs``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from lune.core.config_base import ConfigModel, load_yaml, validate_config
from lune.data.config import IngestConfig
from lune.evaluation.config import EvaluateConfig
from lune.evaluation.knowledge_probe import ProbeConfig
from lune.flows.select_config import SelectConfig
from lune.generators.config import CurateConfig, GenerateConfig, ScoreConfig
from lune.unlearn.config import TeachConfig, UnlearnConfig

DEFAULT_CONFIG = Path(__file__).with_name("default.yaml")


class PipelineConfig(ConfigModel):
    """Everything `lune run` needs, stage by stage."""

    workdir: str = Field(
        "runs", description="folder for models, adapters, exports and reports (relative: to the current directory)"
    )
    model: str | None = Field(
        None,
        description="the model to unlearn when teach.enabled is false (a Hugging Face causal LM folder, a GGUF "
        "file or a known name such as smollm2-135m-instruct: docs/models.md); with teaching on, "
        "teach.base_model is taught first",
    )
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    probe: ProbeConfig = Field(
        default_factory=ProbeConfig,
        description="knowledge probe before generation: keep only the facts the model answers",
    )
    select: SelectConfig = Field(
        default_factory=SelectConfig, description="caps on the facts per split (after the probe), before generation"
    )
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    teach: TeachConfig = Field(default_factory=TeachConfig)
    unlearn: UnlearnConfig = Field(default_factory=UnlearnConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)


def load_config(path: str | Path | None = None) -> PipelineConfig:
    """Load and validate a pipeline config (default: the embedded one, ``lune/default.yaml``).

    Relative paths of ingest sources are resolved against the config file's folder.
    """
    path = Path(path) if path is not None else DEFAULT_CONFIG
    data: dict[str, Any] = load_yaml(path)
    config = validate_config(PipelineConfig, data, str(path))
    base = path.resolve().parent
    for source in config.ingest.sources:
        if source.path is not None and not Path(source.path).is_absolute():
            source.path = str((base / source.path).resolve())
    return config
