"""Token-level training examples shared by teach and unlearn: a prompt and a target tokenised by
``core/tokens.py`` (the ids the model is asked and scored with at evaluation time: one BOS, the
answer's first token as it follows the prompt), with the labels that say which tokens a loss scores,
and padded batches of them. An EOS closes the target: the model learns where an answer ends, and
greedy answers at the checks stop there.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from lune.core.tokens import encode_pair
from lune.unlearn.losses import IGNORE_INDEX

# Padding lengths are rounded up to a multiple of this: CPU kernels are set up once per shape, and
# with free lengths the first epoch of teaching ran 5x slower than the next (measured, 2 cores).
PAD_MULTIPLE = 16


@dataclass(frozen=True)
class Example:
    """One tokenised training sequence; ``labels[i]`` is the token scored at position i or IGNORE_INDEX."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    index: int = 0  # position in the list it was built from (NPO looks up reference log-probs by it)

    @property
    def scored_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def encode(
    tokenizer: Any, question: str, answer: str, *, max_length: int, score_prompt: bool = False, index: int = 0
) -> Example:
    """The prompt of ``question`` + ``answer`` + EOS as :func:`lune.core.tokens.encode_pair` builds
    them (the same ids evaluation scores and generation prompts with), scored on the answer (and EOS)
    only, or on every token after BOS when ``score_prompt`` (teaching: full-sequence loss)."""
    pair = encode_pair(tokenizer, question, answer, eos=True)
    ids = list(pair.ids)[:max_length]
    head = len(pair.prompt)
    if score_prompt:
        labels = list(ids)
    else:
        labels = [IGNORE_INDEX] * min(head, len(ids)) + ids[head:]
    return Example(tuple(ids), tuple(labels), index)


def collate(examples: Sequence[Example], pad_id: int, device: Any = None) -> dict[str, Any]:
    """Right-padded tensors ``input_ids``, ``attention_mask``, ``labels`` [B, T] (T a multiple of
    PAD_MULTIPLE) and ``index`` [B]."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    width = -(-width // PAD_MULTIPLE) * PAD_MULTIPLE
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    batch = {
        "input_ids": input_ids,
        "attention_mask": mask,
        "labels": labels,
        "index": torch.tensor([e.index for e in examples], dtype=torch.long),
    }
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


def epoch_batches(
    examples: Sequence[Example], batch_size: int, rng: random.Random, *, group_by_length: bool = True
) -> list[list[Example]]:
    """One shuffled pass over ``examples`` in batches (the last one may be smaller).

    ``group_by_length``: batches of similar lengths (transformers' length-grouped sampling: shuffle,
    sort within mega-batches of a few batches, cut). A batch is padded to its longest row, and the
    curated sets mix short questions with long attack prompts: grouping cut the padded tokens of an
    unlearning step by about half (BENCHMARKS.md, Pipeline).
    """
    if group_by_length and len(examples) > batch_size:
        import torch
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(rng.getrandbits(63))
        order = get_length_grouped_indices([len(e.input_ids) for e in examples], batch_size, generator=generator)
    else:
        order = list(range(len(examples)))
        rng.shuffle(order)
    return [[examples[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]


def endless_batches(examples: Sequence[Example], batch_size: int, seed: int) -> Iterator[list[Example]]:
    """Shuffled passes over ``examples``, one after another, for as many steps as asked."""
    if not examples:
        raise ValueError("no examples to draw batches from")
    rng = random.Random(seed)
    while True:
        yield from epoch_batches(examples, batch_size, rng)


def pad_id_of(tokenizer: Any) -> int:
    """The tokenizer's pad id (EOS when it has none, as ``evaluation.greedy`` does)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return int(tokenizer.pad_token_id)
