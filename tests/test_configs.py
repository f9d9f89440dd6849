"""The shipped configs (the embedded default and the examples for real use) parse, and the data
they name is in the repository (benchmark references resolve to the shipped copies and load);
the configuration reference in docs/ is the one the code renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from lune.config_reference import reference_markdown
from lune.data.errors import LuneError
from lune.data.loaders import load_source
from lune.data.loaders.benchmarks import SHIPPED, resolve
from lune.flows.config import DEFAULT_CONFIG, PipelineConfig, load_config
from lune.flows.sweep_config import load_sweep

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "configs").glob("*.yaml"))
SAMPLE = REPO / "data" / "sample"


def load_example(path: Path) -> PipelineConfig:
    """A shipped config as `lune run` (or, with a `sweep:` section, `lune sweep`) reads it."""
    if "\nsweep:" in path.read_text(encoding="utf-8"):
        config, points = load_sweep(path)
        assert points  # every point validated as a whole pipeline config
        return config
    return load_config(path)


def builds_on_the_embedded_default(config: PipelineConfig) -> bool:
    """Variants of the embedded default (LoRA-taught, the CI sweep) read the shipped sample."""
    return all(source.path and Path(source.path).is_relative_to(SAMPLE) for source in config.ingest.sources)


def test_the_embedded_default_reads_the_shipped_sample() -> None:
    config = load_config()
    assert config == load_config(DEFAULT_CONFIG)
    (source,) = config.ingest.sources
    # Its relative path is resolved against the config's folder, to the sample in the repository.
    assert (source.format, Path(source.path), source.forget) == ("tofu", REPO / "data" / "sample" / "tofu", "forget01")
    assert config.teach.enabled and config.unlearn.method == "lune"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_config_reads_benchmark_files_shipped_in_the_repository(path: Path) -> None:
    config = load_example(path)
    assert config.ingest.sources
    if builds_on_the_embedded_default(config):
        # Teaches the tiny model from scratch on the sample, as the embedded default does.
        assert config.teach.enabled and not config.teach.base_model and not config.model
        return
    for source in config.ingest.sources:
        assert source.benchmark and not source.hub  # by reference, read offline
        assert Path(resolve(source).path).is_relative_to(SHIPPED)
        files = load_source(source)
        assert sum(1 for loaded in files for fact in loaded.facts if fact["split"] == "forget") > 0
        assert not [problem for loaded in files for problem in loaded.problems]
    # Real-model configs name a model to unlearn, taught first or given.
    assert config.teach.base_model or config.model


def test_an_unknown_benchmark_in_a_config_names_the_source_and_what_exists(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest:\n  sources:\n    - benchmark: rwku:Stephen_King\n", encoding="utf-8")
    with pytest.raises(LuneError) as caught:
        load_config(bad)
    message = str(caught.value)
    assert message.startswith(f"{bad}: invalid configuration:\n  ingest.sources.0: ")
    assert "no RWKU target 'Stephen_King' in the copy shipped with lune (did you mean rwku:1_Stephen_King?)" in message


def test_the_examples_cover_what_the_readme_promises() -> None:
    by_name = {p.stem: load_example(p) for p in EXAMPLES}
    assert by_name["gpu-7b-vllm"].generate.backend == "vllm"
    assert by_name["openai-servers"].generate.backend == "openai"
    assert by_name["openai-servers"].generate.openai.base_urls
    assert by_name["openai-servers"].generate.task_runner == "dask"
    assert by_name["rwku"].ingest.sources[0].benchmark == "rwku:all"
    assert by_name["knowundo"].ingest.sources[0].benchmark == "knowundo:privacy"


def test_a_typo_in_a_config_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("unlearn:\n  methd: lune\n", encoding="utf-8")
    with pytest.raises(LuneError, match=r"unlearn\.methd"):
        load_config(bad)


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("teach:\n  epochs: [1\n", encoding="utf-8")
    with pytest.raises(LuneError, match=r"bad\.yaml:\d+: not valid YAML"):
        load_config(bad)


def test_configuration_reference_is_current() -> None:
    documented = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert documented == reference_markdown(), "regenerate: python -m lune.config_reference > docs/configuration.md"


def test_per_method_settings_apply_to_their_method_only() -> None:
    unlearn = load_config().unlearn
    assert unlearn.for_method().learning_rate == unlearn.learning_rate  # lune: the shared settings
    npo = unlearn.for_method("npo")
    assert (
        npo.method == "npo" and npo.learning_rate == unlearn.per_method["npo"]["learning_rate"] != unlearn.learning_rate
    )
    assert npo.retain_anchor == unlearn.retain_anchor  # what per_method does not name is shared


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"nope": {}}, "unknown method 'nope'"),
        ({"npo": {"learning_rate": -1}}, "per_method.npo: learning_rate"),
        ({"npo": {"lr": 1e-4}}, "per_method.npo: lr"),
        ({"idk": {"method": "npo"}}, "per_method.idk: method cannot be set"),
    ],
)
def test_a_bad_per_method_setting_fails_when_the_config_is_read(tmp_path: Path, override: dict, named: str) -> None:
    import yaml

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"unlearn": {"per_method": override}}), encoding="utf-8")
    with pytest.raises(LuneError, match="unlearn") as err:
        load_config(path)
    assert named in str(err.value) and str(path) in str(err.value)
