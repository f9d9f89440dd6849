"""IDK (TOFU's ``idk``): answer the forget prompts with a refusal."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from lune.unlearn import losses
from lune.unlearn.trainer import MethodOptions, UnlearnTrainer

# The TOFU "I don't know" set is longer; these cover its forms.
DEFAULT_REFUSALS = (
    "I don't know.",
    "I'm not sure about that.",
    "I have no information about that.",
    "I can't answer that question.",
    "That is not something I know.",
)


class IdkOptions(MethodOptions):
    """Settings of ``idk``."""

    refusals: list[str] = Field(
        list(DEFAULT_REFUSALS), min_length=1, description="refusal targets used when the set has no refusal rows"
    )


class Idk(UnlearnTrainer):
    """Minimises ``-log p(refusal | prompt)`` (``losses.idk_loss``): on the set's refusal rows, or on
    each prompt paired with the configured refusals in turn."""

    name = "idk"
    Options = IdkOptions

    def training_pairs(self) -> list[tuple[str, str]]:
        kinds = self.config.prompt_kinds
        pairs = [
            (r["prompt"], r["target"])
            for r in self.data.train
            if r["target_kind"] == "refusal" and r["prompt_kind"] in kinds
        ]
        if pairs:
            return pairs
        prompts = [f["question"] for f in self.data.forget] if "question" in kinds else []
        prompts += [r["prompt"] for r in self.data.train if r["prompt_kind"] in kinds]
        refusals = self.options.refusals
        return [(p, refusals[i % len(refusals)]) for i, p in enumerate(dict.fromkeys(prompts))]

    def loss(self, batch: dict[str, Any], retain_batch: dict[str, Any] | None) -> Any:
        return losses.idk_loss(self.forward(batch), batch["labels"])
