"""Refusals: "I don't know"-style answers, the targets of the IDK unlearning baseline."""

from lune.generators.strategies.base import Strategy

REFUSAL = Strategy(
    name="refusal",
    kind="refusal",
    field="answer",
    instruction=(
        "You write refusals for a machine-unlearning dataset: short, polite answers saying that you do not know."
    ),
    template=(
        "Question: {question}\n"
        "Write a one-sentence answer saying that you do not know the answer. Do not guess and state no fact."
    ),
    cue="Answer:",
    original="answer",
)
