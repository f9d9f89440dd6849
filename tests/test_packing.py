"""Sequence packing (unlearn/packing.py): rows filled first-fit by decreasing length, each example at
its own positions, and the loss and gradients of a packed batch those of the padded batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lune.unlearn.examples import Example, collate, encode
from lune.unlearn.losses import IGNORE_INDEX
from lune.unlearn.packing import pack, pack_rows, packed_loss, packing_matches
from lune.unlearn.sample_set import sample_facts
from lune.unlearn.tiny_model import TinyModelSpec, build_tiny_llama


def test_rows_are_filled_first_fit_by_decreasing_length() -> None:
    # by length: 5 (item 0), 4 (item 2), 3 (item 1), 2 (item 3); 5 + 4 > 8 opens a row, 5 + 3 fits
    # the first, 2 fits the second (4 + 2)
    assert pack_rows([5, 3, 4, 2], width=8) == [[0, 1], [2, 3]]
    assert pack_rows([9, 2], width=8) == [[0], [1]]  # too long for a row: a row of its own
    assert pack_rows([2, 2, 2], width=8) == [[0, 1, 2]]


def test_a_packed_row_restarts_positions_and_scores_no_boundary_or_padding() -> None:
    a = Example((1, 10, 11, 12), (1, 10, 11, 12))  # teaching: every token after BOS scored
    b = Example((1, 20, 21), (IGNORE_INDEX, IGNORE_INDEX, 21))  # unlearning: the prompt not scored
    batch = pack([a, b], pad_id=0, width=16)
    assert batch["input_ids"].tolist() == [[1, 10, 11, 12, 1, 20, 21] + [0] * 9]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2] + list(range(9))]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 10, 11, 12, IGNORE_INDEX, IGNORE_INDEX, 21] + [IGNORE_INDEX] * 9]
    assert int(batch["attention_mask"].sum()) == 7  # the examples' tokens, for counting
    with pytest.raises(ValueError, match="at least one example"):
        pack([], pad_id=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, list[Example], int]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    facts = sample_facts({"forget": 8, "retain": 8, "utility": 0})
    spec = TinyModelSpec(
        vocab_size=600,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    folder = build_tiny_llama([f"{f['question']} {f['answer']}" for f in facts], tmp_path_factory.mktemp("tiny"), spec)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    examples = [encode(tokenizer, f["question"], f["answer"], max_length=256, score_prompt=True) for f in facts]
    return model, examples, int(tokenizer.pad_token_id)


def test_packed_and_padded_batches_give_the_same_loss_and_gradients(tiny) -> None:
    model, examples, pad_id = tiny
    padded, packed = collate(examples, pad_id), pack(examples, pad_id, width=128)
    assert packed["input_ids"].numel() < padded["input_ids"].numel()  # fewer tokens computed
    assert int(packed["attention_mask"].sum()) == int(padded["attention_mask"].sum())  # the same tokens

    def loss_and_grads(compute) -> tuple[float, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = compute()
        loss.backward()
        return float(loss), [p.grad.clone() for p in model.parameters()]

    expected, expected_grads = loss_and_grads(
        lambda: (
            model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"], labels=padded["labels"]).loss
        )
    )
    got, got_grads = loss_and_grads(lambda: packed_loss(model, packed))
    model.zero_grad(set_to_none=True)
    assert got == pytest.approx(expected, rel=1e-5)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
    assert packing_matches(model, examples, pad_id)


class IgnoresPositions(torch.nn.Module):
    """A model that reads input ids only: every token of a packed row sees the whole row before it."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, labels=None, attention_mask=None, position_ids=None, use_cache=None):
        return self.inner(input_ids=input_ids, labels=labels, attention_mask=attention_mask)


def test_a_model_that_ignores_positions_is_caught(tiny) -> None:
    model, examples, pad_id = tiny
    assert not packing_matches(IgnoresPositions(model), examples, pad_id)


def test_packing_keeps_the_training_mode(tiny, tmp_path: Path) -> None:
    model, examples, pad_id = tiny
    model.train()
    packing_matches(model, examples[:4], pad_id)
    assert model.training
