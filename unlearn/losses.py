"""Losses of the unlearning methods, as pure tensor functions (no model, no data loading).

Shapes: ``B`` sequences, ``T`` positions, ``V`` vocabulary. ``labels`` hold the token each position
is scored on, ``IGNORE_INDEX`` (-100) where nothing is scored (prompt, padding), in the same layout
as the input ids: the usual causal shift (logits at t predict the token at t+1) happens in here.

Each method's loss names its source equation:

- LUNE (arXiv 2512.07375, the objective "L(phi) = -sum log P_{theta,phi}(y^- | x)"): NLL of the negative
  answer given the prompt, minimised over the LoRA parameters phi only.
- Gradient ascent (Jang et al., 2023; TOFU's `grad_ascent`): the NLL of the true answer, maximised.
- Gradient difference (Liu et al., 2022; TOFU's `grad_diff`): ascent on the forget set plus descent
  on the retain set.
- NPO (Zhang et al., 2024, the NPO loss): ``L = -(2/beta) E[log sigmoid(-beta * log(pi_theta(y|x) / pi_ref(y|x)))]``
  over forget pairs, with log-probabilities summed over the answer tokens.
- IDK (TOFU's `idk`): NLL of a refusal given the forget prompt.
- SimNPO (Fan et al., 2024): ``-(2/beta) E[log sigmoid(beta * (NLL/|y| - delta))]``, NPO without reference
  model, length-normalised, with a margin; plus the retain NLL.
- RMU (Li et al., 2024, WMDP): the hidden states of one layer pushed to a fixed random vector on forget
  answers, held at the frozen model's on retain answers (mean squared distances).
- KL anchor: ``KL(p_ref || p_theta)`` per scored token on retain facts, the frozen model as ref.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a loss runs: the config (and `lune --help`) needs the
    import torch  # method registry, not torch (about 1.5 s of start-up)

IGNORE_INDEX = -100


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each scored token, and the mask of scored positions.

    logits: [B, T, V]; labels: [B, T] (IGNORE_INDEX where not scored).
    Returns (logp [B, T-1], mask [B, T-1] float): position t of the result scores labels[:, t + 1].
    """
    import torch

    shift_logits = logits[:, :-1, :].float()  # [B, T-1, V]
    shift_labels = labels[:, 1:]  # [B, T-1]
    mask = (shift_labels != IGNORE_INDEX).float()
    safe = shift_labels.clamp_min(0)  # gather needs a valid index; masked positions are zeroed below
    logp = torch.log_softmax(shift_logits, dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # [B, T-1]
    return logp * mask, mask


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of each sequence's scored tokens: log pi(y | x). [B, T, V], [B, T] -> [B]."""
    logp, _ = token_logprobs(logits, labels)
    return logp.sum(-1)


def nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per scored token over the batch (the causal-LM loss). -> scalar."""
    logp, mask = token_logprobs(logits, labels)
    return -(logp.sum() / mask.sum().clamp_min(1.0))


def lune_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """LUNE: ``L(phi) = -sum log P(y^- | x)`` on negative targets, token-averaged. -> scalar."""
    return nll(logits, labels)


def idk_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """IDK: ``-sum log P(y_refusal | x)`` on refusal targets (same form as LUNE, other targets). -> scalar."""
    return nll(logits, labels)


def grad_ascent_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient ascent: ``+sum log P(y_true | x)`` minimised, i.e. the true answer's NLL maximised. -> scalar."""
    return -nll(logits, labels)


def grad_diff_loss(
    forget_logits: torch.Tensor,
    forget_labels: torch.Tensor,
    retain_logits: torch.Tensor,
    retain_labels: torch.Tensor,
    retain_weight: float = 1.0,
) -> torch.Tensor:
    """Gradient difference: ``-NLL(forget) + w * NLL(retain)``. -> scalar."""
    return grad_ascent_loss(forget_logits, forget_labels) + retain_weight * nll(retain_logits, retain_labels)


def npo_loss(policy_logps: torch.Tensor, reference_logps: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """NPO (Zhang et al., 2024): ``-(2/beta) mean log sigmoid(-beta * (log pi - log pi_ref))``.

    policy_logps, reference_logps: [B] summed answer log-probabilities (:func:`sequence_logprobs`)
    under the model being trained and the frozen reference. At pi = pi_ref the loss is
    ``(2/beta) log 2`` and its gradient that of gradient ascent; it vanishes as pi falls below pi_ref.
    -> scalar.
    """
    log_ratio = policy_logps - reference_logps  # [B]
    import torch.nn.functional as F

    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()


def kl_to_reference(logits: torch.Tensor, reference_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Retain anchor: ``KL(p_ref || p_theta)`` of the next-token distributions, averaged over scored
    positions. logits, reference_logits: [B, T, V]; labels: [B, T]. -> scalar."""
    import torch

    mask = (labels[:, 1:] != IGNORE_INDEX).float()  # [B, T-1]
    logp = torch.log_softmax(logits[:, :-1, :].float(), dim=-1)  # [B, T-1, V]
    ref_logp = torch.log_softmax(reference_logits[:, :-1, :].float(), dim=-1)
    per_position = (ref_logp.exp() * (ref_logp - logp)).sum(-1)  # [B, T-1]
    return (per_position * mask).sum() / mask.sum().clamp_min(1.0)


def sequence_mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per scored token of each sequence: ``-log pi(y | x) / |y|``.
    [B, T, V], [B, T] -> [B] (a sequence with no scored token gives 0)."""
    logp, mask = token_logprobs(logits, labels)
    return -(logp.sum(-1) / mask.sum(-1).clamp_min(1.0))


def simnpo_forget_loss(mean_nll: torch.Tensor, beta: float = 4.5, delta: float = 0.0) -> torch.Tensor:
    """SimNPO's forget term (Fan et al., 2024, "Simplicity Prevails"), as open-unlearning computes it
    (``src/trainer/unlearn/simnpo.py``): ``-(2/beta) mean_b log sigmoid(beta * (NLL_b - delta))``.

    mean_nll: [B] length-normalised NLL of each forget answer (:func:`sequence_mean_nll`). The
    paper writes ``-(2/beta) log sigmoid(-(beta/|y|) log pi(y|x) - gamma)``: the same with its margin
    ``gamma = beta * delta``. No reference model. Minimising it raises the NLL; its gradient in
    ``NLL_b`` is ``-2 sigmoid(-beta (NLL_b - delta)) / B``: gradient ascent's ``-1/B`` at
    ``NLL_b = delta``, fading as the NLL passes the margin. -> scalar.
    """
    import torch.nn.functional as F

    return -(2.0 / beta) * F.logsigmoid(beta * (mean_nll - delta)).mean()


def simnpo_loss(
    forget_logits: torch.Tensor,
    forget_labels: torch.Tensor,
    retain_logits: torch.Tensor,
    retain_labels: torch.Tensor,
    *,
    beta: float = 4.5,
    delta: float = 0.0,
    forget_weight: float = 0.125,
    retain_weight: float = 1.0,
) -> torch.Tensor:
    """SimNPO with its retain term (open-unlearning's ``gamma * forget + alpha * retain``):
    ``forget_weight * simnpo_forget_loss(NLL_b(forget)) + retain_weight * NLL(retain)``, the retain
    NLL a token mean over the batch (:func:`nll`). -> scalar."""
    forget = simnpo_forget_loss(sequence_mean_nll(forget_logits, forget_labels), beta, delta)
    return forget_weight * forget + retain_weight * nll(retain_logits, retain_labels)


def activation_mse(activations: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMU's distance of hidden states to a target, as open-unlearning's ``compute_activation_loss``:
    ``mean_b (1/n_b) sum_{t scored in b} (1/H) ||a_bt - target_bt||^2``, ``n_b`` the scored positions of
    sequence ``b``: a mean over the width, a mean over each sequence's positions, a mean over the batch.

    activations: [B, T, H]; target: [B, T, H] or anything that broadcasts to it (a vector [H]);
    mask: [B, T], true where a position counts. -> scalar.
    """
    squared = (activations.float() - target.float()).pow(2).mean(-1)  # [B, T]
    mask = mask.float()
    return ((squared * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)).mean()


def rmu_loss(
    forget_hidden: torch.Tensor,
    control: torch.Tensor,
    forget_mask: torch.Tensor,
    retain_hidden: torch.Tensor,
    frozen_retain_hidden: torch.Tensor,
    retain_mask: torch.Tensor,
    retain_weight: float = 1.0,
) -> torch.Tensor:
    """RMU (Li et al., 2024, WMDP): ``L = activation_mse(h_l(forget), c u) + alpha * activation_mse(h_l(retain),
    h_l^frozen(retain))``, ``h_l`` the hidden states after the steered layer, ``c u`` the control vector
    [H] (a fixed random unit vector scaled by the steering coefficient), ``alpha`` the retain weight.
    Hidden states [B, T, H], masks [B, T] (:func:`activation_mse`). -> scalar."""
    forget = activation_mse(forget_hidden, control, forget_mask)
    return forget + retain_weight * activation_mse(retain_hidden, frozen_retain_hidden, retain_mask)
