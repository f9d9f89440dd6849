"""Base class of every config section, and loading a YAML config with errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from lune.data.errors import LuneError

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigModel(BaseModel):
    """A config section: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration:"]
    for problem in err.errors():
        where = ".".join(str(p) for p in problem["loc"]) or "(top level)"
        lines.append(f"  {where}: {problem['msg']}")
    return "\n".join(lines)


def validate_config(model: type[ModelT], data: dict[str, Any], source: str) -> ModelT:
    """Validate ``data`` as ``model``; a failure raises LuneError listing each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise LuneError(format_validation_error(err, source)) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise LuneError(f"{path}: config file not found")
    if path.is_dir():
        raise LuneError(
            f"{path}: is a folder, not a config file; give the path of a YAML file (e.g. configs/rwku.yaml)"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise LuneError(f"{path}: cannot read the config file: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise LuneError(f"{where}: not valid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise LuneError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data
