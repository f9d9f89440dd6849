"""Gradient difference (Liu et al., 2022; TOFU's ``grad_diff``): ascent on the forget answers, descent
on retain facts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lune.data.errors import LuneError
from lune.unlearn import losses
from lune.unlearn.methods.grad_ascent import GradAscent

if TYPE_CHECKING:
    from lune.unlearn.config import UnlearnConfig


class GradDiff(GradAscent):
    """Trains on grad_ascent's pairs and a batch of retain facts each step, minimising
    ``-NLL(forget) + retain_weight * NLL(retain)`` (``losses.grad_diff_loss``)."""

    name = "grad_diff"

    @classmethod
    def check_config(cls, config: UnlearnConfig) -> None:
        if config.retain_anchor == "nll":
            raise ValueError(
                f"{cls.name} already descends on retain facts (weight: retain_weight); "
                "leave retain_anchor at 'none' or use 'kl'"
            )

    def retain_use(self) -> str | None:
        return "its retain term"

    def loss(self, batch: dict[str, Any], retain_batch: dict[str, Any] | None) -> Any:
        if retain_batch is None:
            raise LuneError("grad_diff needs retain facts")
        return losses.grad_diff_loss(
            self.forward(batch),
            batch["labels"],
            self.forward(retain_batch),
            retain_batch["labels"],
            self.config.retain_weight,
        )
