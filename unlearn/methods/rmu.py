"""RMU (Li et al., 2024, "The WMDP Benchmark", representation misdirection for unlearning): the hidden
states of one layer pushed towards a fixed random vector on forget answers, held at the frozen
model's on retain answers.

As open-unlearning's ``src/trainer/unlearn/rmu.py`` (from the WMDP code): the direction is uniform on
[0, 1)^H, normalised, times the steering coefficient c; both distances are the mean over the width of
the squared difference, averaged over each sequence's answer positions (labels not ignored: the
answer tokens and EOS), then over the batch (``losses.activation_mse``). The frozen model is the base
with the adapter switched off, and only the layers up to the steered one carry adapters (the layers
after it cannot move its output).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pydantic import Field

from lune.data.errors import LuneError
from lune.unlearn import losses
from lune.unlearn.methods.grad_ascent import GradAscent
from lune.unlearn.trainer import MethodOptions

if TYPE_CHECKING:
    from lune.unlearn.config import UnlearnConfig
    from lune.unlearn.inputs import UnlearnData

# open-unlearning's RMU config (configs/trainer/RMU.yaml) uses c = 2, with its WMDP experiment on
# zephyr-7b, hidden size 4096. A vector of norm c spreads c / sqrt(H) over each coordinate, while a
# model's hidden states have coordinates of a similar size at every width: c scales with sqrt(H)
# to keep the target's size relative to the hidden states (0.5 at the tiny model's 256, 0.75 at
# SmolLM2-135M's 576).
REFERENCE_STEERING = 2.0
REFERENCE_WIDTH = 4096


class RmuOptions(MethodOptions):
    """Settings of ``rmu`` (the retain term's weight, open-unlearning's ``alpha`` = 1, is ``unlearn.retain_weight``)."""

    layer: int | None = Field(
        None,
        ge=0,
        description="decoder layer (0-based) whose output is steered; default: a third of the depth, "
        "num_hidden_layers // 3 (1 of the tiny model's 4, 10 of SmolLM2-135M's 30)",
    )
    steering_coeff: float | None = Field(
        None,
        gt=0,
        description="norm c of the control vector c u; default: open-unlearning's 2 (set for width 4096) "
        "times sqrt(hidden_size / 4096), 0.5 on the tiny model",
    )
    direction_seed: int = Field(0, description="seed of the random direction u")


def default_layer(num_layers: int) -> int:
    """The steered layer when none is set: a third of the depth, rounded down."""
    return num_layers // 3


def default_steering(hidden_size: int) -> float:
    """The steering coefficient when none is set: ``2 * sqrt(hidden_size / 4096)`` (module comment)."""
    return REFERENCE_STEERING * math.sqrt(hidden_size / REFERENCE_WIDTH)


def control_vector(hidden_size: int, coefficient: float, seed: int) -> Any:
    """``c u``: ``u`` uniform on [0, 1)^H from its own generator (the global random state is left alone),
    normalised to norm 1, times ``c``. -> [H] float32."""
    import torch

    u = torch.rand(hidden_size, generator=torch.Generator().manual_seed(seed))
    return coefficient * u / u.norm()


class Rmu(GradAscent):
    """Trains on grad_ascent's pairs (the forget answers) and a batch of retain facts each step,
    minimising ``losses.rmu_loss`` of the steered layer's hidden states, with adapters on the layers
    up to that one only."""

    name = "rmu"
    Options = RmuOptions

    def __init__(self, model: Any, tokenizer: Any, data: UnlearnData, config: UnlearnConfig, *, progress: bool = True):
        options: RmuOptions = config.method_options
        num_layers = model.config.num_hidden_layers
        self.layer = default_layer(num_layers) if options.layer is None else options.layer
        if self.layer >= num_layers:
            raise LuneError(
                f"rmu: layer {self.layer} does not exist; the model has {num_layers} (0 to {num_layers - 1})"
            )
        hidden_size = model.config.hidden_size
        self.steering = options.steering_coeff or default_steering(hidden_size)
        self.control = control_vector(hidden_size, self.steering, options.direction_seed)
        super().__init__(model, tokenizer, data, config, progress=progress)
        self.control = self.control.to(self.device)

    def adapted_layers(self, model: Any) -> list[int]:
        # Layers above the steered one cannot change its activations: adapting them only costs time.
        own = list(range(self.layer + 1))
        chosen = self.config.lora.layers
        if chosen is None:
            return own
        narrowed = [layer for layer in own if layer in chosen]
        if not narrowed:
            raise LuneError(
                f"rmu: unlearn.lora.layers {chosen} leaves no layer at or below the steered layer {self.layer}"
            )
        return narrowed

    def retain_use(self) -> str | None:
        return "its retain term"

    def loss(self, batch: dict[str, Any], retain_batch: dict[str, Any] | None) -> Any:
        if retain_batch is None:
            raise LuneError("rmu needs retain facts")
        return losses.rmu_loss(
            self.forward(batch, hidden_layer=self.layer),
            self.control,
            batch["labels"] != losses.IGNORE_INDEX,
            self.forward(retain_batch, hidden_layer=self.layer),
            self.frozen_forward(retain_batch, hidden_layer=self.layer),
            retain_batch["labels"] != losses.IGNORE_INDEX,
            self.config.retain_weight,
        )
