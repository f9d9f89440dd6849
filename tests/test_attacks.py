"""The attacks of the evaluate stage: the RTN quantizer's guarantees (pure tensors), the logit lens
against the model's own logits, a merged copy against the adapter it merges, the config and
command-line options, and `evaluate_models` with attacks on storing and reporting their rows for
the base, unlearned and retain models."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
from _generate_data import store_sample_facts

from lune.data.store import Store
from lune.evaluation.config import EvaluateConfig

REPO = Path(__file__).resolve().parents[1]


# -- the quantizer -----------------------------------------------------------------------------


def weights(rows: int = 6, cols: int = 200, seed: int = 0):
    import torch

    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("zero_point", [False, True])
@pytest.mark.parametrize("group_size", [64, 128, 7])
def test_rtn_error_is_at_most_half_a_step(bits: int, zero_point: bool, group_size: int) -> None:
    from lune.evaluation.attacks.rtn import fake_quantize, quantization_step

    w = weights()  # 200 inputs: every group size leaves a shorter last group
    q = fake_quantize(w, bits, group_size, zero_point=zero_point)
    step = quantization_step(w, bits, group_size, zero_point=zero_point)
    assert q.shape == w.shape and q.dtype == w.dtype
    assert ((w - q).abs() <= step / 2 * (1 + 1e-5)).all()
    assert (q != w).any()  # it did round something
    if not zero_point:  # on the grid: a whole number of steps, at most qmax of them
        levels = q / step
        assert torch_close(levels, levels.round(), atol=1e-4)
        assert levels.abs().max() <= 2 ** (bits - 1) - 1 + 1e-4


def torch_close(a, b, atol: float = 0.0, rtol: float = 0.0) -> bool:
    import torch

    return bool(torch.allclose(a, b, atol=atol, rtol=rtol))


@pytest.mark.parametrize("zero_point", [False, True])
def test_rtn_is_idempotent(zero_point: bool) -> None:
    from lune.evaluation.attacks.rtn import fake_quantize

    once = fake_quantize(weights(), 4, 64, zero_point=zero_point)
    twice = fake_quantize(once, 4, 64, zero_point=zero_point)
    assert torch_close(twice, once, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("zero_point", [False, True])
def test_eight_bits_err_less_than_four(zero_point: bool) -> None:
    from lune.evaluation.attacks.rtn import fake_quantize

    w = weights()
    err4 = (w - fake_quantize(w, 4, 64, zero_point=zero_point)).abs().mean()
    err8 = (w - fake_quantize(w, 8, 64, zero_point=zero_point)).abs().mean()
    assert err8 < err4 / 8  # 16x finer steps: about 16x smaller mean error


def test_an_update_below_half_a_step_vanishes_and_one_above_survives() -> None:
    import torch

    from lune.evaluation.attacks.rtn import fake_quantize, quantization_step

    on_grid = fake_quantize(weights(), 4, 64)
    step = quantization_step(on_grid, 4, 64)
    # the group's extremes stay put (they fix the step); every other weight moves by < half a step
    inner = (on_grid / step).round().abs() < 7
    shift = (torch.rand(on_grid.shape, generator=torch.Generator().manual_seed(1)) - 0.5) * 0.98 * step
    assert torch.equal(fake_quantize(on_grid + shift * inner, 4, 64), on_grid)
    # 0.51 of a step (towards zero, so the extremes hold) lands on the next level
    nudge = -torch.sign(on_grid) * 0.51 * step * inner * (on_grid != 0)
    moved = fake_quantize(on_grid + nudge, 4, 64) != on_grid
    assert moved.sum() == (inner & (on_grid != 0)).sum()


def test_a_short_last_group_has_its_own_step() -> None:
    import torch

    from lune.evaluation.attacks.rtn import fake_quantize, quantization_step

    w = weights(cols=70)
    w[:, 64:] *= 0.01  # the 6-input tail is small: a shared step would round it all to zero
    q = fake_quantize(w, 4, 64)
    assert torch.equal(q[:, :64], fake_quantize(w[:, :64], 4, 64))
    assert torch.equal(q[:, 64:], fake_quantize(w[:, 64:], 4, 64))  # as if it were a matrix of its own
    step = quantization_step(w, 4, 64)
    assert torch_close(step[:, 64], w[:, 64:].abs().amax(1) / 7)
    assert (q[:, 64:] != 0).any()


def test_zero_point_fits_a_one_sided_group_better() -> None:
    import torch

    from lune.evaluation.attacks.rtn import fake_quantize

    w = 1 + torch.rand(4, 64, generator=torch.Generator().manual_seed(2))  # all in [1, 2]
    symmetric = (w - fake_quantize(w, 4, 64)).abs().mean()
    asymmetric = (w - fake_quantize(w, 4, 64, zero_point=True)).abs().mean()
    assert asymmetric < symmetric / 4  # 15 steps over [1, 2] instead of 7 over [0, 2]
    q = fake_quantize(w, 4, 64, zero_point=True)
    assert len(torch.unique(q[0])) <= 16
    # extremes within half a step; a constant or all-zero group comes back as it was
    assert torch_close(q.amin(1), w.amin(1), atol=(1 / 15) / 2 + 1e-6)
    flat = torch.tensor([[0.5] * 8, [-0.3] * 8, [0.0] * 8])
    assert torch.equal(fake_quantize(flat, 4, 8, zero_point=True), flat)
    assert torch_close(fake_quantize(flat, 4, 8), flat, rtol=1e-6)


def test_rtn_rejects_bad_settings() -> None:
    from lune.evaluation.attacks.rtn import fake_quantize

    with pytest.raises(ValueError, match="group_size"):
        fake_quantize(weights(), 4, 0)
    with pytest.raises(ValueError, match="bits"):
        fake_quantize(weights(), 1, 64)


# -- config, options, registry ---------------------------------------------------------------


def test_attack_config_and_options() -> None:
    from lune.cli_options import add_model_options, apply_options
    from lune.evaluation.attacks.registry import registered

    assert set(registered()) == {"quantization", "logit_lens", "relearning"}
    assert EvaluateConfig().attacks == []  # off by default: the embedded default's run is unchanged
    for name in registered():  # the config's help names every attack
        assert name in EvaluateConfig.model_fields["attacks"].description
    parser = argparse.ArgumentParser()
    add_model_options(parser, EvaluateConfig)
    args = parser.parse_args(
        ["--attacks", "quantization,logit_lens", "--quantization-bits", "4", "--quantization-schemes", "asymmetric"]
    )
    config = apply_options(args, EvaluateConfig, {"logit_lens": {"top_k": 2}}, source="test")
    assert config.attacks == ["quantization", "logit_lens"]
    assert config.quantization.bits == [4] and config.quantization.group_sizes == [64, 128]
    assert config.quantization.schemes == ["asymmetric"] and config.logit_lens.top_k == 2
    with pytest.raises(ValueError, match=r"unknown attack.*known: logit_lens, quantization"):
        EvaluateConfig(attacks=["pruning"])
    with pytest.raises(ValueError, match="between 2 and 8"):
        EvaluateConfig(quantization={"bits": [16]})


# -- the logit lens and the merged copy on the tiny model --------------------------------------


def test_logit_lens_last_layer_is_the_models_own_logits(tiny_model_dir: Path) -> None:
    import torch

    from lune.core.models import load_causal_lm
    from lune.evaluation.attacks.logit_lens import final_norm, key_target, lens_logits
    from lune.evaluation.probes import EvalProbe

    model, tokenizer = load_causal_lm(tiny_model_dir)
    with torch.no_grad():  # an untrained norm (weight 1) maps a normalised vector to itself: give it a shape
        final_norm(model).weight.copy_(torch.linspace(0.5, 1.5, model.config.hidden_size))
    probe = EvalProbe(
        "forget", "p1", "Who wrote it?", "It was written by Basil Mahfouz Al-Kuwaiti.", "Basil Mahfouz Al-Kuwaiti"
    )
    ids, index, found = key_target(tokenizer, probe)
    assert found and tokenizer.decode(ids[index:]).strip().startswith("Basil Mahfouz")
    assert not tokenizer.decode(ids[index - 1 : index]).strip().startswith("B")
    input_ids = torch.tensor([ids, ids])
    mask = torch.ones_like(input_ids)
    positions = torch.tensor([index - 1, 3])
    lens = lens_logits(model, input_ids, mask, positions)
    assert lens.shape == (model.config.num_hidden_layers, 2, model.config.vocab_size)
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
    own = out.logits[torch.arange(2), positions]
    assert torch_close(lens[-1], own, atol=1e-5)
    # transformers hands back the last layer already normalised: normalising it again would change it
    last = out.hidden_states[-1][torch.arange(2), positions]
    assert not torch_close(final_norm(model)(last), last, atol=1e-3)
    assert not torch_close(lens[0], own, atol=1e-3)  # an earlier layer reads differently


def test_merged_copy_computes_what_the_adapter_does(tiny_model_dir: Path) -> None:
    import torch

    from lune.core.models import load_causal_lm
    from lune.evaluation.attacks.quantization import linear_weights, merged_copy

    model, _ = load_causal_lm(tiny_model_dir)
    wrapped = noisy_adapter(model)
    ids = torch.tensor([[1, 5, 9, 14, 30]])
    merged = merged_copy(wrapped)
    with torch.no_grad():
        assert torch_close(merged(input_ids=ids).logits, wrapped(input_ids=ids).logits, atol=1e-4)
        with wrapped.disable_adapter():
            assert not torch_close(merged(input_ids=ids).logits, wrapped(input_ids=ids).logits, atol=1e-3)
    names = linear_weights(merged)
    assert "lm_head" not in names and len(names) == 7 * model.config.num_hidden_layers  # q k v o gate up down
    assert any("lora" in n for n, _ in wrapped.named_parameters())  # the original keeps its adapter


def noisy_adapter(model, scale: float = 0.05, seed: int = 0):
    """A LoRA adapter on ``model`` with random B (an untrained adapter's B is zero: no update)."""
    import torch

    from lune.unlearn.config import LoraSettings
    from lune.unlearn.lora import attach_lora

    wrapped = attach_lora(model, LoraSettings(rank=4, dropout=0.0), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    wrapped.eval()
    return wrapped


# -- the stage with attacks on ----------------------------------------------------------------


def test_evaluate_with_attacks_stores_and_reports_them(tiny_model_dir: Path, db_path: Path, tmp_path: Path) -> None:
    from lune.core.models import load_causal_lm
    from lune.data import evaluation_queries as q
    from lune.data.ingest import ingest
    from lune.evaluation.evaluate import evaluate_models
    from lune.unlearn.config import LoraSettings
    from lune.unlearn.lora import attach_lora

    adapters = {}
    for label in ("still", "noisy"):  # "still": B = 0, the unlearning update is nothing at all
        model, _ = load_causal_lm(tiny_model_dir)
        wrapped = noisy_adapter(model) if label == "noisy" else attach_lora(model, LoraSettings(rank=4))
        wrapped.save_pretrained(tmp_path / label)
        adapters[label] = str(tmp_path / label)
    config = EvaluateConfig(
        attacks=["quantization", "logit_lens"],
        quantization={"bits": [4], "group_sizes": [64]},
        max_per_set=4,
        max_new_tokens=4,
        include_dataset_probes=False,
        mia=False,
        tofu=False,
        plots=False,
    )
    with Store(db_path) as store:
        ingest(store, {"format": "tofu", "path": str(REPO / "data" / "sample" / "tofu"), "forget": "forget01"})
        outcome = evaluate_models(
            store, tiny_model_dir, adapters, retain_model=tiny_model_dir, out_dir=tmp_path / "eval", config=config
        )
        rows = {
            (r["model_label"], r["metric"]): {**r, "detail": json.loads(r["detail"] or "{}")}
            for r in q.run_results(store, outcome.run_id)
        }
    labels = ("base", "still", "noisy", "retain_model")
    layers = [f"attack.logit_lens.layer_{i}" for i in range(1, 5)]
    for label in labels:
        for metric in (
            "attack.quantization.full.forget_recall",
            "attack.quantization.rtn4_g64.forget_recall",
            "attack.quantization.rtn4_g64.gur",
            "attack.logit_lens.recovered",
            *layers,
        ):
            value = rows[label, metric]["value"]
            assert value is None or 0 <= value <= 1, (label, metric)  # GUR: None where the base recalls nothing
    flips = {label: rows.get((label, "attack.quantization.rtn4_g64.flip_rate")) for label in labels}
    assert flips["base"] is None and flips["retain_model"] is None
    assert flips["still"]["value"] == 0 and flips["still"]["detail"]["changed_full_precision"] == 0
    assert flips["noisy"]["value"] > 0 and flips["noisy"]["detail"]["changed_full_precision"] > 0.9
    assert flips["noisy"]["value"] < flips["noisy"]["detail"]["changed_full_precision"]  # small updates round away
    # the base model, the unchanged adapter and the retain model (the same weights here) read alike
    for metric in ("attack.logit_lens.recovered", *layers, "attack.quantization.rtn4_g64.forget_recall"):
        assert rows["still", metric]["value"] == rows["base", metric]["value"] == rows["retain_model", metric]["value"]
    lens = rows["base", "attack.logit_lens.recovered"]
    assert lens["n"] == 4 and len(lens["detail"]["per_layer"]) == 4
    assert lens["value"] >= max(lens["detail"]["per_layer"])  # any layer: at least the best one
    report = (tmp_path / "eval" / "report.md").read_text(encoding="utf-8")
    assert "## Does it hold" in report and "| quantization.rtn4_g64.flip_rate |" in report
    summary = report.split("## Does it hold")[1].split("\n\n")[2]  # one row per attack, a column per model
    assert summary.startswith("| attack | measure | base | noisy | still | retain_model |")
    assert (
        "| logit lens | recovered (any layer) |" in summary and "| quantization (rtn4_g64) | forget recall |" in summary
    )
    assert "flip_rate" not in summary  # in the table of all measures below
    data = json.loads((tmp_path / "eval" / "report.json").read_text(encoding="utf-8"))
    assert any(m["metric"] == "attack.logit_lens.recovered" for m in data["metrics"])


@pytest.mark.slow
def test_attacks_on_a_taught_model(
    tmp_path_factory: pytest.TempPathFactory, db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tiny model taught the sample subset (test_teach's cache) against its retain model."""
    from lune.data import evaluation_queries as q
    from lune.evaluation.evaluate import evaluate_models
    from lune.unlearn.sample_set import sample_facts
    from lune.unlearn.teach import teach
    from tests.test_teach import SUBSET, TEST_TEACH, shared_workdir

    facts = sample_facts(SUBSET)
    taught = teach(facts, shared_workdir(tmp_path_factory), TEST_TEACH, progress=False)
    config = EvaluateConfig(
        attacks=["quantization", "logit_lens"],
        quantization={"bits": [8, 4], "group_sizes": [64]},
        max_per_set=20,
        mia=False,
        tofu=False,
        plots=False,
    )
    with Store(db_path) as store:
        store_sample_facts(store, facts)
        outcome = evaluate_models(
            store, taught.model_dir, {}, retain_model=taught.retain_model_dir, out_dir=tmp_path, config=config
        )
        rows = {(r["model_label"], r["metric"]): r["value"] for r in q.run_results(store, outcome.run_id)}
    # progress on stderr, one line per model and attack (minutes each on a real model)
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lune: [evaluate] attack")]
    assert [re.sub(r"\d+ s$", "N s", line) for line in said] == [
        f"lune: [evaluate] attack {name}: {what}"
        for name in ("quantization", "logit_lens")
        for what in ("model 1/2 (base), N s", "model 2/2 (retain_model), N s", "done in N s")
    ]
    full, rtn8 = "attack.quantization.full", "attack.quantization.rtn8_g64"
    assert rows["base", f"{full}.forget_recall"] >= 0.9 and rows["base", f"{full}.gur"] == 1.0  # its own reference
    assert rows["base", f"{rtn8}.forget_recall"] >= 0.9 and rows["base", f"{rtn8}.gur"] >= 0.9  # 8 bits keep it
    assert rows["retain_model", f"{full}.forget_recall"] <= 0.2 and rows["retain_model", f"{full}.gur"] >= 0.9
    assert ("base", "attack.quantization.rtn4_g64.forget_recall") in rows
    # the lens finds what the model knows and not what it never saw
    assert rows["base", "attack.logit_lens.recovered"] >= 0.9 and rows["base", "attack.logit_lens.layer_4"] >= 0.9
    assert rows["retain_model", "attack.logit_lens.recovered"] <= 0.4
