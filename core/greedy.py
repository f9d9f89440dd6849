"""Greedy answers from an in-memory causal LM (plain or PEFT-wrapped), batched and left-padded.

Used by early stopping during unlearning (the model being trained) and by the transformers
generation backend (a model loaded from a path), so both see exactly the same decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lune.core.tokens import prompt_ids, question_ids


def left_padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """``input_ids`` and ``attention_mask`` [B, T] of token-id rows, padded on the left (a decoder
    continues from the last position)."""
    import torch

    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            input_ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return input_ids, mask


def greedy_complete(
    model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int = 48, batch_size: int = 32
) -> list[str]:
    """Greedy continuations of rendered ``prompts`` (text after the prompt, special tokens removed);
    each prompt is tokenised by :func:`lune.core.tokens.prompt_ids` (one BOS)."""
    return greedy_complete_ids(
        model,
        tokenizer,
        [prompt_ids(tokenizer, p) for p in prompts],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )


def greedy_complete_ids(
    model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 48, batch_size: int = 32
) -> list[str]:
    """Greedy continuations of prompts given as token ids (``core/tokens.py``)."""
    import torch

    was_training = model.training
    model.eval()
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only models continue from the last position
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Prompts of similar length share a batch (left padding is computed for nothing; attack prompts
    # are several times longer than questions); the answers go back in the callers' order.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    try:
        device = next(model.parameters()).device
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            input_ids, mask = left_padded([prompts[i] for i in rows], tokenizer.pad_token_id)
            with torch.no_grad():
                generated = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            new_tokens = generated[:, input_ids.shape[1] :]
            for i, text in zip(rows, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                outputs[i] = text.strip()
    finally:
        tokenizer.padding_side = previous_side
        if was_training:
            model.train()
    return outputs


def greedy_answers(model: Any, tokenizer: Any, questions: Sequence[str], **kwargs: Any) -> list[str]:
    """Greedy answers to ``questions``, each prompted with :func:`lune.core.tokens.question_ids`."""
    return greedy_complete_ids(model, tokenizer, [question_ids(tokenizer, q) for q in questions], **kwargs)
