"""Gradient ascent (Jang et al., 2023; TOFU's ``grad_ascent``): push the true answers' likelihood down."""

from __future__ import annotations

from typing import Any

from lune.unlearn import losses
from lune.unlearn.trainer import UnlearnTrainer


class GradAscent(UnlearnTrainer):
    """Maximises the NLL of the true answers (``losses.grad_ascent_loss``) over the LoRA adapters."""

    name = "grad_ascent"

    def training_pairs(self) -> list[tuple[str, str]]:
        """(prompt, true answer): each forget question, and each train prompt of the chosen kinds."""
        answer = {f["fact_id"]: f["answer"] for f in self.data.forget}
        pairs = []
        if "question" in self.config.prompt_kinds:
            pairs += [(f["question"], f["answer"]) for f in self.data.forget]
        pairs += [
            (r["prompt"], answer[r["fact_id"]])
            for r in self.data.train
            if r["prompt_kind"] in self.config.prompt_kinds and r["fact_id"] in answer
        ]
        return pairs

    def loss(self, batch: dict[str, Any], retain_batch: dict[str, Any] | None) -> Any:
        return losses.grad_ascent_loss(self.forward(batch), batch["labels"])
