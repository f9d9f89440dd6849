"""Command-line options derived from config models (lune/cli_options.py)."""

from __future__ import annotations

import argparse
from typing import Literal

import pytest
from pydantic import Field

from lune.cli_options import add_model_options, apply_options, merge_overrides, overrides_from_args
from lune.core.config_base import ConfigModel, validate_config
from lune.data.errors import LuneError


class Inner(ConfigModel):
    """Settings of the inner section."""

    rank: int = Field(16, ge=1, description="adapter rank")
    modules: list[str] | Literal["all"] = Field("all", description="modules to adapt")


class Outer(ConfigModel):
    mode: Literal["fast", "slow"] = Field("fast", description="how to run")
    verbose: bool = Field(False, description="say more")
    rate: float = Field(1e-3, gt=0, description="step size")
    names: list[str] = Field(default_factory=lambda: ["a", "b"], description="names to use")
    limit: int | None = Field(None, ge=1, description="cap on items")
    extra: dict[str, int] = Field(default_factory=dict, description="more settings")
    inner: Inner = Field(default_factory=lambda: Inner(rank=8))


def parser(**kwargs) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t", exit_on_error=False)
    add_model_options(p, Outer, **kwargs)
    return p


def overrides(argv: list[str], **kwargs) -> dict:
    return overrides_from_args(parser(**kwargs).parse_args(argv), Outer, prefix=kwargs.get("prefix", ""))


def test_only_the_options_given_are_overrides() -> None:
    assert overrides([]) == {}
    assert overrides(["--rate", "0.5"]) == {"rate": 0.5}


def test_nested_sections_are_flattened_with_dashes() -> None:
    assert overrides(["--inner-rank", "4", "--mode", "slow"]) == {"mode": "slow", "inner": {"rank": 4}}
    # merged over a section, the other nested keys stay
    base = Outer().model_dump()
    merged = merge_overrides(base, {"inner": {"rank": 4}})
    assert merged["inner"] == {"rank": 4, "modules": "all"} and base["inner"]["rank"] == 8
    section = Outer(mode="slow", inner=Inner(rank=2, modules=["q"]))
    applied = apply_options(parser().parse_args(["--inner-rank", "4"]), Outer, section, source="t")
    assert (applied.mode, applied.inner.rank, applied.inner.modules) == ("slow", 4, ["q"])


def test_literal_bool_list_optional_and_json_values() -> None:
    assert overrides(["--verbose"]) == {"verbose": True}
    assert overrides(["--no-verbose"]) == {"verbose": False}
    assert overrides(["--names", "x, y", "--names", "z"]) == {"names": ["x", "y", "z"]}
    assert overrides(["--limit", "3"]) == {"limit": 3}
    assert overrides(["--limit", "none"]) == {"limit": None}
    assert overrides(["--extra", '{"k": 2}']) == {"extra": {"k": 2}}
    # a union of a literal and a list: the literal as is, else the comma-separated list
    assert overrides(["--inner-modules", "all"]) == {"inner": {"modules": "all"}}
    assert overrides(["--inner-modules", "q,v"]) == {"inner": {"modules": ["q", "v"]}}
    assert validate_config(
        Outer, merge_overrides(Outer().model_dump(), overrides(["--inner-modules", "q,v"])), "t"
    ).inner.modules == ["q", "v"]


@pytest.mark.parametrize(
    "argv, option, problem",
    [
        (["--mode", "medium"], "--mode", "'fast' or 'slow'"),
        (["--rate", "0"], "--rate", "greater than 0"),
        (["--inner-rank", "zero"], "--inner-rank", "valid integer"),
        (["--limit", "0"], "--limit", "greater than or equal to 1"),
        (["--extra", "{bad"], "--extra", "valid dictionary"),
    ],
)
def test_an_invalid_value_names_the_option(argv: list[str], option: str, problem: str) -> None:
    with pytest.raises(argparse.ArgumentError, match=rf"argument {option}: invalid value .*{problem}"):
        parser().parse_args(argv)


def test_model_validators_still_name_the_key_path() -> None:
    class Checked(ConfigModel):
        low: int = Field(1, description="low end")
        high: int = Field(2, description="high end")

        def model_post_init(self, context: object) -> None:
            if self.low > self.high:
                raise ValueError("low above high")

    p = argparse.ArgumentParser()
    add_model_options(p, Checked)
    given = overrides_from_args(p.parse_args(["--low", "5"]), Checked)
    with pytest.raises(LuneError, match="low above high"):
        validate_config(Checked, given, "lune test options")
    with pytest.raises(LuneError, match=r"inner\.rank: Input should be greater than or equal to 1"):
        validate_config(Outer, {"inner": {"rank": 0}}, "lune test options")


def test_help_shows_the_model_description_and_default() -> None:
    text = " ".join(parser().format_help().split())  # argparse wraps lines
    assert "step size (default: 0.001)" in text
    assert "--inner-rank N" in text and "adapter rank (default: 8)" in text  # the section's default instance
    assert "names to use (comma-separated, repeatable; default: a,b)" in text
    assert "--mode {fast,slow}" in text and "--verbose, --no-verbose" in text
    assert "--inner-* options" in text and "Settings of the inner section." in text
    assert "cap on items (`none` for null; default: none)" in text


def test_exclude_prefix_and_aliases() -> None:
    p = parser(exclude=("rate", "inner.modules"), prefix="x")
    options = {s for a in p._actions for s in a.option_strings}
    assert "--x-rate" not in options and "--x-inner-modules" not in options
    assert {"--x-mode", "--x-inner-rank"} <= options
    # a hand-written alias with the field's dest counts as that field
    p.add_argument("--fast-rank", dest="x_inner_rank", type=int, default=argparse.SUPPRESS)
    assert overrides_from_args(p.parse_args(["--fast-rank", "2"]), Outer, prefix="x") == {"inner": {"rank": 2}}
    with pytest.raises(argparse.ArgumentError):  # a clash with a hand-written option is found at once
        add_model_options(p, Outer, prefix="x")


# -- the commands ----------------------------------------------------------------------------------


def test_generate_options_apply_over_the_config_and_keep_their_old_spellings() -> None:
    from lune.cli import build_parser
    from lune.commands.generate import resolve

    args = build_parser().parse_args(
        [
            "generate",
            "--backend",
            "openai",
            "--model",
            "m",
            "--base-url",
            "http://a:1",
            "--openai-base-urls",
            "http://b:1,http://c:1",
            "--split",
            "all",
            "--no-dataset",
            "--plain",
            "--openai-concurrency",
            "3",
            "--kinds",
            "negative,refusal",
        ]
    )
    config = resolve(args)
    assert config.openai.base_urls == ["http://a:1", "http://b:1", "http://c:1"] and config.openai.concurrency == 3
    assert config.split is None and config.include_dataset is False and config.structured is False
    assert config.kinds == ["negative", "refusal"]
    assert config.n == 2 and config.openai.max_retries == 5  # the embedded default's, and the model's


def test_a_bad_command_line_value_names_the_option(capsys) -> None:
    from lune.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--n", "0"])
    assert exit_.value.code == 2
    assert "argument --n: invalid value '0': Input should be greater than or equal to 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["curate", "--negative-top-k", "many"])
    assert "argument --negative-top-k: invalid value 'many'" in capsys.readouterr().err
    # what only the whole config can check is reported with its key path
    assert main(["generate", "--backend", "vllm"]) == 2
    assert "model" in capsys.readouterr().err


def test_evaluate_and_run_options_come_from_their_config_models() -> None:
    from lune.cli import build_parser
    from lune.evaluation.config import EvaluateConfig
    from lune.flows.config import PipelineConfig

    args = build_parser().parse_args(
        ["evaluate", "--model", "m", "--set", "s", "--retain-model", "r", "--max-per-set", "none", "--no-mia"]
    )
    assert overrides_from_args(args, EvaluateConfig) == {
        "set": "s",
        "retain_model": "r",
        "max_per_set": None,
        "mia": False,
    }
    args = build_parser().parse_args(["run", "--workdir", "w", "--compare", "lune,npo"])
    assert overrides_from_args(args, PipelineConfig) == {"workdir": "w"}
