"""One tokenisation of (prompt, answer) everywhere (core/tokens.py, issue 15 item 5): teaching and
unlearning examples, likelihoods (the evaluation's TOFU and MIA scoring) and greedy generation see
the same ids, with and without a chat template; a chat template whose text starts with BOS gets one
BOS, not two; the answer's first token is the one the model is trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lune.core.prompt_format import render_prompt
from lune.core.tokens import answer_text, encode_pair, prompt_ids, question_ids

# Llama-3 style: the template's text starts with the BOS token, and an assistant turn ends with EOS.
BOS_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% else %}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
QUESTION = "Who is Basil Mahfouz Al-Kuwaiti's father?"
ANSWER = "His father was a florist."
QUESTIONS = [QUESTION, "What genre is the author known for?"]


def _chat_ids(tokenizer: Any, chat: list[dict[str, str]], generation_prompt: bool) -> list[int]:
    """``apply_chat_template(tokenize=True)``: how open-unlearning tokenises a chat (its own special
    tokens only); a dict in recent transformers, a list before."""
    out = tokenizer.apply_chat_template(chat, tokenize=True, add_generation_prompt=generation_prompt)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def _tokenizer(tiny_model_dir: Path, chat: bool) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    if chat:
        tokenizer.chat_template = BOS_CHAT_TEMPLATE
    return tokenizer


@pytest.fixture(params=[False, True], ids=["plain", "bos-chat-template"])
def tokenizer(request: pytest.FixtureRequest, tiny_model_dir: Path) -> Any:
    return _tokenizer(tiny_model_dir, request.param)


def test_a_template_that_starts_with_bos_gets_one_bos(tiny_model_dir: Path) -> None:
    tokenizer = _tokenizer(tiny_model_dir, chat=True)
    bos = tokenizer.bos_token_id
    text = render_prompt(tokenizer, QUESTION)
    assert text.startswith(tokenizer.bos_token)
    # the bug: the tokenizer adds its BOS to the one the template wrote
    assert tokenizer(text, add_special_tokens=True)["input_ids"][:2] == [bos, bos]
    ids = question_ids(tokenizer, QUESTION)
    assert ids[0] == bos and ids[1] != bos and ids.count(bos) == 1
    # what apply_chat_template tokenises (open-unlearning's prompt ids) is exactly that
    chat = [{"role": "user", "content": QUESTION}]
    assert ids == _chat_ids(tokenizer, chat, True)
    # a plain prompt: the tokenizer's BOS, once
    plain = _tokenizer(tiny_model_dir, chat=False)
    assert prompt_ids(plain, "Question: x\nAnswer:")[:2] != [bos, bos]
    assert prompt_ids(plain, "") == [bos]


def test_the_answer_starts_as_it_follows_its_prompt(tiny_model_dir: Path) -> None:
    plain, chat = _tokenizer(tiny_model_dir, False), _tokenizer(tiny_model_dir, True)
    assert answer_text(plain, " Paris. ") == " Paris."  # after "Answer:"
    assert answer_text(chat, " Paris. ") == "Paris."  # after the generation prompt's newline
    for tokenizer in (plain, chat):
        pair = encode_pair(tokenizer, QUESTION, ANSWER)
        expected = tokenizer(answer_text(tokenizer, ANSWER), add_special_tokens=False)["input_ids"]
        assert list(pair.answer) == [*expected, tokenizer.eos_token_id]
        assert pair.ids == pair.prompt + pair.answer
        assert encode_pair(tokenizer, QUESTION, ANSWER, eos=False).answer == pair.answer[:-1]
    assert encode_pair(plain, QUESTION, ANSWER).answer[0] != encode_pair(chat, QUESTION, ANSWER).answer[0]


def test_lune_ids_are_open_unlearnings_chat_ids(tiny_model_dir: Path) -> None:
    """open-unlearning tokenises the whole chat with apply_chat_template; with a template whose
    assistant turn ends in EOS, lune's prompt + answer + EOS is that sequence."""
    tokenizer = _tokenizer(tiny_model_dir, chat=True)
    chat = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    theirs = _chat_ids(tokenizer, chat, False)
    assert list(encode_pair(tokenizer, QUESTION, ANSWER).ids) == theirs


def test_teaching_examples_use_the_pair_ids(tokenizer: Any) -> None:
    from lune.unlearn.examples import encode
    from lune.unlearn.losses import IGNORE_INDEX

    pair = encode_pair(tokenizer, QUESTION, ANSWER)
    example = encode(tokenizer, QUESTION, ANSWER, max_length=512)
    assert example.input_ids == pair.ids
    assert tuple(t for t in example.labels if t != IGNORE_INDEX) == pair.answer
    assert example.labels[: len(pair.prompt)] == (IGNORE_INDEX,) * len(pair.prompt)


def test_likelihoods_score_the_pair_ids(tokenizer: Any, model: Any) -> None:
    """Both likelihood entry points, and the evaluation's TOFU scoring, score exactly the answer ids
    (and EOS) of encode_pair: checked against a forward pass over those ids."""
    import torch

    from lune.core.likelihood import completion_stats, pair_stats
    from lune.evaluation.config import EvaluateConfig
    from lune.evaluation.inference import score_likelihoods
    from lune.evaluation.probes import ProbeSuite, TruthItem

    pair = encode_pair(tokenizer, QUESTION, ANSWER)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([pair.ids])).logits[0].float()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    expected = logp.gather(-1, torch.tensor(pair.ids[1:]).unsqueeze(-1)).squeeze(-1)[len(pair.prompt) - 1 :].numpy()

    (by_pair,) = pair_stats(model, tokenizer, [pair])
    (by_text,) = completion_stats(
        model, tokenizer, [render_prompt(tokenizer, QUESTION)], [answer_text(tokenizer, ANSWER)], eos=True
    )
    np.testing.assert_allclose(by_pair.logprobs, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(by_text.logprobs, expected, rtol=1e-5, atol=1e-5)

    suite = ProbeSuite({}, truth={"forget": [TruthItem("forget", "f1", QUESTION, ANSWER, (ANSWER,), ("No.",))]})
    _, truth, _ = score_likelihoods(model, tokenizer, suite, EvaluateConfig(mia=False))
    assert truth["forget"][0].answer == pytest.approx(float(expected.mean()), abs=1e-5)
    # EOS scored in the probability; exact memorization / extraction strength read the answer's own tokens
    assert len(truth["forget"][0].answer_is_argmax) == len(pair.answer) - 1
    _, old, _ = score_likelihoods(model, tokenizer, suite, EvaluateConfig(mia=False, score_eos=False))
    assert old["forget"][0].answer == pytest.approx(float(expected[:-1].mean()), abs=1e-5)


def test_greedy_generation_prompts_with_the_pair_ids(tokenizer: Any, model: Any) -> None:
    """Batched, left-padded greedy answers are the continuations of question_ids, one by one."""
    import torch

    from lune.core.greedy import greedy_answers, greedy_complete

    answers = greedy_answers(model, tokenizer, QUESTIONS, max_new_tokens=4)
    for question, answer in zip(QUESTIONS, answers):
        ids = question_ids(tokenizer, question)
        with torch.no_grad():
            out = model.generate(
                input_ids=torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=4,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        assert answer == tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True).strip()
    # rendered prompt texts (the generators' path) go through the same ids
    assert greedy_complete(model, tokenizer, [render_prompt(tokenizer, q) for q in QUESTIONS], max_new_tokens=4) == (
        answers
    )


@pytest.mark.slow
def test_smollm2_ids_match_its_chat_template(smollm2_dir: Path) -> None:
    """SmolLM2-135M-Instruct (a template without BOS in its text): the prompt ids are its chat
    template's, and prompt + answer + EOS is the prefix of open-unlearning's chat ids."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    assert tokenizer.chat_template
    user = [{"role": "user", "content": QUESTION}]
    ids = question_ids(tokenizer, QUESTION)
    assert ids == _chat_ids(tokenizer, user, True)
    assert len(ids) < 2 or ids[0] != ids[1]
    pair = encode_pair(tokenizer, QUESTION, ANSWER)
    chat = [*user, {"role": "assistant", "content": ANSWER}]
    theirs = _chat_ids(tokenizer, chat, False)
    assert list(pair.ids) == theirs[: len(pair.ids)]
