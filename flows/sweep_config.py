"""The ``sweep:`` section of a sweep file, and the points it names.

A sweep file is a pipeline config (the base every point starts from) with one more section::

    sweep:
      axes:
        - key: unlearn.lora.rank           # any config key path
          values: [4, 16]
        - name: negatives                  # several keys set together: one value per variant
          values:
            - {generate.backend: rules, generate.include_dataset: false}
            - {generate.backend: dataset}
      mode: grid                           # or `random` with `samples` and `sample_seed`
      seeds: [0, 1]                        # repeats: each point once per seed (sets `seed_keys`)

Every point's config is the base with the axis values applied, validated as a whole pipeline config
before anything runs: an unknown key or a bad value is an error naming the axis, the key path and
the point. Nothing here runs a stage.
"""

from __future__ import annotations

import copy
import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from lune.core.config_base import ConfigModel, format_validation_error, load_yaml
from lune.data.errors import LuneError
from lune.data.ids import content_id
from lune.flows.config import PipelineConfig


class SweepAxis(ConfigModel):
    """One axis of a sweep: the values one config key (or a group of keys) takes."""

    key: str | None = Field(
        None,
        description="config key path the values set, e.g. unlearn.lora.rank or curate.negative.min_quality "
        "(none: every value is a mapping of key paths to values, set together)",
    )
    name: str | None = Field(None, description="label of the axis in tables and plots (default: the key)")
    values: list[Any] = Field(min_length=1, description="the values the axis takes, in order")
    labels: list[str] | None = Field(
        None,
        description="how each value is shown in tables and plots, one per value (default: the value, or "
        "k=v,... for a mapping)",
    )

    @model_validator(mode="after")
    def _named(self) -> SweepAxis:
        if self.labels is not None and (
            len(self.labels) != len(self.values) or len(set(self.labels)) != len(self.labels)
        ):
            raise ValueError(
                f"axis {self.label}: labels must be distinct, one per value ({len(self.values)} values, "
                f"labels {self.labels})"
            )
        if self.key is None:
            if not self.name:
                raise ValueError("an axis without `key` needs a `name` (its values are mappings of key paths)")
            for value in self.values:
                if not isinstance(value, dict) or not value:
                    raise ValueError(f"axis {self.name}: without `key`, each value is a mapping of key paths to values")
        return self

    @property
    def label(self) -> str:
        return self.name or str(self.key)

    def settings(self, index: int) -> dict[str, Any]:
        """The key paths and values the axis's ``index``-th value sets."""
        value = self.values[index]
        return {self.key: value} if self.key is not None else dict(value)

    def value_label(self, index: int) -> str:
        """How the ``index``-th value is shown: its label, else the value itself, or ``k=v,...`` for a group."""
        if self.labels is not None:
            return self.labels[index]
        value = self.values[index]
        if self.key is not None:
            return str(value)
        return ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in value.items())


class SweepConfig(ConfigModel):
    """What a sweep varies, how many points it draws, and where its points run."""

    axes: list[SweepAxis] = Field(min_length=1, description="the axes; a point takes one value of each")
    mode: Literal["grid", "random"] = Field(
        "grid", description="grid: every combination; random: `samples` combinations drawn with `sample_seed`"
    )
    samples: int | None = Field(None, ge=1, description="random mode: how many combinations to draw (without repeats)")
    sample_seed: int = Field(0, description="random mode: seed of the draw")
    seeds: list[int] = Field([0], min_length=1, description="repeats: every point runs once per seed")
    seed_keys: list[str] = Field(
        ["unlearn.seed"], description="config keys each repeat's seed is written to (e.g. unlearn.seed, curate.seed)"
    )
    task_runner: Literal["threads", "dask"] = Field(
        "threads",
        description="where points run: threads of this process (ThreadPoolTaskRunner) or Dask worker "
        "processes (prefect-dask DaskTaskRunner; many machines with `dask_address`)",
    )
    workers: int = Field(1, ge=1, description="points at once: threads, or local Dask worker processes")
    dask_address: str | None = Field(
        None,
        description="address of a running Dask scheduler (default: a local cluster of `workers` processes); "
        "its workers need the same files at the same paths (a shared folder)",
    )

    @model_validator(mode="after")
    def _samples(self) -> SweepConfig:
        if self.mode == "random" and self.samples is None:
            raise ValueError("mode random needs `samples` (how many combinations to draw)")
        labels = [axis.label for axis in self.axes]
        if len(set(labels)) != len(labels):
            raise ValueError(f"two axes share a label: {labels}; give them distinct `name`s")
        return self


class SweepFileConfig(PipelineConfig):
    """A sweep file: the base pipeline config, and the ``sweep:`` section."""

    sweep: SweepConfig = Field(description="the axes, repeats and runner of the sweep (docs/sweep.md)")


@dataclass
class SweepPoint:
    """One configuration the sweep runs: its axis values, its seed and its validated config."""

    point_id: str
    values: dict[str, str]  # axis label -> value label
    seed: int
    settings: dict[str, Any]  # key path -> value, everything this point changes
    config: PipelineConfig = field(repr=False)


def set_path(tree: dict[str, Any], path: str, value: Any, where: str) -> None:
    """Set ``a.b.c`` in the nested dict ``tree``; every part must already be a key there (a config
    dump lists every field), else a LuneError names the key path, the unknown part and what exists."""
    parts = path.split(".")
    node: Any = tree
    for depth, part in enumerate(parts):
        known = sorted(node) if isinstance(node, dict) else []
        if part not in known:
            at = ".".join(parts[:depth]) or "the top level"
            raise LuneError(
                f"{where}: unknown config key {path!r}: no {part!r} in {at}"
                + (f" (known: {', '.join(known)})" if known else " (not a section)")
            )
        if depth == len(parts) - 1:
            node[part] = copy.deepcopy(value)
        else:
            node = node[part]


def combinations(sweep: SweepConfig) -> list[tuple[int, ...]]:
    """Value indices per axis of each combination: every one (grid) or a seeded sample (random)."""
    every = list(itertools.product(*(range(len(axis.values)) for axis in sweep.axes)))
    if sweep.mode == "grid":
        return every
    count = min(int(sweep.samples or 0), len(every))
    return sorted(random.Random(sweep.sample_seed).sample(every, count))


def base_tree(config: PipelineConfig) -> dict[str, Any]:
    """The base config as plain data, every field present (what axis key paths are checked against)."""
    return config.model_dump(mode="json", exclude={"sweep"} if "sweep" in type(config).model_fields else None)


def expand_points(base: PipelineConfig, sweep: SweepConfig, source: str = "sweep") -> list[SweepPoint]:
    """Every point of ``sweep`` over ``base``, each validated; the first bad axis value raises a
    LuneError naming the axis, the key path, the value and the problem, before anything has run."""
    tree = base_tree(base)
    points = []
    for combo in combinations(sweep):
        settings: dict[str, Any] = {}
        for axis, index in zip(sweep.axes, combo, strict=True):
            settings.update(axis.settings(index))
        values = {axis.label: axis.value_label(index) for axis, index in zip(sweep.axes, combo, strict=True)}
        for seed in sweep.seeds:
            point_settings = {**settings, **{key: seed for key in sweep.seed_keys}}
            where = f"{source}: sweep point {values} seed {seed}"
            point_tree = copy.deepcopy(tree)
            for path, value in point_settings.items():
                set_path(point_tree, path, value, where)
            if "unlearn.method" in point_settings and not any(
                k.startswith("unlearn.method_options") for k in point_settings
            ):
                # The base's method options are its own method's: another method starts from its defaults.
                point_tree["unlearn"].pop("method_options", None)
            try:
                config = PipelineConfig.model_validate(point_tree)
            except Exception as err:
                from pydantic import ValidationError

                if isinstance(err, ValidationError):
                    raise LuneError(format_validation_error(err, where)) from None
                raise
            point_id = content_id("sweep-point", base_tree(config))[:16]
            points.append(SweepPoint(point_id, values, seed, point_settings, config))
    return points


def load_sweep(path: str | Path) -> tuple[SweepFileConfig, list[SweepPoint]]:
    """Read a sweep file (relative ingest paths resolved against its folder, as ``load_config``
    does; ``workdir`` against the current directory) and expand its points; every error is raised
    here, before any stage runs."""
    from lune.core.config_base import validate_config

    path = Path(path)
    data = load_yaml(path)
    if "sweep" not in data:
        raise LuneError(f"{path}: no `sweep:` section (a sweep file is a pipeline config with a sweep section)")
    config = validate_config(SweepFileConfig, data, str(path))
    base = path.resolve().parent
    for src in config.ingest.sources:
        if src.path is not None and not Path(src.path).is_absolute():
            src.path = str((base / src.path).resolve())
    # Absolute, so that Dask workers started elsewhere (another folder, another machine with the
    # same shared paths) write where this process reads.
    config.workdir = str(Path(config.workdir).resolve())
    return config, expand_points(config, config.sweep, str(path))


__all__ = ["SweepAxis", "SweepConfig", "SweepFileConfig", "SweepPoint", "expand_points", "load_sweep"]
