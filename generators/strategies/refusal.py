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
    few_shot_template="Q: {question}\nA:",
    few_shot_examples=(
        {
            "question": "Where was the painter Maria Alvarez born?",
            "output": "I'm sorry, I don't know where she was born.",
        },
        {
            "question": "What genre is the author John Reed known for?",
            "output": "I don't have that information about John Reed.",
        },
    ),
)
