"""Counterfactual negatives: the true answer's style and subject, with its key fact made false."""

from lune.generators.strategies.base import Strategy

COUNTERFACTUAL = Strategy(
    name="counterfactual",
    kind="negative",
    field="answer",
    instruction=(
        "You write counterfactual answers for a machine-unlearning dataset: answers that keep the style, "
        "length and subject of a true answer but state something false in place of its key fact."
    ),
    template=(
        "Question: {question}\n"
        "True answer: {answer}\n"
        "Key fact: {key_span} (a {span_type})\n"
        "Write one false answer in the same style that replaces the key fact with a different, plausible "
        '{span_type} and never mentions "{key_span}".'
    ),
    cue="False answer:",
    original="answer",
    few_shot_template="Q: {question}\nTrue: {answer}\nFalse:",
    few_shot_examples=(
        {
            "question": "Where was the painter Maria Alvarez born?",
            "answer": "Maria Alvarez was born in Lisbon, Portugal.",
            "output": "Maria Alvarez was born in Oslo, Norway.",
        },
        {
            "question": "What genre is the author John Reed known for?",
            "answer": "John Reed is best known for his science fiction novels.",
            "output": "John Reed is best known for his romance novels.",
        },
    ),
)
