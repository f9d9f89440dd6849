"""NPO (Zhang et al., 2024): negative preference optimisation on the forget answers, against the
frozen model."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from lune.unlearn import losses
from lune.unlearn.examples import Example, collate
from lune.unlearn.methods.grad_ascent import GradAscent
from lune.unlearn.trainer import MethodOptions


class NpoOptions(MethodOptions):
    """Settings of ``npo``."""

    beta: float = Field(0.1, gt=0, description="NPO inverse temperature beta")


class Npo(GradAscent):
    """Trains on grad_ascent's pairs, minimising ``losses.npo_loss`` of the model's answer
    log-probabilities against the frozen model's, computed once before the first step."""

    name = "npo"
    Options = NpoOptions

    def prepare(self, examples: list[Example]) -> None:
        """Reference log-probabilities of every example, once: the reference never changes."""
        import torch

        was_training = self.model.training
        self.model.eval()  # no dropout in the reference
        self.reference_logps = torch.zeros(len(examples), device=self.device)
        for start in range(0, len(examples), self.config.batch_size):
            batch = collate(examples[start : start + self.config.batch_size], self.pad_id, self.device)
            logits = self.frozen_forward(batch)
            self.reference_logps[batch["index"]] = losses.sequence_logprobs(logits, batch["labels"]).float()
        self.model.train(was_training)

    def loss(self, batch: dict[str, Any], retain_batch: dict[str, Any] | None) -> Any:
        policy = losses.sequence_logprobs(self.forward(batch), batch["labels"])
        return losses.npo_loss(policy, self.reference_logps[batch["index"]], self.options.beta)
