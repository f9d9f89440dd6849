"""Command-line options derived from the config models: the config is the one place where a setting's
name, type, choices, default and help are written.

    parser = argparse.ArgumentParser()
    add_model_options(parser, GenerateConfig, exclude=("split",))
    args = parser.parse_args(["--n", "8", "--openai-concurrency", "4", "--kinds", "negative,attack"])
    overrides_from_args(args, GenerateConfig)
    # {"n": 8, "openai": {"concurrency": 4}, "kinds": ["negative", "attack"]}

Naming: a field is ``--field-name``; a field of a nested section is flattened with dashes
(``lora.rank`` -> ``--lora-rank``); ``prefix`` goes in front (``prefix="gen"``: ``--gen-n``). The
value lands in argparse's own ``dest`` for that flag (``args.lora_rank``), so a hand-written alias
with the same ``dest`` (``--lr`` with ``dest="learning_rate"``) counts as that field.

    config = apply_options(args, GenerateConfig, load_config(path).generate, source="lune generate options")

Values: a ``Literal`` gives choices; a ``bool`` gives ``--x`` / ``--no-x``; a list is comma-separated
and the option may be repeated (the values add up); an optional field takes ``none`` for null; a dict
(or anything else without a plain text form) is JSON. Each value is checked against the field's
type and constraints as it is parsed, so ``--n 0`` fails as ``argument --n: ...``. Options default
to ``argparse.SUPPRESS``: only what the user gave appears in ``args`` and in the overrides, which are
merged over a config section (:func:`merge_overrides`) before the section is validated
(:func:`apply_options` does both), so the model's own validators still run and name the key path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import types
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from lune.core.config_base import ModelT, validate_config

_SEQUENCES = (list, tuple, set, frozenset)
_MISSING = object()


@dataclass(frozen=True)
class _Leaf:
    """One option: a field of ``model`` (``path`` from the top model) and its shown default."""

    path: tuple[str, ...]
    field: FieldInfo
    default: Any  # the value in the top model's default instance; _MISSING when the field is required
    section: type[BaseModel] | None  # the nested model the field belongs to (None: the top model)


def add_model_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    model: type[BaseModel],
    *,
    exclude: Collection[str] = (),
    prefix: str = "",
) -> None:
    """Add one ``--option-name`` per field of ``model`` (nested sections flattened) to ``parser``.

    ``exclude``: field names or dotted paths (``"lora.rank"``; a section name drops all its fields)
    left out, e.g. because the command takes them another way. Help is the field's description and
    its default in the model; nested sections get their own argument group when ``parser`` is a
    parser (argparse does not nest groups).
    """
    groups: dict[type[BaseModel], Any] = {}
    for leaf in _leaves(model):
        dotted = ".".join(leaf.path)
        if any(dotted == name or dotted.startswith(name + ".") for name in exclude):
            continue
        target = parser
        if leaf.section is not None and isinstance(parser, argparse.ArgumentParser):
            if leaf.section not in groups:
                title = f"{_flag(prefix, leaf.path[:-1])}-* options"
                doc = (leaf.section.__doc__ or "").strip().split("\n")[0] or None
                groups[leaf.section] = parser.add_argument_group(title, doc)
            target = groups[leaf.section]
        target.add_argument(
            _flag(prefix, leaf.path),
            dest=_dest(prefix, leaf.path),
            default=argparse.SUPPRESS,
            help=_help(leaf),
            **_value_kwargs(leaf),
        )


def overrides_from_args(args: argparse.Namespace, model: type[BaseModel], *, prefix: str = "") -> dict[str, Any]:
    """The fields of ``model`` the user gave on the command line, as a nested dict
    (``{"lora": {"rank": 8}}``), to merge over a config section before validating it."""
    given = vars(args)
    out: dict[str, Any] = {}
    for leaf in _leaves(model):
        dest = _dest(prefix, leaf.path)
        if dest in given:
            node = out
            for key in leaf.path[:-1]:
                node = node.setdefault(key, {})
            node[leaf.path[-1]] = given[dest]
    return out


def apply_options(
    args: argparse.Namespace,
    model: type[ModelT],
    base: BaseModel | Mapping[str, Any] | None,
    *,
    source: str,
    prefix: str = "",
) -> ModelT:
    """``base`` (a config section, its dict, or None for the model's defaults) with the options the
    user gave laid over it, validated as ``model``; an error names ``source`` and the key path."""
    data = base.model_dump() if isinstance(base, BaseModel) else dict(base or {})
    return validate_config(model, merge_overrides(data, overrides_from_args(args, model, prefix=prefix)), source)


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` laid over it: nested dicts merge key by key, other values replace."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_overrides(out[key], value)
        else:
            out[key] = value
    return out


# -- fields ----------------------------------------------------------------------------------------


def _leaves(
    model: type[BaseModel], path: tuple[str, ...] = (), default: Any = _MISSING, section: type[BaseModel] | None = None
) -> Iterator[_Leaf]:
    """Every scalar field of ``model``, nested sections walked, with the default it has in practice
    (a section's default instance may set other values than its class: ``KindPolicy(top_k=8)``)."""
    if default is _MISSING or default is None:
        try:
            default = model()
        except ValidationError:  # a field without a default: each field's own default then
            default = _MISSING
    for name, field in model.model_fields.items():
        value = getattr(default, name) if default is not _MISSING else _own_default(field)
        nested = _section_model(field.annotation)
        if nested is not None:
            yield from _leaves(nested, (*path, name), value, nested)
        else:
            yield _Leaf((*path, name), field, value, section)


def _own_default(field: FieldInfo) -> Any:
    if field.is_required():
        return _MISSING
    return field.get_default(call_default_factory=True, validated_data={})


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (it, False)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = get_args(annotation)
        rest = [a for a in args if a is not type(None)]
        if len(rest) < len(args):
            return (rest[0] if len(rest) == 1 else Union[tuple(rest)]), True  # noqa: UP007 (a runtime union)
    return annotation, False


def _section_model(annotation: Any) -> type[BaseModel] | None:
    inner, _ = _unwrap_optional(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


# -- argparse pieces -------------------------------------------------------------------------------


def _dest(prefix: str, path: tuple[str, ...]) -> str:
    return "_".join(p for p in (prefix, *path) if p).replace("-", "_")


def _flag(prefix: str, path: tuple[str, ...]) -> str:
    return "--" + _dest(prefix, path).replace("_", "-")


def _value_kwargs(leaf: _Leaf) -> dict[str, Any]:
    annotation, optional = _unwrap_optional(leaf.field.annotation)
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    # Choices are shown in the metavar, not given as argparse `choices`: those would be checked
    # against the parsed value (None for `none`); the parser checks them.
    kwargs: dict[str, Any] = {"type": _parser_for(leaf, optional), "metavar": _metavar(annotation)}
    if _is_sequence(annotation):
        kwargs["action"] = "extend"
    return kwargs


def _is_sequence(annotation: Any) -> bool:
    return get_origin(annotation) in _SEQUENCES or annotation in _SEQUENCES


def _metavar(annotation: Any) -> str:
    """``N``, ``X``, ``TEXT``, ``{a,b}``, ``TEXT[,...]``, ``JSON``: what the option takes."""
    origin = get_origin(annotation)
    if origin is Literal:
        return "{" + ",".join(map(str, get_args(annotation))) + "}"
    if _is_sequence(annotation):
        return f"{_metavar((get_args(annotation) or (str,))[0])}[,...]"
    if origin in (Union, types.UnionType):
        return "|".join(dict.fromkeys(_metavar(a) for a in get_args(annotation) if a is not type(None)))
    if origin is dict or annotation is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return "JSON"
    return {int: "N", float: "X", str: "TEXT"}.get(annotation, "VALUE")


def _parser_for(leaf: _Leaf, optional: bool) -> Callable[[str], Any]:
    """A function text -> the field's value, checked against its type and constraints; its failure
    is an ``argparse.ArgumentTypeError``, which argparse reports with the option's name."""
    field = leaf.field
    adapter: TypeAdapter[Any] = TypeAdapter(
        Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    )

    def parse(text: str) -> Any:
        if optional and text.strip().lower() in ("none", "null"):
            return None
        # The text as is (str, numbers, Literal), as JSON (dicts), else comma-separated (lists).
        readings: list[Any] = [text]
        with contextlib.suppress(ValueError):
            readings.append(json.loads(text))
        readings.append([item.strip() for item in text.split(",") if item.strip()])
        first_error = None
        for reading in readings:
            try:
                value = adapter.validate_python(reading)
            except ValidationError as err:
                first_error = first_error or err
                continue
            if isinstance(value, BaseModel):  # a section given as JSON: as written, for the config's own validators
                return reading
            return list(value) if isinstance(value, (tuple, set, frozenset)) else value
        problem = first_error.errors()[0] if first_error else {"msg": "invalid value"}
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: {problem['msg']}")

    return parse


def _help(leaf: _Leaf) -> str:
    text = leaf.field.description or ""
    annotation, optional = _unwrap_optional(leaf.field.annotation)
    notes = []
    if _is_sequence(annotation):
        notes.append("comma-separated, repeatable")
    if optional and annotation is not bool:
        notes.append("`none` for null")
    if leaf.default is _MISSING:
        notes.append("required")
    elif not (leaf.default is None and "default" in text):  # the description says what null does
        notes.append(f"default: {_shown(leaf.default)}")
    # argparse %-formats help texts
    return f"{text} ({'; '.join(notes)})".strip().replace("%", "%%")


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(_shown(v) for v in value) if value else "empty"
    if isinstance(value, BaseModel):
        return json.dumps(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)
