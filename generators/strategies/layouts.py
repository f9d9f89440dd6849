"""Prompt layouts: how a strategy's task is laid out for the model that writes the candidates.

- ``instruct``: the task as an instruction: system + user messages for a model with a chat template,
  else a plain prompt ending in a cue ("False answer:"), with a JSON schema when ``structured``. What
  instruction-tuned models of a few billion parameters and up follow.
- ``few_shot``: two worked examples in a fixed pattern, then the fact, cut at the end of the line::

      Q: Where was the painter Maria Alvarez born?
      True: Maria Alvarez was born in Lisbon, Portugal.
      False: Maria Alvarez was born in Oslo, Norway.

      ...
      Q: {question}
      True: {answer}
      False:

  Plain text, no messages and no JSON schema. A small model (SmolLM2-135M-Instruct) continues a
  pattern far better than it follows an instruction: asked plainly it writes "False answer:" or
  junk, and in JSON mode it fills the string with noise. A strategy without examples (the attack
  families) keeps ``instruct``.
- ``auto``: ``few_shot`` for a model under :data:`FEW_SHOT_MAX_PARAMETERS` parameters, counted from the
  tensor shapes in its safetensors headers, else ``instruct`` (also when the size is unknown: a
  served model, a folder without safetensors).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from math import prod
from pathlib import Path
from typing import Literal

PromptLayout = Literal["auto", "instruct", "few_shot"]
LAYOUTS: tuple[str, ...] = ("auto", "instruct", "few_shot")
FEW_SHOT_MAX_PARAMETERS = 1_000_000_000  # under this, "auto" lays prompts out as few-shot
FEW_SHOT_STOP = ["\n"]  # each example is one line: the candidate ends with it
SHOT_SEPARATOR = "\n\n"


def safetensors_parameters(folder: str | Path) -> int | None:
    """Parameters of the model in ``folder``: the product of every tensor shape in its ``*.safetensors``
    headers (read, never loaded). None when the folder holds no safetensors file."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with path.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
        total += sum(prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total


def resolve_layout(layout: str, parameters: int | None) -> str:
    """The layout ``layout`` means for a model of ``parameters`` parameters (None: unknown)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown prompt layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    if layout != "auto":
        return layout
    return "few_shot" if parameters is not None and parameters < FEW_SHOT_MAX_PARAMETERS else "instruct"


def render_shots(template: str, examples: tuple[Mapping[str, str], ...], fields: Mapping[str, str]) -> str:
    """The few-shot prompt: each example's ``template`` line(s) followed by its ``output``, then the
    fact's, left open after the cue for the model to complete."""
    shots = [f"{template.format(**example)} {example['output']}" for example in examples]
    return SHOT_SEPARATOR.join([*shots, template.format(**fields)])


_PARAMETERS: dict[str, int] = {}  # found counts only: a folder that does not exist yet may be written later


def model_parameters(ref: str | None) -> int | None:
    """Parameters of the model ``ref`` (a folder, a GGUF file or a known name, ``core.model_refs``),
    None when it is no local model (a served name, a Hub id) or holds no safetensors."""
    if not ref:
        return None
    if ref in _PARAMETERS:
        return _PARAMETERS[ref]
    from lune.core.model_refs import resolve_model
    from lune.data.errors import LuneError

    try:
        folder = resolve_model(ref, "model")
    except (LuneError, OSError, ValueError):
        return None
    count = safetensors_parameters(folder) if Path(folder).is_dir() else None
    if count is not None:
        _PARAMETERS[ref] = count
    return count
