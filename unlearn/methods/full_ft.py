"""Full fine-tuning with LUNE's loss: every weight trains, no adapter (the cost comparison the paper makes)."""

from __future__ import annotations

import copy

from pydantic import Field

from lune.unlearn.examples import Example
from lune.unlearn.methods.lune import Lune
from lune.unlearn.trainer import MethodOptions


class FullFineTuneOptions(MethodOptions):
    """Settings of ``full_ft``."""

    learning_rate: float | None = Field(
        None, gt=0, description="AdamW learning rate (default: unlearn.learning_rate / 10: every weight moves)"
    )


class FullFineTune(Lune):
    """LUNE's pairs and loss on every weight; a frozen copy of the model is the KL anchor's reference."""

    name = "full_ft"
    uses_lora = False
    Options = FullFineTuneOptions

    def learning_rate(self) -> float:
        return self.options.learning_rate or self.config.learning_rate / 10

    def prepare(self, examples: list[Example]) -> None:
        if self.config.retain_anchor == "kl":
            self.reference = copy.deepcopy(self.model).eval()
            for param in self.reference.parameters():
                param.requires_grad_(False)
