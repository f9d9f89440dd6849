"""Prompt and answer token ids, built in one place for every path that feeds a model a question and
its answer: teaching and unlearning (``unlearn/examples.py``), likelihoods (``core/likelihood.py``,
``evaluation/inference.py``) and generation (``core/greedy.py``, ``core/vllm_engine.py``).

    >>> pair = encode_pair(tokenizer, "Who wrote Hamlet?", "Shakespeare.")
    >>> pair.ids == pair.prompt + pair.answer   # the answer's tokens (and EOS) are exactly what is scored

Two rules make the ids the same everywhere:

1. **One BOS.** A prompt is tokenised with the tokenizer's special tokens; a chat template whose
   text already starts with the BOS token (Llama-3 style, ``{{ bos_token }}...``) would otherwise
   get a second one, which shifts every log-probability (up to 1.22 nats measured, issue 15).
   :func:`prompt_ids` drops the duplicate.
2. **One answer text.** After :func:`~lune.core.prompt_format.format_prompt`'s ``"Answer:"`` the
   answer starts with a space (``" Paris."``, first token ``ĠParis``); after a chat template's
   generation prompt it starts bare (``"Paris."``), as the model writes it there.
   :func:`answer_text` picks the one that matches the prompt, for training and scoring alike.

The answer is tokenised apart from the prompt (without special tokens) and concatenated, so the
scored tokens are exactly the answer's whatever the tokenizer would merge across the boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lune.core.prompt_format import format_completion, render_prompt


def uses_chat_template(tokenizer: Any, use_chat_template: bool | None = None) -> bool:
    """Whether :func:`~lune.core.prompt_format.render_prompt` lays a question out with the tokenizer's
    chat template (it has one, and ``use_chat_template`` does not turn it off)."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    return has_template if use_chat_template is None else bool(use_chat_template) and has_template


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a rendered prompt ``text``: the tokenizer's special tokens added once.

    A text that already starts with the BOS token (a chat template's ``{{ bos_token }}``) keeps that
    one BOS; the empty text is ``[BOS]`` (nothing when the tokenizer has no BOS)."""
    bos = tokenizer.bos_token_id
    if not text:
        return [bos] if bos is not None else []
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]  # the template's own BOS and the one the tokenizer added: keep one
    return ids


def question_ids(tokenizer: Any, question: str, *, use_chat_template: bool | None = None) -> list[int]:
    """Token ids of the prompt a model is asked ``question`` with (``render_prompt`` + :func:`prompt_ids`)."""
    return prompt_ids(tokenizer, render_prompt(tokenizer, question, use_chat_template=use_chat_template))


def answer_text(tokenizer: Any, answer: str, *, use_chat_template: bool | None = None) -> str:
    """The answer as it follows its prompt: bare after a chat template's generation prompt, with a
    leading space after ``"Answer:"`` (:func:`~lune.core.prompt_format.format_completion`)."""
    return answer.strip() if uses_chat_template(tokenizer, use_chat_template) else format_completion(answer)


def eos_id(tokenizer: Any) -> int | None:
    """The token that closes an answer: the tokenizer's EOS (a chat model's end of turn), if any."""
    return tokenizer.eos_token_id


@dataclass(frozen=True)
class PairIds:
    """A prompt's token ids and the answer's that follow it (EOS last when asked); ``ids`` is both."""

    prompt: tuple[int, ...]
    answer: tuple[int, ...]

    @property
    def ids(self) -> tuple[int, ...]:
        return self.prompt + self.answer


def encode_pair(
    tokenizer: Any,
    question: str | None,
    answer: str,
    *,
    eos: bool = True,
    use_chat_template: bool | None = None,
) -> PairIds:
    """``question`` laid out as a prompt and ``answer`` after it, as token ids.

    ``eos``: close the answer with the EOS token (what teaching trains, and what open-unlearning
    scores). ``question=None``: a plain text (a passage scored for membership inference): the
    prompt is BOS alone and ``answer`` is tokenised as it is, without a leading space."""
    if question is None:
        head = prompt_ids(tokenizer, "")
        text = answer
    else:
        head = question_ids(tokenizer, question, use_chat_template=use_chat_template)
        text = answer_text(tokenizer, answer, use_chat_template=use_chat_template)
    tail = list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
    end = eos_id(tokenizer)
    if eos and end is not None:
        tail.append(end)
    return PairIds(tuple(head), tuple(tail))


def encode_pairs(
    tokenizer: Any,
    questions: Sequence[str | None],
    answers: Sequence[str],
    *,
    eos: bool = True,
    use_chat_template: bool | None = None,
) -> list[PairIds]:
    """:func:`encode_pair` of each (question, answer)."""
    if len(questions) != len(answers):
        raise ValueError(f"encode_pairs: {len(questions)} questions for {len(answers)} answers")
    return [
        encode_pair(tokenizer, q, a, eos=eos, use_chat_template=use_chat_template) for q, a in zip(questions, answers)
    ]
