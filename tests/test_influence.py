"""unlearn/influence.py: the Hessian-vector product against a finite difference and the explicit
Hessian, the solvers against a direct solve, and the edit vector's sign and scale by hand."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from lune.unlearn import influence  # noqa: E402


def tiny_lora_model(seed: int = 0):
    """A 1-layer Llama of width 8 (vocabulary 24) with rank-2 LoRA on q and v: 64 trainable numbers,
    eager attention (double backward), B randomised so the point is a generic one."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=24,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
        attn_implementation="eager",
    )
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(LlamaForCausalLM(config), lora).double()  # float64: exact comparisons
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    model.eval()
    return model


def batch_of(rows: list[list[int]]) -> dict:
    ids = torch.tensor(rows)
    labels = ids.clone()
    labels[:, :2] = -100  # a prompt of two tokens, not scored
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


BATCH = batch_of([[1, 5, 7, 9, 3, 2], [1, 4, 4, 8, 11, 2], [1, 6, 12, 13, 2, 2]])


def test_example_losses_are_the_mean_over_each_rows_scored_tokens() -> None:
    model = tiny_lora_model()
    logits = model(input_ids=BATCH["input_ids"]).logits
    row = 1
    by_hand = torch.nn.functional.cross_entropy(logits[row, 1:-1], BATCH["input_ids"][row, 2:])
    assert torch.allclose(influence.example_losses(model, BATCH)[row], by_hand)


def test_hvp_matches_a_finite_difference_of_gradients() -> None:
    model = tiny_lora_model()
    params = influence.trainable_parameters(model)
    v = torch.randn(sum(p.numel() for p in params), dtype=torch.float64)
    hv = influence.hvp(model, params, BATCH, v)

    def grad_at(shift: float):
        influence.apply_update(params, v, sign=shift)
        g = influence.gradient_sum(model, params, [BATCH]) / 3
        influence.apply_update(params, v, sign=-shift)
        return g

    # Llama's RMSNorm computes in float32 even in a float64 model: a smaller step meets its rounding
    eps = 1e-3
    finite = (grad_at(eps) - grad_at(-eps)) / (2 * eps)
    assert (hv - finite).abs().max() < 1e-4 * hv.abs().max()


def test_hvp_matches_the_explicit_hessian() -> None:
    model = tiny_lora_model(seed=1)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = influence.trainable_parameters(model)
    theta = influence.flatten(p.detach() for p in params).double()

    def loss_of(flat):
        tensors = dict(
            zip(names, [t.view_as(p) for t, p in zip(torch.split(flat, [p.numel() for p in params]), params)])
        )
        logits = torch.func.functional_call(model, tensors, (), {"input_ids": BATCH["input_ids"]}).logits
        labels = BATCH["labels"][:, 1:]
        token = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels.clamp(min=0), reduction="none")
        scored = (labels != -100).double()
        return ((token * scored).sum(1) / scored.sum(1)).mean()

    hessian = torch.autograd.functional.hessian(loss_of, theta)
    assert hessian.shape == (64, 64)
    v = torch.randn(64, dtype=torch.float64)
    assert torch.allclose(influence.hvp(model, params, BATCH, v).double(), hessian @ v, rtol=1e-5, atol=1e-8)


def spd_problem(n: int = 6, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=generator, dtype=torch.float64)
    h = m @ m.T / n + 0.5 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=generator, dtype=torch.float64)
    return h, b


def test_adam_solver_reaches_the_damped_direct_solution_and_reports_the_objective() -> None:
    h, b = spd_problem()
    damping = 0.1
    seen: list[float] = []
    result = influence.solve_adam(
        lambda x, i: h @ x, b, iterations=3000, lr=1e-2, init=1e-5, damping=damping, on_step=lambda i, v: seen.append(v)
    )
    direct = torch.linalg.solve(h + damping * torch.eye(6, dtype=torch.float64), b)
    assert torch.allclose(result.x, direct, atol=1e-3)
    assert seen == result.objective and len(seen) == 3000
    assert result.objective[-1] < result.objective[0]
    # the undamped objective at the damped solution: between the start's and the true minimum
    assert result.objective[-1] >= -0.5 * float(b @ torch.linalg.solve(h, b)) - 1e-9


def test_adam_solver_with_the_reference_settings_barely_moves() -> None:
    """lr 1e-5 for 20 steps moves each coordinate by at most 20 * 1e-5 (Adam's step is about lr)."""
    h, b = spd_problem()
    result = influence.solve_adam(lambda x, i: h @ x, b)
    assert (result.x - 1e-5).abs().max() <= 20 * 1e-5 + 1e-9


def test_cg_solver_matches_the_direct_solve() -> None:
    h, b = spd_problem(n=8, seed=3)
    result = influence.solve_cg(lambda x, i: h @ x, b, iterations=50, damping=0.01)
    direct = torch.linalg.solve(h + 0.01 * torch.eye(8, dtype=torch.float64), b)
    assert torch.allclose(result.x, direct, atol=1e-8)
    assert result.objective[-1] == pytest.approx(-0.5 * float(b @ direct), rel=1e-6)


def test_edit_vector_is_after_minus_before_over_n() -> None:
    model = tiny_lora_model()
    params = influence.trainable_parameters(model)
    before, after = batch_of([[1, 5, 7, 9, 3, 2]]), batch_of([[1, 5, 7, 10, 3, 2]])
    b = influence.edit_vector(model, params, [before], [after], n=4)
    g_before = influence.gradient_sum(model, params, [before])
    g_after = influence.gradient_sum(model, params, [after])
    assert torch.allclose(b, (g_after - g_before) / 4)
    removal = influence.edit_vector(model, params, [before], [], n=4)
    assert torch.allclose(removal, -g_before / 4)
    # theta - x along x = b (H = I) is theta + grad l / 4: a small step raises the removed example's loss
    loss_before = influence.example_losses(model, before).item()
    influence.apply_update(params, removal * 1e-2)  # sign -1: theta - x
    assert influence.example_losses(model, before).item() > loss_before
