"""Influence-function arithmetic on a model's trainable parameters (LLMEraser, arXiv 2412.00383).

The training loss over D (n facts) is ``L(theta) = (1/n) sum_z l(z; theta)``, ``l`` the mean
cross-entropy of one fact's scored tokens. Editing D (dropping facts, changing their answers or
questions) changes it to ``L'(theta) = L(theta) + (1/n) [sum_after l - sum_before l]``. At the trained
``theta`` (grad L = 0) one Newton step on L' gives the retrained parameters:

    theta' ~ theta - H^-1 b,    b = (sum_after grad l - sum_before grad l) / n,    H = Hessian of L.

For a removal ("after" is empty) that is ``theta + (1/n) H^-1 sum_removed grad l``: the standard
influence approximation. The reference code adds ``+x`` with the same ``b``; the sign here is the
one retraining confirms (tests/test_llmeraser.py).

``H`` is never formed: :func:`hvp` is a Hessian-vector product by double backward on a mini-batch,
and :func:`solve_adam` minimises ``0.5 x'Hx - b'x`` with Adam, whose weight decay ``lambda`` adds
``lambda x`` to the gradient, so it solves ``(H + lambda I) x = b`` (damping). :func:`solve_cg` is
conjugate gradients on the same damped system, for full-batch products.

Vectors are flat float32 tensors over the parameters in the order of ``trainable_parameters``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lune.unlearn.losses import IGNORE_INDEX

HvpFn = Callable[[Any, int], Any]  # (vector, iteration) -> H vector


def trainable_parameters(model: Any) -> list[Any]:
    """The parameters the influence estimate moves: those that require grad (adapter and saved modules)."""
    return [p for p in model.parameters() if p.requires_grad]


def flatten(tensors: Iterable[Any]) -> Any:
    import torch

    # float32 at least (half-precision weights), float64 kept (the tests' exact checks)
    return torch.cat([t.reshape(-1).to(torch.promote_types(t.dtype, torch.float32)) for t in tensors])


def unflatten(vector: Any, like: Sequence[Any]) -> list[Any]:
    """``vector`` cut into tensors shaped (and typed) as ``like``."""
    out, start = [], 0
    for p in like:
        out.append(vector[start : start + p.numel()].view_as(p).to(p.dtype))
        start += p.numel()
    return out


def example_losses(model: Any, batch: dict[str, Any]) -> Any:
    """Per-example loss [B]: the mean cross-entropy of each row's scored tokens (labels shifted as in
    transformers' causal-LM loss; rows with no scored token give 0)."""
    import torch

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    labels = batch["labels"][:, 1:]
    token = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), labels.clamp(min=0), reduction="none"
    )  # [B, T-1]
    scored = (labels != IGNORE_INDEX).float()
    return (token * scored).sum(1) / scored.sum(1).clamp(min=1)


def gradient_sum(model: Any, params: Sequence[Any], batches: Iterable[dict[str, Any]]) -> Any:
    """``sum_z grad l(z)`` over every example of ``batches`` (flat); zeros for no batch."""
    import torch

    dtype = torch.promote_types(params[0].dtype, torch.float32)
    total = torch.zeros(sum(p.numel() for p in params), device=params[0].device, dtype=dtype)
    for batch in batches:
        grads = torch.autograd.grad(example_losses(model, batch).sum(), params, allow_unused=True)
        total += flatten(g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params))
    return total


def edit_vector(
    model: Any,
    params: Sequence[Any],
    before: Iterable[dict[str, Any]],
    after: Iterable[dict[str, Any]],
    n: int,
) -> Any:
    """``b = (sum_after grad l - sum_before grad l) / n`` at the current parameters (module docstring)."""
    return (gradient_sum(model, params, after) - gradient_sum(model, params, before)) / n


def hvp(model: Any, params: Sequence[Any], batch: dict[str, Any], vector: Any) -> Any:
    """``H_batch @ vector``: the Hessian of the batch's mean example loss w.r.t. ``params``, times a
    flat vector, by double backward (needs eager attention on CPU)."""
    import torch

    loss = example_losses(model, batch).mean()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    parts = unflatten(vector.detach(), params)
    dot = sum((g * v).sum() for g, v in zip(grads, parts))
    second = torch.autograd.grad(dot, params, allow_unused=True)
    return flatten(s if s is not None else torch.zeros_like(p) for s, p in zip(second, params)).detach()


def full_hvp(model: Any, params: Sequence[Any], batches: Sequence[dict[str, Any]], vector: Any) -> Any:
    """``H @ vector`` with H the Hessian of the mean example loss over every example of ``batches``."""
    total, count = None, 0
    for batch in batches:
        size = int(batch["input_ids"].shape[0])
        part = hvp(model, params, batch, vector) * size
        total = part if total is None else total + part
        count += size
    return total / count


def quadratic(x: Any, hx: Any, b: Any) -> float:
    """The solver's objective ``0.5 x'Hx - b'x`` (its minimum is ``-0.5 b'H^-1 b``)."""
    return float(0.5 * (x @ hx) - b @ x)


@dataclass
class SolveResult:
    """The solution and the objective ``0.5 x'Hx - b'x`` at each iteration (before its step)."""

    x: Any
    objective: list[float] = field(default_factory=list)


def solve_adam(
    hvp_fn: HvpFn,
    b: Any,
    *,
    iterations: int = 20,
    lr: float = 1e-5,
    init: float = 1e-5,
    damping: float = 1e-5,
    on_step: Callable[[int, float], None] | None = None,
) -> SolveResult:
    """Minimise ``0.5 x'Hx - b'x`` with Adam from ``x = init`` everywhere (the reference solver).

    ``hvp_fn(x, i)`` gives ``H x`` (a mini-batch estimate at iteration i). The gradient ``Hx - b`` is
    set directly (the quadratic's exact gradient, no third backward); Adam's weight decay ``damping``
    adds ``damping * x``, so the fixed point is ``(H + damping I)^-1 b``. ``on_step(i, objective)``
    reports progress."""
    import torch

    x = torch.nn.Parameter(torch.full_like(b, init))
    optimizer = torch.optim.Adam([x], lr=lr, weight_decay=damping)
    result = SolveResult(x=x.detach())
    for i in range(iterations):
        hx = hvp_fn(x.detach(), i)
        value = quadratic(x.detach(), hx, b)
        result.objective.append(value)
        if on_step is not None:
            on_step(i, value)
        optimizer.zero_grad()
        x.grad = (hx - b).detach()
        optimizer.step()
    result.x = x.detach().clone()
    return result


def solve_cg(
    hvp_fn: HvpFn,
    b: Any,
    *,
    iterations: int = 20,
    damping: float = 1e-5,
    tolerance: float = 1e-8,
    on_step: Callable[[int, float], None] | None = None,
) -> SolveResult:
    """Conjugate gradients on ``(H + damping I) x = b`` from ``x = 0`` (use a full-batch ``hvp_fn``:
    CG assumes the same H at every iteration). Stops at ``iterations`` or when the residual norm falls
    below ``tolerance * |b|``; stops too on non-positive curvature (H + damping I not positive there),
    keeping the iterate reached."""
    import torch

    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = float(r @ r)
    result = SolveResult(x=x)
    limit = tolerance * float(b.norm())
    for i in range(iterations):
        hp = hvp_fn(p, i) + damping * p
        curvature = float(p @ hp)
        if curvature <= 0:
            break
        alpha = rr / curvature
        x = x + alpha * p
        r = r - alpha * hp
        # objective of the damped system at x, from the residual: 0.5 x'(b - r) - b'x
        value = float(0.5 * (x @ (b - r)) - b @ x)
        result.objective.append(value)
        if on_step is not None:
            on_step(i, value)
        new_rr = float(r @ r)
        if new_rr**0.5 < limit:
            break
        p = r + (new_rr / rr) * p
        rr = new_rr
    result.x = x
    return result


def apply_update(params: Sequence[Any], x: Any, *, sign: float = -1.0) -> None:
    """``theta += sign * x`` in place (default ``theta - x``: the Newton step of the module docstring)."""
    import torch

    with torch.no_grad():
        for p, dx in zip(params, unflatten(x, params)):
            p.add_(sign * dx)
