"""LoRA adapters on a frozen backbone (PEFT), and the gradient-checkpointing trap.

LUNE trains only the low-rank update ``W + (alpha / r) B A`` of each adapted projection; ``B``
starts at zero, so the adapted model starts equal to the base model. By default every attention
and MLP projection is adapted (PEFT's ``all-linear``: every ``nn.Linear`` but the output head).

The trap: with (reentrant) gradient checkpointing, a checkpointed block whose inputs do not require
grad returns outputs that do not either; with the embeddings frozen nothing upstream requires
grad, so the LoRA matrices inside get no gradient and ``B`` stays zero: training "runs" and changes
nothing. ``enable_input_require_grads`` makes the embedding output require grad and fixes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lune.data.errors import LuneError

if TYPE_CHECKING:  # the config imports the methods, which import this module
    from lune.unlearn.config import LoraSettings


def lora_config(
    model: Any, settings: Any, *, layers: Sequence[int] | None = None, modules_to_save: Sequence[str] = ()
) -> Any:
    """The PEFT ``LoraConfig`` of ``settings`` (rank, alpha, dropout, target modules), for causal LM.
    ``layers``: adapt only these decoder layers; ``modules_to_save``: modules trained in full beside
    the adapter (a copy saved with it)."""
    from peft import LoraConfig, TaskType

    target = settings.target_modules
    if target == "all-linear" and layers is not None:  # PEFT takes layers_to_transform with a list only
        target = linear_module_names(model)
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=target if target == "all-linear" else list(target),
        layers_to_transform=list(layers) if layers is not None else None,
        modules_to_save=list(modules_to_save) or None,
        bias="none",
    )


def attach_lora(model: Any, settings: LoraSettings, *, seed: int = 0, layers: Sequence[int] | None = None) -> Any:
    """Wrap ``model`` in a PEFT LoRA model (backbone frozen, adapters trainable); return the wrapper.
    ``layers``: adapt only these decoder layers (0-based; PEFT's ``layers_to_transform``), default all."""
    import torch
    from peft import get_peft_model

    if layers is not None:
        check_layers(model, layers)
    config = lora_config(model, settings, layers=layers)
    torch.manual_seed(seed)  # A's initialisation
    peft_model = get_peft_model(model, config)
    for name, param in peft_model.named_parameters():
        if "lora_" not in name and param.requires_grad:  # get_peft_model freezes; make sure
            param.requires_grad_(False)
    return peft_model


def check_layers(model: Any, layers: Sequence[int]) -> None:
    """Refuse layer indices the model does not have (PEFT would adapt nothing there, silently)."""
    num_layers = model.config.num_hidden_layers
    missing = [layer for layer in layers if not 0 <= layer < num_layers]
    if missing:
        raise LuneError(
            f"unlearn.lora.layers: layer {missing[0]} does not exist; the model has {num_layers} decoder "
            f"layers (0 to {num_layers - 1})"
        )


def linear_module_names(model: Any) -> list[str]:
    """What PEFT's ``all-linear`` adapts, as module names: every ``nn.Linear`` but the output head."""
    import torch

    head = model.get_output_embeddings()
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and m is not head
        }
    )


def enable_gradient_checkpointing(model: Any) -> None:
    """Turn on reentrant gradient checkpointing and guard the PEFT trap (module docstring).

    Reentrant on purpose: it is the variant older and remote-code models use, and the one where the
    trap bites, so the guard is exercised (tests/test_unlearn.py checks the B matrices move).
    """
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.enable_input_require_grads()
    if hasattr(model, "config"):
        model.config.use_cache = False  # a KV cache and checkpointing do not mix in training


def trainable_state(model: Any) -> dict[str, Any]:
    """Copies of the trainable tensors (the adapters; every weight under full_ft): the best checkpoint."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def restore_state(model: Any, state: dict[str, Any]) -> None:
    """Put tensors saved by :func:`trainable_state` back in place."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)
