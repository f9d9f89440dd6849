"""Render the configuration reference (docs/configuration.md) from the pydantic models, so the
documentation cannot drift from the code: every key, its type, default and description.

    python -m lune.config_reference > docs/configuration.md
"""

from __future__ import annotations

import json
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from lune.flows.config import PipelineConfig


def _type_name(annotation: Any) -> str:
    text = str(annotation) if typing.get_origin(annotation) else getattr(annotation, "__name__", str(annotation))
    return text.replace("typing.", "").replace("NoneType", "None")


def _model_of(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        for inner in typing.get_args(candidate):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def _default(field: Any) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
    else:
        return "(required)"
    if isinstance(value, BaseModel):
        return "(section)"
    return "`" + json.dumps(value, default=str) + "`"


def render(model: type[BaseModel] = PipelineConfig, prefix: str = "", heading: str = "", skip: str = "") -> list[str]:
    rows: list[str] = []
    nested: list[tuple[str, type[BaseModel], str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if name == skip:
            continue
        sub = _model_of(field.annotation)
        description = (field.description or "").replace("|", "\\|")
        if field.discriminator:  # a tagged union of sections: one table per member, under its tag's value
            tag = field.discriminator
            rows.append(f"| `{key}` | by `{prefix}{tag}` | (section) | {description} |")
            for member in typing.get_args(field.annotation):
                value = member.model_fields[tag].default
                nested.append((f"{key}.", member, f"`{key}` when `{prefix}{tag}` is `{value}`", tag))
            continue
        type_name = _type_name(field.annotation).replace("|", "\\|")
        rows.append(f"| `{key}` | {type_name} | {_default(field)} | {description} |")
        if sub is not None:
            is_list = typing.get_origin(field.annotation) in (list, list)
            nested.append((f"{key}[]." if is_list else f"{key}.", sub, "", ""))
    lines = []
    if rows:
        heading = heading or f"`{prefix.rstrip('.') or 'top level'}`"
        lines += [f"### {heading}", "", "| key | type | default | description |", "|---|---|---|---|", *rows, ""]
    for sub_prefix, sub, sub_heading, sub_skip in nested:
        lines += render(sub, sub_prefix, sub_heading, sub_skip)
    return lines


def reference_markdown() -> str:
    header = [
        "# Configuration reference",
        "",
        "Generated from the code by `python -m lune.config_reference` (a test checks it is current).",
        "A config file is YAML with these sections; unknown keys are errors. `lune run CONFIG` takes one;",
        "with no argument it runs the embedded default, `flows/default.yaml`. Relative ingest paths are",
        "resolved against the config file's folder.",
        "",
    ]
    return "\n".join(header + render()) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
