"""How a question and an answer are laid out as text for a causal LM.

One format everywhere (teach, unlearn, generate, evaluate), so that what a model was taught is
what it is asked. Models with a chat template use it instead (see ``render_prompt``).
"""

from __future__ import annotations

from typing import Any

QUESTION_PREFIX = "Question: "
ANSWER_PREFIX = "\nAnswer:"


def format_prompt(question: str) -> str:
    """The prompt a plain (no chat template) model sees for a question."""
    return f"{QUESTION_PREFIX}{question.strip()}{ANSWER_PREFIX}"


def format_completion(answer: str) -> str:
    """The target continuation of :func:`format_prompt` (leading space, as the model writes it)."""
    return " " + answer.strip()


def render_prompt(tokenizer: Any, question: str, *, use_chat_template: bool | None = None) -> str:
    """The prompt text for ``question``: the tokenizer's chat template when it has one, else
    :func:`format_prompt`. ``use_chat_template`` forces the choice."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if use_chat_template is None:
        use_chat_template = has_template
    if use_chat_template and has_template:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question.strip()}], tokenize=False, add_generation_prompt=True
        )
    return format_prompt(question)
