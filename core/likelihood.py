"""Token log-likelihoods of completions under an in-memory causal LM (plain or PEFT-wrapped).

One forward pass per batch gives, for each completion token, ``log p(x_t | x_<t)``, whether
``x_t`` is the model's most likely next token (teacher-forced greedy: exact memorization and
extraction strength), and the mean and standard deviation of ``log p(z | x_<t)`` over the model's
next-token distribution (what Min-K%++ needs, and why this always runs in transformers: a serving
engine returns only the top log-probabilities, not the whole distribution).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lune.core.tokens import PairIds, prompt_ids


@dataclass(frozen=True)
class TokenStats:
    """Per scored token of one text: ``logprobs[t] = log p(x_t | x_<t)``, the mean ``mu[t]`` and
    standard deviation ``sigma[t]`` of ``log p(z | x_<t)`` under the model's next-token distribution,
    and ``is_argmax[t] = [x_t = argmax_z p(z | x_<t)]`` (empty when not computed)."""

    logprobs: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    is_argmax: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def n_tokens(self) -> int:
        return int(self.logprobs.shape[0])

    def without_last(self) -> TokenStats:
        """The same statistics without the last scored token (the answer's EOS: open-unlearning
        scores it in the loss, probability and truth ratio, but leaves it out of min-k%, min-k%++,
        exact memorization and extraction strength)."""
        n = max(self.n_tokens - 1, 0)
        return TokenStats(self.logprobs[:n], self.mu[:n], self.sigma[:n], self.is_argmax[:n])

    @property
    def mean_logprob(self) -> float:
        """``(1/T) sum_t log p(x_t)``: minus the mean NLL."""
        return float(self.logprobs.mean()) if self.n_tokens else float("nan")


def completion_stats(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    *,
    batch_size: int = 16,
    max_length: int = 512,
    distribution: bool = True,
    eos: bool = False,
) -> list[TokenStats]:
    """:class:`TokenStats` of each ``completion`` given its rendered ``prompt`` text.

    The prompt is tokenised by :func:`lune.core.tokens.prompt_ids` (special tokens once: a chat
    template's own BOS is not doubled), the completion without special tokens (and EOS after it when
    ``eos``), and the two are concatenated, so the scored tokens are exactly the completion's. An
    empty prompt scores the whole text after BOS. See :func:`pair_stats` for the rest.
    """
    if len(prompts) != len(completions):
        raise ValueError("one prompt per completion")
    end = tokenizer.eos_token_id
    pairs = []
    for prompt, completion in zip(prompts, completions):
        tail = list(tokenizer(completion, add_special_tokens=False)["input_ids"]) if completion else []
        if eos and end is not None:
            tail.append(end)
        pairs.append(PairIds(tuple(prompt_ids(tokenizer, prompt)), tuple(tail)))
    return pair_stats(model, tokenizer, pairs, batch_size=batch_size, max_length=max_length, distribution=distribution)


def pair_stats(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PairIds],
    *,
    batch_size: int = 16,
    max_length: int = 512,
    distribution: bool = True,
) -> list[TokenStats]:
    """:class:`TokenStats` of each pair's answer tokens given its prompt tokens
    (:func:`lune.core.tokens.encode_pair`: the ids teaching trains on).

    Sequences longer than ``max_length`` keep their first ``max_length`` tokens. ``distribution=False``
    skips the mean and deviation over the vocabulary (zeros then): a likelihood alone needs only the
    gathered tokens.
    """
    import torch

    was_training = model.training
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    # Texts of similar length share a batch (less padding); results go back in the callers' order.
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].ids))
    out: list[TokenStats | None] = [None] * len(pairs)
    try:
        for start in range(0, len(order), batch_size):
            batch_rows = order[start : start + batch_size]
            rows = []
            for pair in (pairs[i] for i in batch_rows):
                ids = list(pair.ids)[:max_length]
                rows.append((ids, min(len(pair.prompt), len(ids))))
            width = max(len(ids) for ids, _ in rows)
            input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, (ids, _) in enumerate(rows):
                input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                mask[i, : len(ids)] = 1
            with torch.no_grad():
                logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits.float()
                logp = torch.log_softmax(logits[:, :-1], dim=-1)  # [B, T-1, V]: predicts token t+1
                targets = input_ids[:, 1:].to(device)
                token_lp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, T-1]
                # teacher-forced greedy; ties: the first maximum (torch.argmax), as open-unlearning's EM / ES
                is_argmax = logp.argmax(-1) == targets  # [B, T-1]
                if distribution:
                    probs = logp.exp()
                    mu = (probs * logp).sum(-1)  # E_z log p(z)
                    second = (probs * logp.pow(2)).sum(-1)
                    sigma = (second - mu.pow(2)).clamp_min(0).sqrt()
                else:
                    mu = sigma = torch.zeros_like(token_lp)
            token_lp, mu, sigma = token_lp.cpu().numpy(), mu.cpu().numpy(), sigma.cpu().numpy()
            is_argmax = is_argmax.cpu().numpy()
            for i, (ids, head_len) in enumerate(rows):
                # completion token k sits at position head_len + k; it is predicted from position - 1
                lo, hi = max(head_len - 1, 0), len(ids) - 1
                out[batch_rows[i]] = TokenStats(
                    token_lp[i, lo:hi].astype(np.float64),
                    mu[i, lo:hi].astype(np.float64),
                    sigma[i, lo:hi].astype(np.float64),
                    is_argmax[i, lo:hi].copy(),
                )
    finally:
        if was_training:
            model.train()
    return [s for s in out if s is not None]
