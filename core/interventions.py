"""Gated low-rank representation edits (GRUN's LoReFT interventions) attached to a frozen causal LM
with forward hooks, and saved as their own artefact.

At each chosen decoder layer ``l`` the residual stream after the layer, at the last prompt position
of each sequence only, becomes

    h' = h + g(h) * R^T (W h + b - R h)

``R`` [rank, hidden] with orthonormal rows (``torch.nn.utils.parametrizations.orthogonal``), ``W h + b``
a ``Linear(hidden, rank)``, and ``g(h) = sigmoid(gate(h))`` a soft gate (``gate``: a ``Linear(hidden, 1)``,
or an MLP hidden -> 256 -> 64 -> 1 with ReLU), as in GRUN (arXiv 2502.17823, reference code
renjie3/GRUN ``pyreft/interventions.py``). The model's weights are untouched: :func:`attach` registers
hooks and :meth:`InterventionHandle.remove` takes them off again.

Which position is "the last prompt position" (in this order):

1. explicit positions set with :meth:`InterventionHandle.at` (training knows them from the labels);
2. the last token of the last occurrence of the prompt's closing tokens (``prompt_marker``: the token
   ids every rendered prompt ends with, e.g. ``\\nAnswer:`` or a chat template's assistant header),
   among attended tokens: right for a prompt alone (left- or right-padded) and for a prompt followed
   by its answer (teacher-forced likelihoods), without the caller knowing anything;
3. else the last attended token (a prompt without the closing tokens).

Decoding steps with a KV cache (sequence length 1) are not edited: generated tokens see the edit
through the cache, as in the reference. The edit is computed in float32 and added in the model's
dtype, so a gate forced shut (``force_gate(0.0)``) leaves every hidden state bit for bit unchanged.

Artefact: a folder with ``interventions.json`` (kind, layers, position rule, rank, gate, hidden size,
prompt marker) and ``interventions.safetensors`` (per layer ``layers.<l>.rotation`` [rank, hidden] =
R itself, ``layers.<l>.source.weight`` / ``.bias``, ``layers.<l>.gate.*``).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lune.data.errors import LuneError

CONFIG_FILE = "interventions.json"
WEIGHTS_FILE = "interventions.safetensors"
KIND = "gated_loreft"
POSITION = "last_prompt"
MLP_WIDTHS = (256, 64)  # the reference's 3-layer gate: hidden -> 256 -> 64 -> 1

GateKind = Literal["linear", "mlp"]


@dataclass(frozen=True)
class InterventionConfig:
    """What an intervention artefact holds (``interventions.json``)."""

    layers: list[int]
    hidden_size: int
    rank: int = 4
    gate: GateKind = "linear"
    position: str = POSITION
    kind: str = KIND
    prompt_marker: list[int] = field(default_factory=list)  # token ids every prompt ends with ([]: none)
    method: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = CONFIG_FILE) -> InterventionConfig:
        if data.get("kind") != KIND:
            raise LuneError(f"{where}: kind {data.get('kind')!r}, expected {KIND!r}")
        if data.get("position", POSITION) != POSITION:
            raise LuneError(f"{where}: position {data.get('position')!r} is not supported (only {POSITION!r})")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


_EDIT_CLASS: Any = None


def __getattr__(name: str) -> Any:  # the class is built on first use: importing this module needs no torch
    if name == "GatedLoReFT":
        return _edit_class()
    raise AttributeError(name)


def _edit_class() -> Any:
    global _EDIT_CLASS
    if _EDIT_CLASS is None:
        _EDIT_CLASS = _define_edit_class()
    return _EDIT_CLASS


def new_edit(hidden_size: int, rank: int = 4, gate: GateKind = "linear", *, orthogonal: bool = True) -> Any:
    """A fresh :class:`GatedLoReFT` (a ``torch.nn.Module``)."""
    return _edit_class()(hidden_size, rank, gate, orthogonal=orthogonal)


def _define_edit_class() -> Any:
    import torch

    class GatedLoReFT(torch.nn.Module):
        """One layer's gated LoReFT edit (module docstring). ``orthogonal``: keep R orthonormal through
        training (a parametrization); off for a loaded, frozen edit (R then used exactly as saved)."""

        def __init__(self, hidden_size: int, rank: int = 4, gate: GateKind = "linear", *, orthogonal: bool = True):
            import torch

            super().__init__()
            if rank < 1 or rank > hidden_size:
                raise LuneError(f"intervention rank {rank}: must be between 1 and the hidden size {hidden_size}")
            self.rotation = torch.nn.Linear(hidden_size, rank, bias=False)
            if orthogonal:
                # Householder map (torch's default for a wide matrix). Weight decay on it collapses R to 0
                # in one AdamW step, hence weight_decay=0 for R (see unlearn/methods/grun.py).
                self.rotation = torch.nn.utils.parametrizations.orthogonal(self.rotation)
            self.source = torch.nn.Linear(hidden_size, rank)
            if gate == "linear":
                self.gate = torch.nn.Sequential(torch.nn.Linear(hidden_size, 1))
            elif gate == "mlp":
                a, b = MLP_WIDTHS
                self.gate = torch.nn.Sequential(
                    torch.nn.Linear(hidden_size, a),
                    torch.nn.ReLU(),
                    torch.nn.Linear(a, b),
                    torch.nn.ReLU(),
                    torch.nn.Linear(b, 1),
                )
            else:
                raise LuneError(f"intervention gate {gate!r}: expected 'linear' or 'mlp'")

        @property
        def R(self) -> Any:  # the paper's name
            """R [rank, hidden], orthonormal rows."""
            return self.rotation.weight

        def gate_logit(self, h: Any) -> Any:
            """``gate(h)``, before the sigmoid: [..., hidden] -> [...]."""
            return self.gate(h.float()).squeeze(-1)

        def gate_value(self, h: Any) -> Any:
            """``g(h) = sigmoid(gate(h))``: [..., hidden] -> [...]."""
            return self.gate_logit(h).sigmoid()

        def edit(self, h: Any) -> Any:
            """``R^T (W h + b - R h)`` (float32): [..., hidden] -> [..., hidden]."""
            x = h.float()
            # R once, contiguous: the parametrization may hand back a transposed view, and a matmul
            # on another layout rounds differently (a reloaded R, saved contiguous, must give the same)
            R = self.R.contiguous()
            return (self.source(x) - x @ R.T) @ R

        def tensors(self) -> dict[str, Any]:
            """What the artefact stores: R itself, W, b and the gate (detached copies, on the CPU)."""

            def copy(t: Any) -> Any:
                return t.detach().to("cpu", copy=True).contiguous()

            out = {"rotation": copy(self.R)}
            out.update({f"source.{k}": copy(v) for k, v in self.source.state_dict().items()})
            out.update({f"gate.{k}": copy(v) for k, v in self.gate.state_dict().items()})
            return out

        def load_tensors(self, tensors: Mapping[str, Any]) -> None:
            """Put :meth:`tensors` back (R exactly when not parametrized; through the parametrization's
            right inverse, to about 1e-7, when it is)."""
            import torch

            with torch.no_grad():
                if torch.nn.utils.parametrize.is_parametrized(self.rotation):
                    self.rotation.weight = tensors["rotation"].to(self.source.weight.device)
                else:
                    self.rotation.weight.copy_(tensors["rotation"])
            self.source.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("source.")})
            self.gate.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("gate.")})

    return GatedLoReFT


@dataclass
class Interventions:
    """A set of per-layer edits and their config: what :func:`attach` applies and :func:`save` writes."""

    config: InterventionConfig
    modules: dict[int, Any]  # layer -> GatedLoReFT

    @classmethod
    def create(
        cls,
        layers: Sequence[int],
        hidden_size: int,
        *,
        rank: int = 4,
        gate: GateKind = "linear",
        prompt_marker: Sequence[int] = (),
        method: str | None = None,
        seed: int = 0,
    ) -> Interventions:
        """Fresh, trainable edits at ``layers`` (initialised from ``seed``)."""
        import torch

        if not layers:
            raise LuneError("interventions: no layers chosen")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            modules = {int(layer): new_edit(hidden_size, rank, gate) for layer in sorted(set(layers))}
        config = InterventionConfig(
            sorted(modules), hidden_size, rank, gate, prompt_marker=list(prompt_marker), method=method
        )
        return cls(config, modules)

    def parameters(self) -> Iterator[Any]:
        for module in self.modules.values():
            yield from module.parameters()

    def to(self, device: Any) -> Interventions:
        for module in self.modules.values():
            module.to(device)
        return self


def save(interventions: Interventions, folder: str | Path) -> Path:
    """Write ``interventions.json`` and ``interventions.safetensors`` into ``folder``; return it."""
    from safetensors.torch import save_file

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"layers.{layer}.{name}": value
        for layer, module in interventions.modules.items()
        for name, value in module.tensors().items()
    }
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt", "kind": KIND})
    config = interventions.config.to_json()
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def is_intervention_dir(path: str | Path) -> bool:
    """True when ``path`` holds an intervention artefact (``interventions.json``)."""
    return (Path(path) / CONFIG_FILE).is_file()


def load(folder: str | Path, *, trainable: bool = False, device: Any = None) -> Interventions:
    """The artefact in ``folder``. ``trainable``: keep R orthonormal under further training
    (parametrized); else R is used exactly as saved and nothing requires grad."""
    from safetensors.torch import load_file

    where = Path(folder)
    if not is_intervention_dir(where):
        raise LuneError(f"{where}: no {CONFIG_FILE}; pass a folder written by `lune unlearn --method grun`")
    try:
        raw = json.loads((where / CONFIG_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LuneError(f"{where / CONFIG_FILE}: not valid JSON ({err.msg} at line {err.lineno})") from None
    config = InterventionConfig.from_json(raw, str(where / CONFIG_FILE))
    weights = where / WEIGHTS_FILE
    if not weights.is_file():
        raise LuneError(f"{where}: {WEIGHTS_FILE} is missing")
    tensors = load_file(str(weights))
    modules: dict[int, Any] = {}
    for layer in config.layers:
        prefix = f"layers.{layer}."
        mine = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if "rotation" not in mine:
            raise LuneError(f"{weights}: no tensors for layer {layer} (named in {CONFIG_FILE})")
        module = new_edit(config.hidden_size, config.rank, config.gate, orthogonal=trainable)
        module.load_tensors(mine)
        module.requires_grad_(trainable)
        modules[layer] = module
    loaded = Interventions(config, modules)
    return loaded.to(device) if device is not None else loaded


# -- finding the prompt's last position ---------------------------------------------------------


def prompt_marker(tokenizer: Any, *, samples: Sequence[str] = ("Who wrote it?", "Name the city.", "x 42")) -> list[int]:
    """The token ids every rendered prompt ends with: the longest common suffix of
    ``core.prompt_format.render_prompt`` of a few unlike questions, tokenised as the pipeline
    tokenises prompts (with special tokens). [] when they share no suffix."""
    from lune.core.prompt_format import render_prompt

    rows = [tokenizer(render_prompt(tokenizer, q), add_special_tokens=True)["input_ids"] for q in samples]
    suffix: list[int] = []
    for column in zip(*(reversed(r) for r in rows)):
        if len(set(column)) != 1:
            break
        suffix.append(column[0])
    return list(reversed(suffix))


def last_prompt_positions(input_ids: Any, attention_mask: Any | None, marker: Sequence[int]) -> Any:
    """Per row, the index of the prompt's last token (rules 2 and 3 of the module docstring).
    input_ids, attention_mask: [B, T] (either padding side) -> [B] long."""
    import torch

    batch, width = input_ids.shape
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    index = torch.arange(width, device=input_ids.device).expand(batch, width)
    last_attended = torch.where(mask, index, torch.full_like(index, -1)).max(-1).values.clamp_min(0)
    k = len(marker)
    if k == 0 or k > width:
        return last_attended
    target = torch.tensor(list(marker), device=input_ids.device, dtype=input_ids.dtype)
    windows = input_ids.unfold(1, k, 1)  # [B, T-k+1, k]
    hits = (windows == target).all(-1) & mask.unfold(1, k, 1).all(-1)  # [B, T-k+1]
    ends = index[:, : width - k + 1] + (k - 1)
    found = torch.where(hits, ends, torch.full_like(ends, -1)).max(-1).values
    return torch.where(found >= 0, found, last_attended)


def positions_from_labels(labels: Any, ignore_index: int = -100) -> Any:
    """Training batches: the last prompt token is the one before the first scored label. [B, T] -> [B]."""
    import torch

    scored = labels != ignore_index
    width = labels.shape[1]
    index = torch.arange(width, device=labels.device).expand_as(labels)
    first = torch.where(scored, index, torch.full_like(index, width)).min(-1).values
    return (first - 1).clamp(0, width - 1)


# -- attaching ----------------------------------------------------------------------------------


def decoder_layers(model: Any) -> Any:
    """The model's decoder layers (a ``ModuleList``): ``model.model.layers`` (Llama, Mistral, Qwen,
    SmolLM2), under a PEFT wrapper too; else the ``ModuleList`` with ``num_hidden_layers`` entries."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(getattr(base, "model", None), "layers", None)
    if isinstance(layers, torch.nn.ModuleList):
        return layers
    count = getattr(getattr(base, "config", None), "num_hidden_layers", None)
    for _, module in base.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise LuneError(f"interventions: no decoder layers found on {type(base).__name__}")


_ATTACHED: weakref.WeakKeyDictionary[Any, InterventionHandle] = weakref.WeakKeyDictionary()


def attached(model: Any) -> InterventionHandle | None:
    """The handle of the interventions attached to ``model`` by :func:`attach` (None: none are),
    e.g. to read the gates of a forward (``handle.gates``) where only the model was handed on."""
    return _ATTACHED.get(model)


class InterventionHandle:
    """Interventions attached to a model (:func:`attach`): ``model`` is the model they are on;
    :meth:`remove` takes them off. ``gate_logits`` holds, after each edited forward, one [B] tensor
    of gate logits per layer (layer order; with grad while training); ``gates`` their sigmoids."""

    def __init__(self, model: Any, interventions: Interventions):
        self.model = model
        self.interventions = interventions
        self.enabled = True
        self.gate_logits: list[Any] = []
        self._positions: Any = None  # set by `at`
        self._current: Any = None  # positions of the forward running now
        self._forced: float | None = None
        self._hooks: list[Any] = []

    @property
    def config(self) -> InterventionConfig:
        return self.interventions.config

    @property
    def gates(self) -> list[Any]:
        """The last forward's gate values ``g(h)``, one [B] tensor per layer."""
        return [logit.sigmoid() for logit in self.gate_logits]

    def remove(self) -> Any:
        """Take every hook off; return the bare model."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        if _ATTACHED.get(self.model) is self:
            del _ATTACHED[self.model]
        return self.model

    @contextmanager
    def at(self, positions: Any) -> Iterator[None]:
        """Edit these positions ([B] indices into the padded batch) in the forwards inside."""
        previous, self._positions = self._positions, positions
        try:
            yield
        finally:
            self._positions = previous

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """No edit inside (the frozen base model: NPO's reference)."""
        previous, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = previous

    @contextmanager
    def force_gate(self, value: float) -> Iterator[None]:
        """Every gate reads ``value`` inside (0: shut; the edit is then exactly nothing)."""
        previous, self._forced = self._forced, float(value)
        try:
            yield
        finally:
            self._forced = previous

    # hooks -------------------------------------------------------------------------------------

    def _before_forward(self, module: Any, args: tuple, kwargs: dict) -> None:
        self.gate_logits = []
        self._current = None
        if not self.enabled:
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if self._positions is not None:
            self._current = self._positions
        elif input_ids is not None:
            if input_ids.shape[1] > 1:  # a decoding step with a cache (length 1) is not edited
                self._current = last_prompt_positions(input_ids, mask, self.config.prompt_marker)
        elif mask is not None and mask.shape[1] > 1:  # inputs_embeds: the mask is all there is
            self._current = last_prompt_positions(mask, mask, [])

    def _layer_hook(self, layer: int) -> Any:
        def hook(module: Any, args: tuple, output: Any) -> Any:
            import torch

            positions = self._current
            hidden = output[0] if isinstance(output, tuple) else output
            if not self.enabled or positions is None or hidden.shape[1] <= 1:
                return None
            edit_module = self.interventions.modules[layer]
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            at = positions.to(hidden.device)
            h = hidden[rows, at]  # [B, H]
            logit = edit_module.gate_logit(h)  # [B]
            self.gate_logits.append(logit)
            gate = logit.sigmoid()
            if self._forced is not None:
                gate = torch.full_like(gate, self._forced)
            delta = (gate.unsqueeze(-1) * edit_module.edit(h)).to(hidden.dtype)  # [B, H]
            edited = hidden.index_put((rows, at), h + delta)  # out of place: autograd-safe
            return (edited, *output[1:]) if isinstance(output, tuple) else edited

        return hook


def attach(model: Any, interventions: Interventions | str | Path, *, tokenizer: Any = None) -> InterventionHandle:
    """Attach ``interventions`` (or the artefact folder) to ``model``; return the handle
    (``handle.model``: the model, edited from now on; ``handle.remove()``: take them off).
    ``tokenizer``: fills in the prompt marker when the interventions have none."""
    import dataclasses

    if not isinstance(interventions, Interventions):
        interventions = load(interventions)
    layers = decoder_layers(model)
    for layer in interventions.config.layers:
        if not 0 <= layer < len(layers):
            raise LuneError(f"interventions at layer {layer}: the model has {len(layers)} (0 to {len(layers) - 1})")
    hidden = getattr(getattr(model, "config", None), "hidden_size", interventions.config.hidden_size)
    if hidden != interventions.config.hidden_size:
        raise LuneError(
            f"interventions made for hidden size {interventions.config.hidden_size}, the model has {hidden}"
        )
    if tokenizer is not None and not interventions.config.prompt_marker:
        interventions.config = dataclasses.replace(interventions.config, prompt_marker=prompt_marker(tokenizer))
    interventions.to(next(model.parameters()).device)
    handle = InterventionHandle(model, interventions)
    top = model.get_base_model() if hasattr(model, "get_base_model") else model

    # Hooks are plain closures over the handle, not bound methods: a deep copy of the model (the
    # quantization attack's) then keeps hooks that share this handle's state instead of a stale copy.
    def before(module: Any, args: tuple, kwargs: dict) -> None:
        handle._before_forward(module, args, kwargs)

    handle._hooks.append(top.register_forward_pre_hook(before, with_kwargs=True, prepend=True))
    for layer in interventions.config.layers:
        # prepend: run before transformers' output-capturing hooks, so hidden_states show the edit
        handle._hooks.append(layers[layer].register_forward_hook(handle._layer_hook(layer), prepend=True))
    _ATTACHED[model] = handle
    return handle
