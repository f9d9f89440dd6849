"""Greedy answers from an in-memory causal LM (plain or PEFT-wrapped), batched and left-padded.

Used by early stopping during unlearning (the model being trained) and by the transformers
generation backend (a model loaded from a path), so both see exactly the same decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lune.core.prompt_format import render_prompt


def greedy_complete(
    model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int = 48, batch_size: int = 32
) -> list[str]:
    """Greedy continuations of ``prompts`` (text after the prompt, special tokens removed)."""
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
            chunk = [prompts[i] for i in rows]
            batch = tokenizer(chunk, return_tensors="pt", padding=True).to(device)
            with torch.no_grad():
                generated = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            for i, text in zip(rows, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                outputs[i] = text.strip()
    finally:
        tokenizer.padding_side = previous_side
        if was_training:
            model.train()
    return outputs


def greedy_answers(model: Any, tokenizer: Any, questions: Sequence[str], **kwargs: Any) -> list[str]:
    """Greedy answers to ``questions``, each laid out by :func:`data.prompt_format.render_prompt`."""
    return greedy_complete(model, tokenizer, [render_prompt(tokenizer, q) for q in questions], **kwargs)
