"""Training batches (length grouping) and the mixed-precision switch shared by teach and unlearn."""

from __future__ import annotations

import random

import pytest
import torch

from lune.unlearn.examples import Example, collate, endless_batches, epoch_batches
from lune.unlearn.precision import autocast, cpu_has_native_bf16, resolve_autocast


def _examples(lengths: list[int]) -> list[Example]:
    return [Example(tuple(range(1, n + 1)), tuple(range(1, n + 1)), index=i) for i, n in enumerate(lengths)]


def _padded_tokens(batches: list[list[Example]]) -> int:
    return sum(int(collate(b, 0)["input_ids"].numel()) for b in batches)


MIXED = [12] * 60 + [150] * 20 + [40] * 48  # questions, long attack prompts, paraphrases


@pytest.mark.parametrize("grouped", [True, False])
def test_an_epoch_covers_every_example_once(grouped: bool) -> None:
    examples = _examples(MIXED)
    batches = epoch_batches(examples, 16, random.Random(3), group_by_length=grouped)
    seen = sorted(e.index for b in batches for e in b)
    assert seen == list(range(len(examples)))
    assert all(len(b) <= 16 for b in batches)


def test_grouping_by_length_cuts_padding() -> None:
    examples = _examples(MIXED)
    grouped = _padded_tokens(epoch_batches(examples, 16, random.Random(0)))
    shuffled = _padded_tokens(epoch_batches(examples, 16, random.Random(0), group_by_length=False))
    assert sum(MIXED) < grouped < 0.7 * shuffled  # long rows pad fewer batches of short ones


def test_batches_are_reproducible_and_vary_between_epochs() -> None:
    examples = _examples(MIXED)
    first = [[e.index for e in b] for b in epoch_batches(examples, 16, random.Random(7))]
    again = [[e.index for e in b] for b in epoch_batches(examples, 16, random.Random(7))]
    assert first == again
    stream = endless_batches(examples, 16, seed=7)
    epoch_one = [[e.index for e in next(stream)] for _ in range(len(first))]
    epoch_two = [[e.index for e in next(stream)] for _ in range(len(first))]
    assert epoch_one == first and epoch_two != epoch_one


def test_resolve_autocast() -> None:
    assert resolve_autocast("off", "cpu", torch.float32) is None
    assert resolve_autocast("bfloat16", "cpu", torch.float32) is torch.bfloat16
    # Half-precision weights are never autocast (nothing to gain, and no float32 master weights).
    assert resolve_autocast("bfloat16", "cpu", torch.bfloat16) is None
    assert resolve_autocast("auto", "cpu", torch.float32) is (torch.bfloat16 if cpu_has_native_bf16() else None)
    assert resolve_autocast("auto", "cuda", torch.float32) is None


def test_autocast_runs_matmuls_in_bfloat16_and_off_leaves_float32() -> None:
    a, b = torch.randn(4, 8), torch.randn(8, 2)
    with autocast("cpu", torch.bfloat16):
        assert (a @ b).dtype is torch.bfloat16
    with autocast("cpu", None):
        assert (a @ b).dtype is torch.float32
