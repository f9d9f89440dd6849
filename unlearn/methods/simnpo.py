"""SimNPO (Fan et al., 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM
Unlearning"): NPO without a reference model, on the length-normalised NLL, with a margin."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from lune.data.errors import LuneError
from lune.unlearn import losses
from lune.unlearn.methods.grad_diff import GradDiff
from lune.unlearn.trainer import MethodOptions


class SimNpoOptions(MethodOptions):
    """Settings of ``simnpo`` (defaults: open-unlearning's ``configs/trainer/SimNPO.yaml``, its TOFU setting;
    the retain term's weight, open-unlearning's ``alpha`` = 1, is ``unlearn.retain_weight``)."""

    beta: float = Field(4.5, gt=0, description="inverse temperature beta")
    delta: float = Field(0.0, description="margin delta on the mean token NLL (the paper's gamma is beta * delta)")
    forget_weight: float = Field(
        0.125, gt=0, description="weight of the forget term (open-unlearning's gamma, the paper's npo_coeff)"
    )


class SimNpo(GradDiff):
    """Trains on grad_ascent's pairs and a batch of retain facts each step, minimising
    ``forget_weight * -(2/beta) mean log sigmoid(beta * (NLL/|y| - delta)) + retain_weight * NLL(retain)``
    (``losses.simnpo_loss``; the sign as in open-unlearning's ``src/trainer/unlearn/simnpo.py``)."""

    name = "simnpo"
    Options = SimNpoOptions

    def loss(self, batch: dict[str, Any], retain_batch: dict[str, Any] | None) -> Any:
        if retain_batch is None:
            raise LuneError("simnpo needs retain facts")
        return losses.simnpo_loss(
            self.forward(batch),
            batch["labels"],
            self.forward(retain_batch),
            retain_batch["labels"],
            beta=self.options.beta,
            delta=self.options.delta,
            forget_weight=self.options.forget_weight,
            retain_weight=self.config.retain_weight,
        )
