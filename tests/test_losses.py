"""The unlearning losses on small tensors whose values are worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from lune.unlearn import losses

IGN = losses.IGNORE_INDEX
LN2, LN3 = math.log(2), math.log(3)


def two_token_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """One sequence of 3 positions over a 2-token vocabulary.

    Position 0 has logits (0, 0): p = (1/2, 1/2); position 1 has (ln 3, 0): p = (3/4, 1/4).
    Labels (-, 0, 1): position 0 predicts token 0 (log 1/2), position 1 predicts token 1 (log 1/4).
    """
    logits = torch.tensor([[[0.0, 0.0], [LN3, 0.0], [5.0, -5.0]]])
    labels = torch.tensor([[IGN, 0, 1]])
    return logits, labels


def test_token_logprobs_shift_and_mask() -> None:
    logits, labels = two_token_batch()
    logp, mask = losses.token_logprobs(logits, labels)
    assert logp.shape == mask.shape == (1, 2)
    assert torch.allclose(logp, torch.tensor([[-LN2, -2 * LN2]]))
    assert mask.tolist() == [[1.0, 1.0]]


def test_nll_is_the_token_mean_and_skips_ignored_positions() -> None:
    logits, labels = two_token_batch()
    assert losses.nll(logits, labels).item() == pytest.approx((LN2 + 2 * LN2) / 2)
    prompt_masked = torch.tensor([[IGN, IGN, 1]])  # only the answer token is scored
    assert losses.nll(logits, prompt_masked).item() == pytest.approx(2 * LN2)


def test_nll_matches_torch_cross_entropy_on_random_tensors() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=gen)
    labels = torch.randint(0, 11, (3, 7), generator=gen)
    labels[:, :3] = IGN
    expected = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=IGN
    )
    assert losses.nll(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_lune_idk_ascent_and_sequence_logprobs() -> None:
    logits, labels = two_token_batch()
    assert losses.lune_loss(logits, labels).item() == pytest.approx(1.5 * LN2)
    assert losses.idk_loss(logits, labels).item() == pytest.approx(1.5 * LN2)
    assert losses.grad_ascent_loss(logits, labels).item() == pytest.approx(-1.5 * LN2)
    assert losses.sequence_logprobs(logits, labels).tolist() == pytest.approx([-3 * LN2])


def test_grad_diff_adds_the_weighted_retain_nll() -> None:
    logits, labels = two_token_batch()
    retain_labels = torch.tensor([[IGN, IGN, 1]])  # NLL ln 4
    value = losses.grad_diff_loss(logits, labels, logits, retain_labels, retain_weight=0.5)
    assert value.item() == pytest.approx(-1.5 * LN2 + 0.5 * 2 * LN2)


def test_npo_at_the_reference_and_away_from_it() -> None:
    zero = torch.zeros(2)
    # pi = pi_ref: -(2/beta) log sigmoid(0) = (2/beta) ln 2
    assert losses.npo_loss(zero, zero, beta=0.1).item() == pytest.approx(20 * LN2)
    # log ratio -10, beta 0.1: -(20) log sigmoid(1) = 20 ln(1 + e^-1)
    value = losses.npo_loss(torch.tensor([-10.0]), torch.tensor([0.0]), beta=0.1)
    assert value.item() == pytest.approx(20 * math.log1p(math.exp(-1)))


def test_npo_gradient_equals_gradient_ascent_at_the_reference() -> None:
    """d/d(log pi) of NPO is 2 sigmoid(beta r) / B: at r = 0 it is 1/B, what ascent on the mean gives."""
    policy = torch.tensor([-3.0, -5.0], requires_grad=True)
    losses.npo_loss(policy, policy.detach().clone(), beta=0.5).backward()
    assert policy.grad.tolist() == pytest.approx([0.5, 0.5])
    policy.grad = None
    losses.npo_loss(policy, torch.tensor([-3.0, 5.0]), beta=0.5).backward()  # r = (0, -10)
    assert policy.grad.tolist() == pytest.approx([0.5, 2 * torch.sigmoid(torch.tensor(-5.0)).item() / 2])


def test_kl_to_reference() -> None:
    logits, labels = two_token_batch()
    assert losses.kl_to_reference(logits, logits.clone(), labels).item() == pytest.approx(0.0, abs=1e-7)
    # reference (1/2, 1/2) against policy (3/4, 1/4) at the one scored position:
    # KL = 1/2 ln((1/2)/(3/4)) + 1/2 ln((1/2)/(1/4)) = 1/2 ln(4/3)
    policy = torch.tensor([[[0.0, 0.0], [LN3, 0.0], [0.0, 0.0]]])
    reference = torch.zeros(1, 3, 2)
    only_second = torch.tensor([[IGN, IGN, 1]])
    assert losses.kl_to_reference(policy, reference, only_second).item() == pytest.approx(0.5 * math.log(4 / 3))


def test_losses_are_scalars_with_gradients() -> None:
    logits, labels = two_token_batch()
    logits = logits.clone().requires_grad_(True)
    for value in (
        losses.lune_loss(logits, labels),
        losses.grad_ascent_loss(logits, labels),
        losses.kl_to_reference(logits, torch.zeros_like(logits), labels),
    ):
        assert value.dim() == 0
        (grad,) = torch.autograd.grad(value, logits)
        assert grad[0, 2].abs().sum() == 0  # the last position predicts nothing: no gradient
