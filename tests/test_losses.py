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


# -- SimNPO ----------------------------------------------------------------------------------------


def test_sequence_mean_nll_averages_each_sequence_over_its_own_tokens() -> None:
    logits, labels = two_token_batch()
    batch_logits = torch.cat([logits, logits])
    batch_labels = torch.cat([labels, torch.tensor([[IGN, IGN, 1]])])  # second row: only the ln 4 token
    assert losses.sequence_mean_nll(batch_logits, batch_labels).tolist() == pytest.approx([1.5 * LN2, 2 * LN2])


def test_simnpo_forget_loss_values_and_sign() -> None:
    # At NLL = delta: -(2/beta) log sigmoid(0) = (2/beta) ln 2, whatever delta is.
    assert losses.simnpo_forget_loss(torch.tensor([0.3, 0.3]), beta=4.5, delta=0.3).item() == pytest.approx(
        2 * LN2 / 4.5
    )
    # beta 2, NLL 1, delta 0.5: -(2/2) log sigmoid(2 * 0.5) = ln(1 + e^-1)
    value = losses.simnpo_forget_loss(torch.tensor([1.0]), beta=2.0, delta=0.5)
    assert value.item() == pytest.approx(math.log1p(math.exp(-1)))
    # Minimising it raises the NLL: the loss falls as the NLL grows (open-unlearning's sign).
    low, high = (losses.simnpo_forget_loss(torch.tensor([x])).item() for x in (0.5, 3.0))
    assert high < low


def test_simnpo_gradient_is_ascent_at_the_margin_and_fades_past_it() -> None:
    """d/d(NLL_b) of the forget term is -2 sigmoid(-beta (NLL_b - delta)) / B."""
    mean_nll = torch.tensor([0.0, 1.0], requires_grad=True)
    losses.simnpo_forget_loss(mean_nll, beta=2.0, delta=0.0).backward()
    assert mean_nll.grad.tolist() == pytest.approx([-0.5, -torch.sigmoid(torch.tensor(-2.0)).item()])


def test_simnpo_loss_weights_the_forget_term_and_adds_the_retain_nll() -> None:
    logits, labels = two_token_batch()  # forget: mean NLL 1.5 ln 2
    retain_labels = torch.tensor([[IGN, IGN, 1]])  # retain NLL ln 4
    value = losses.simnpo_loss(
        logits, labels, logits, retain_labels, beta=1.0, delta=0.0, forget_weight=0.5, retain_weight=2.0
    )
    # 0.5 * -(2/1) log sigmoid(1.5 ln 2) + 2 ln 4; -log sigmoid(x) = ln(1 + e^-x) and e^(-1.5 ln 2) = 2^-1.5
    assert value.item() == pytest.approx(math.log1p(2**-1.5) + 4 * LN2)


# -- RMU -------------------------------------------------------------------------------------------


def test_activation_mse_means_width_then_each_sequence_then_the_batch() -> None:
    activations = torch.tensor(
        [
            [[1.0, 1.0], [3.0, 0.0], [9.0, 9.0]],  # to (1, 0): (0 + 1)/2 = 0.5, (4 + 0)/2 = 2; the third masked
            [[0.0, 0.0], [7.0, 7.0], [7.0, 7.0]],  # (1 + 0)/2 = 0.5; the others masked
        ]
    )
    mask = torch.tensor([[True, True, False], [True, False, False]])
    target = torch.tensor([1.0, 0.0])  # a vector [H] broadcasts over batch and positions
    # per sequence (0.5 + 2)/2 = 1.25 and 0.5, mean 0.875 (a token mean would give 1.0)
    assert losses.activation_mse(activations, target, mask).item() == pytest.approx(0.875)
    assert losses.activation_mse(activations, activations.clone(), mask).item() == 0.0


def test_rmu_loss_adds_the_weighted_retain_distance_to_the_frozen_states() -> None:
    forget = torch.tensor([[[3.0, 0.0]]])  # to c u = (1, 0): (4 + 0)/2 = 2
    control = torch.tensor([1.0, 0.0])
    mask = torch.tensor([[True]])
    retain, frozen = torch.tensor([[[1.0, 1.0]]]), torch.tensor([[[1.0, 3.0]]])  # (0 + 4)/2 = 2
    assert losses.rmu_loss(forget, control, mask, frozen, frozen, mask).item() == pytest.approx(2.0)
    assert losses.rmu_loss(forget, control, mask, retain, frozen, mask, retain_weight=0.25).item() == pytest.approx(
        2.0 + 0.25 * 2.0
    )
