"""LUNE (arXiv 2512.07375): LoRA on the frozen model, trained to prefer the curated negatives."""

from __future__ import annotations

from typing import Any

from lune.data.errors import LuneError
from lune.unlearn import losses
from lune.unlearn.trainer import UnlearnTrainer


class Lune(UnlearnTrainer):
    """Minimises ``-log p(negative | prompt)`` (``losses.lune_loss``) on the set's negatives, with every
    chosen prompt kind (questions, paraphrases, attacks), over the LoRA adapters only."""

    name = "lune"

    def training_pairs(self) -> list[tuple[str, str]]:
        pairs = [
            (r["prompt"], r["target"])
            for r in self.data.train
            if r["target_kind"] == "negative" and r["prompt_kind"] in self.config.prompt_kinds
        ]
        if not pairs:
            raise LuneError(
                f"{self.data.source}: no 'negative' train rows with prompt kinds "
                f"{self.config.prompt_kinds}: {self.name} trains on negatives; curate some first"
            )
        return pairs

    def loss(self, batch: dict[str, Any], retain_batch: dict[str, Any] | None) -> Any:
        return losses.lune_loss(self.forward(batch), batch["labels"])
