"""Question paraphrases: the same question in other words (probes that the fact is gone, not
just its one phrasing)."""

from lune.generators.strategies.base import Strategy

PARAPHRASE = Strategy(
    name="paraphrase",
    kind="paraphrase",
    field="question",
    instruction=(
        "You rewrite questions for a machine-unlearning evaluation: the same question in different words, "
        "asking for exactly the same fact."
    ),
    template=(
        "Question: {question}\nRewrite the question with different wording and the same meaning. Keep every name."
    ),
    cue="Paraphrased question:",
    original="question",
    few_shot_template="Q: {question}\nSame question, other words:",
    few_shot_examples=(
        {
            "question": "Where was the painter Maria Alvarez born?",
            "output": "In which city and country was Maria Alvarez, the painter, born?",
        },
        {
            "question": "What genre is the author John Reed known for?",
            "output": "Which kind of books is the writer John Reed famous for?",
        },
    ),
)
