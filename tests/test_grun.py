"""GRUN (unlearn/methods/grun.py) and its interventions (core/interventions.py) on the tiny Llama.

- the last prompt position is found whatever the padding, with or without the answer after it;
- the gate forced shut gives exactly the base model's logits and answers; open, only positions from
  the last prompt token on change;
- training moves only the edits and gates (the base weights never change), R keeps orthonormal rows
  and its edit is not zero (the weight-decay trap), and the gates open more on forget than on
  retain prompts;
- a saved and reloaded artefact gives the trained model's outputs exactly, and `lune unlearn`'s
  output folder (manifest kind ``interventions``) is what evaluation loads, through transformers,
  with every metric and attack computed on the edited model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from lune.core import interventions as ic
from lune.data.errors import LuneError
from lune.unlearn.config import UnlearnConfig
from lune.unlearn.inputs import build_data
from lune.unlearn.methods.grun import Grun, GrunOptions, default_layers, gate_bce
from lune.unlearn.sample_set import curated_set, retain_of, sample_facts

REPO = Path(__file__).resolve().parents[1]
FEW = {"forget": 6, "retain": 6, "utility": 0}
# Few short steps; no recall check rule stops it early (one check, at the end).
STEPS = dict(
    max_steps=24,
    batch_size=4,
    retain_batch_size=4,
    eval_every=1000,
    monitor_forget=2,
    monitor_retain=2,
    max_new_tokens=4,
    gur_tolerance=0.99,
    usr_target=1.0,
    prompt_kinds=["question"],
)


def load(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return model, tokenizer


def teacher_forced(tokenizer: Any, questions: list[str], answers: list[str]) -> dict[str, Any]:
    """Right-padded prompt + answer batches, as core.likelihood builds them (no labels)."""
    import torch

    from lune.core.prompt_format import format_completion, render_prompt

    rows = [
        tokenizer(render_prompt(tokenizer, q))["input_ids"]
        + tokenizer(format_completion(a), add_special_tokens=False)["input_ids"]
        for q, a in zip(questions, answers)
    ]
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def wide_open(hidden: int, layers: list[int], tokenizer: Any) -> ic.Interventions:
    """Interventions that change the model: gates open (bias +20) and a large target W h + b."""
    import torch

    made = ic.Interventions.create(layers, hidden, prompt_marker=ic.prompt_marker(tokenizer), seed=1)
    with torch.no_grad():
        for module in made.modules.values():
            module.gate[-1].bias.fill_(20.0)
            module.source.bias.fill_(30.0)
    return made


# -- pure parts -----------------------------------------------------------------------------------


def test_default_layers_scale_the_references_to_the_depth() -> None:
    assert default_layers(32) == [20, 25, 31]
    assert default_layers(30) == [18, 23, 29]
    assert default_layers(4) == [2, 3]
    assert default_layers(1) == [0]


def test_gate_bce_by_hand() -> None:
    import torch

    # all gates at 1/2: log 2 whatever the labels
    assert gate_bce([torch.zeros(2)], [torch.zeros(3)]).item() == pytest.approx(math.log(2))
    # forget gates at 3/4 (logit ln 3) and retain gates at 1/4: each term -log(3/4)
    value = gate_bce([torch.full((2,), math.log(3))] * 2, [torch.full((1,), -math.log(3))] * 2).item()
    assert value == pytest.approx(-math.log(0.75), rel=1e-6)
    # a wrong gate costs more than a right one: forget at 1/4 and retain at 3/4
    assert gate_bce([torch.tensor([-math.log(3)])], [torch.tensor([math.log(3)])]).item() == pytest.approx(
        -math.log(0.25), rel=1e-6
    )


def test_last_prompt_positions_with_either_padding() -> None:
    import torch

    marker = [7, 8]
    pad = 0
    right = torch.tensor([[1, 5, 7, 8, 9, 9, pad], [1, 7, 8, pad, pad, pad, pad]])
    right_mask = (right != pad).long()
    assert ic.last_prompt_positions(right, right_mask, marker).tolist() == [3, 2]
    left = torch.tensor([[pad, pad, 1, 5, 6, 7, 8], [1, 7, 8, 3, 7, 8, 4]])  # the last occurrence counts
    assert ic.last_prompt_positions(left, (left != pad).long(), marker).tolist() == [6, 5]
    no_marker = torch.tensor([[pad, 1, 2, 3], [1, 2, pad, pad]])
    assert ic.last_prompt_positions(no_marker, (no_marker != pad).long(), marker).tolist() == [3, 1]
    assert ic.last_prompt_positions(no_marker, None, []).tolist() == [3, 3]
    labels = torch.tensor([[-100, -100, -100, 4, 5], [-100, 3, 4, -100, -100]])
    assert ic.positions_from_labels(labels).tolist() == [2, 0]


def test_the_marker_finds_the_prompts_last_token(tiny_model_dir: Path) -> None:
    from lune.core.prompt_format import render_prompt

    _, tokenizer = load(tiny_model_dir)
    marker = ic.prompt_marker(tokenizer)
    assert marker, "a rendered prompt ends with fixed tokens"
    questions = ["Where was Jaime Vasquez born?", "What did she write in 1999", "Name it."]
    batch = teacher_forced(tokenizer, questions, ["In Santiago.", "Novels about the sea.", "Nothing?"])
    found = ic.last_prompt_positions(batch["input_ids"], batch["attention_mask"], marker).tolist()
    assert found == [len(tokenizer(render_prompt(tokenizer, q))["input_ids"]) - 1 for q in questions]


def test_bad_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(LuneError, match="rank 0"):
        ic.Interventions.create([1], 16, rank=0)
    with pytest.raises(LuneError, match=r"no interventions\.json"):
        ic.load(tmp_path)
    with pytest.raises(ValueError, match="grun already descends on retain facts"):
        Grun.check_config(UnlearnConfig(method="grun", retain_anchor="nll"))
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        UnlearnConfig(method="grun", gradient_checkpointing=True)
    assert GrunOptions().gate_weight == 10 and GrunOptions().rank == 4 and GrunOptions().learning_rate == 4e-3


def test_interventions_are_answered_through_transformers_whatever_the_backend() -> None:
    from lune.core.models import ModelSpec
    from lune.evaluation.config import EvaluateConfig
    from lune.evaluation.inference import generation_backend

    vllm = EvaluateConfig.model_construct(backend="vllm")
    assert generation_backend(ModelSpec("grun", "m", None, "grun", interventions_path="g"), vllm) == "transformers"
    assert generation_backend(ModelSpec("lune", "m", "a", "lune"), vllm) == "vllm"


# -- attached to the tiny model -------------------------------------------------------------------


def test_a_shut_gate_gives_exactly_the_base_model(tiny_model_dir: Path) -> None:
    import torch

    from lune.core.greedy import greedy_answers

    model, tokenizer = load(tiny_model_dir)
    questions = ["Where was Jaime Vasquez born?", "Who is Chukwu Akabueze?"]
    batch = teacher_forced(tokenizer, questions, ["In Santiago, Chile.", "A writer from Lagos."])
    with torch.no_grad():
        base = model(**batch).logits
    base_answers = greedy_answers(model, tokenizer, questions, max_new_tokens=6)
    handle = ic.attach(model, wide_open(model.config.hidden_size, [1, 3], tokenizer))
    with torch.no_grad():
        with handle.force_gate(0.0):
            shut = model(**batch).logits
            shut_answers = greedy_answers(model, tokenizer, questions, max_new_tokens=6)
        opened = model(**batch).logits
    assert torch.equal(shut, base) and shut_answers == base_answers
    # open: nothing before the last prompt token changes (causal), everything after it may
    last = ic.last_prompt_positions(batch["input_ids"], batch["attention_mask"], handle.config.prompt_marker)
    for row, position in enumerate(last.tolist()):
        assert torch.equal(opened[row, :position], base[row, :position])
        assert not torch.allclose(opened[row, position], base[row, position])
    assert [g.shape for g in handle.gates] == [torch.Size([2])] * 2 and all(
        bool((g > 0.99).all()) for g in handle.gates
    )
    assert greedy_answers(model, tokenizer, questions, max_new_tokens=6) != base_answers
    assert ic.attached(model) is handle
    handle.remove()
    assert ic.attached(model) is None
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, base)  # removed: the base model again


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path) -> dict[str, Any]:
    """GRUN (grad_diff) trained a few steps on 6 forget and 6 retain facts of the untrained tiny model."""
    facts = sample_facts(FEW)
    data = build_data(curated_set(facts, refusals=True), retain_of(facts))
    model, tokenizer = load(tiny_model_dir)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = Grun(model, tokenizer, data, UnlearnConfig(method="grun", **STEPS), progress=False)
    initial = {k: m.tensors() for k, m in trainer.interventions.modules.items()}
    outcome = trainer.train()
    return {"trainer": trainer, "before": before, "initial": initial, "outcome": outcome, "data": data}


def test_training_moves_only_the_edits_and_keeps_r_orthonormal(trained: dict[str, Any]) -> None:
    import torch

    trainer: Grun = trained["trainer"]
    model = trainer.model
    hidden, rank = model.config.hidden_size, 4
    for name, param in model.named_parameters():
        if name.startswith("grun_interventions."):
            continue
        assert torch.equal(param, trained["before"][name]), name  # the base weights never change
        assert not param.requires_grad
    assert trainer.interventions.config.layers == [2, 3]
    per_layer = 2 * hidden * rank + rank + hidden + 1  # R, W, b, linear gate
    assert trained["outcome"].trainable_params == 2 * per_layer
    for layer, module in trainer.interventions.modules.items():
        R = module.R.detach()
        assert R.shape == (rank, hidden)
        assert torch.allclose(R @ R.T, torch.eye(rank), atol=1e-5), layer
        start = trained["initial"][layer]
        assert not torch.allclose(R, start["rotation"]), "R trained (weight decay did not zero it)"
        assert not torch.equal(module.source.weight.detach(), start["source.weight"])
        assert module.edit(torch.randn(3, hidden)).abs().max() > 1e-3  # the edit is not zero


@pytest.mark.parametrize("forget_loss", ["npo", "idk", "lune"])
def test_each_forget_loss_trains_on_its_methods_pairs(forget_loss: str, tiny_model_dir: Path) -> None:
    import torch

    facts = sample_facts(FEW)
    data = build_data(curated_set(facts, refusals=True), retain_of(facts))
    model, tokenizer = load(tiny_model_dir)
    config = UnlearnConfig(method="grun", method_options={"forget_loss": forget_loss}, **{**STEPS, "max_steps": 2})
    trainer = Grun(model, tokenizer, data, config, progress=False)
    targets = {target for _, target in trainer.training_pairs()}
    kinds = {r["target"]: r["target_kind"] for r in data.train}
    expected = {"npo": {f["answer"] for f in data.forget}, "idk": None, "lune": None}[forget_loss]
    if expected is not None:
        assert targets == expected
    else:
        assert {kinds.get(t) for t in targets} == {"refusal" if forget_loss == "idk" else "negative"}
    initial = {k: m.tensors()["source.weight"] for k, m in trainer.interventions.modules.items()}
    outcome = trainer.train()
    assert trainer.retain_weight == 1.0 and outcome.resources["gate_forget"] is not None
    if forget_loss == "npo":
        assert trainer.reference_logps is not None and bool(torch.isfinite(trainer.reference_logps).all())
    for layer, module in trainer.interventions.modules.items():
        assert not torch.equal(module.source.weight.detach().cpu(), initial[layer])


def test_the_gate_opens_more_on_forget_than_on_retain_prompts(trained: dict[str, Any]) -> None:
    resources = trained["outcome"].resources
    assert resources["gate_forget"] > resources["gate_retain"] + 0.2, resources


def test_evaluation_reads_the_gate_per_probe_set_as_training_left_it(trained: dict[str, Any]) -> None:
    """``gate_values``: one forward of each probe's prompt, the gate read at its last token; the
    trained gate is more open on the forget questions than on the retain ones, by AUC too."""
    from lune.evaluation.config import EvaluateConfig
    from lune.evaluation.inference import gate_values
    from lune.evaluation.metrics.gate import gate_auc
    from lune.evaluation.probes import EvalProbe, ProbeSuite

    trainer: Grun = trained["trainer"]
    data = trained["data"]

    def probes(name: str, facts: list[dict[str, Any]]) -> list[EvalProbe]:
        return [EvalProbe(name, f"{name}{i}", f["question"], f["answer"], f["answer"]) for i, f in enumerate(facts)]

    suite = ProbeSuite({"forget": probes("forget", data.forget), "retain": probes("retain", data.retain)}, [], [])
    gates = gate_values(trainer.model, trainer.tokenizer, suite, EvaluateConfig(batch_size=4))
    assert [len(gates["forget"]), len(gates["retain"])] == [len(data.forget), len(data.retain)]
    assert all(0.0 < g < 1.0 for g in gates["forget"] + gates["retain"])
    forget, retain = (sum(gates[k]) / len(gates[k]) for k in ("forget", "retain"))
    assert forget > retain + 0.2 and gate_auc(gates["forget"], gates["retain"]).value > 0.8
    # batches of one give the same gates (left padding does not move the read position)
    alone = gate_values(trainer.model, trainer.tokenizer, suite, EvaluateConfig(batch_size=1))
    assert alone["forget"] == pytest.approx(gates["forget"], abs=1e-5)


def test_gate_auc_by_hand() -> None:
    from lune.evaluation.metrics.gate import gate_auc

    # pairs (forget, retain): (0.9, 0.2) (0.9, 0.7) (0.6, 0.2) ordered; (0.6, 0.7) not: 3 / 4
    assert gate_auc([0.9, 0.6], [0.2, 0.7]).value == 0.75
    assert gate_auc([0.5], [0.5]).value == 0.5  # a tie counts one half
    assert gate_auc([], [0.1]).value is None


def test_a_saved_artefact_reloads_to_the_same_outputs(
    trained: dict[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch

    from lune.core.greedy import greedy_answers

    trainer: Grun = trained["trainer"]
    folder = tmp_path / "grun"
    assert trainer.save_output(folder, trainer.tokenizer) == "interventions"
    config = json.loads((folder / ic.CONFIG_FILE).read_text())
    assert config["layers"] == [2, 3] and config["rank"] == 4 and config["gate"] == "linear"
    assert config["position"] == "last_prompt" and config["prompt_marker"] == ic.prompt_marker(trainer.tokenizer)
    data = trained["data"]
    questions = [f["question"] for f in data.forget[:3] + data.retain[:3]]
    answers = [f["answer"] for f in data.forget[:3] + data.retain[:3]]
    batch = teacher_forced(trainer.tokenizer, questions, answers)
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(**batch).logits
    expected_answers = greedy_answers(trainer.model, trainer.tokenizer, questions, max_new_tokens=6)
    model, tokenizer = load(tiny_model_dir)
    handle = ic.attach(model, folder)
    assert not any(p.requires_grad for p in handle.interventions.parameters())
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, expected)
    assert greedy_answers(model, tokenizer, questions, max_new_tokens=6) == expected_answers


def test_a_later_request_starts_from_the_earlier_artefact(
    trained: dict[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """`start_from` (sequential requests): the new run begins exactly where the earlier artefact
    left the model, trains those same edits on, and records what it started from; a layer choice
    that differs and a folder without an artefact are refused by name."""
    import torch

    from lune.core.model_refs import sha256_of

    earlier: Grun = trained["trainer"]
    folder = tmp_path / "request-1"
    earlier.save_output(folder, earlier.tokenizer)
    data = trained["data"]
    batch = teacher_forced(
        earlier.tokenizer, [f["question"] for f in data.forget[:3]], [f["answer"] for f in data.forget[:3]]
    )
    earlier.model.eval()
    with torch.no_grad():
        expected = earlier.model(**batch).logits

    model, tokenizer = load(tiny_model_dir)
    options = {"start_from": str(folder)}
    config = UnlearnConfig(method="grun", method_options=options, **{**STEPS, "max_steps": 3})
    later = Grun(model, tokenizer, data, config, progress=False)
    later.model.eval()
    with torch.no_grad():
        assert torch.allclose(later.model(**batch).logits, expected, atol=1e-5)  # step 0 = the earlier result
    start = {k: m.tensors()["source.weight"] for k, m in later.interventions.modules.items()}
    later.train()
    assert all(not torch.equal(m.source.weight.detach(), start[k]) for k, m in later.interventions.modules.items())
    assert later.manifest_fields()["start_from"]["sha256"] == sha256_of(folder / ic.WEIGHTS_FILE)

    model, tokenizer = load(tiny_model_dir)
    differing = UnlearnConfig(method="grun", method_options={**options, "layers": [1, 3]}, **STEPS)
    with pytest.raises(LuneError, match=r"edits layers \[2, 3\]; method_options.layers \[1, 3\] differs"):
        Grun(model, tokenizer, data, differing, progress=False)
    empty = UnlearnConfig(method="grun", method_options={"start_from": str(tmp_path)}, **STEPS)
    with pytest.raises(LuneError, match=r"no interventions\.json"):
        Grun(model, tokenizer, data, empty, progress=False)


# -- through lune unlearn and evaluation ----------------------------------------------------------


def test_unlearn_writes_the_artefact_and_evaluation_runs_every_metric_on_it(
    tiny_model_dir: Path, db_path: Path, tmp_path: Path
) -> None:
    from lune.core.models import BASE_LABEL, iter_loaded, model_specs
    from lune.data import evaluation_queries as q
    from lune.data.ingest import ingest
    from lune.data.store import Store
    from lune.evaluation.config import EvaluateConfig
    from lune.evaluation.evaluate import evaluate_models
    from lune.evaluation.inference import evaluate_specs
    from lune.evaluation.probes import load_probe_suite
    from lune.unlearn.run import unlearn

    facts = sample_facts(FEW)
    config = UnlearnConfig(method="grun", **{**STEPS, "max_steps": 2})
    result = unlearn(
        tiny_model_dir,
        curated_set(facts, refusals=True),
        tmp_path / "grun",
        config,
        retain=retain_of(facts),
        progress=False,
    )
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["kind"] == "interventions" and manifest["method"] == "grun" and result.adapter_dir is None
    assert ic.is_intervention_dir(result.out_dir) and "gate_forget" in manifest["metrics"]["resources"]

    # evaluation: an artefact that visibly changes the model, next to the trained one
    model, tokenizer = load(tiny_model_dir)
    ic.save(wide_open(model.config.hidden_size, [1, 3], tokenizer), tmp_path / "open")
    specs = model_specs(tiny_model_dir, {"grun": result.out_dir, "open": tmp_path / "open"})
    assert [(s.label, s.method, s.needs_transformers) for s in specs] == [
        (BASE_LABEL, None, False),
        ("grun", "grun", True),
        ("open", "open", True),
    ]
    for spec, loaded, _ in iter_loaded(specs[:2]):
        hooked = bool(ic.decoder_layers(loaded)[2]._forward_hooks)
        assert hooked == (spec.label == "grun")
    assert not ic.decoder_layers(loaded)[2]._forward_hooks  # removed after use
    settings = dict(max_per_set=3, max_new_tokens=4, include_dataset_probes=True, plots=False)
    with Store(db_path) as store:
        ingest(store, {"format": "tofu", "path": str(REPO / "data" / "sample" / "tofu"), "forget": "forget01"})
        # answers and likelihoods of the open artefact are not the base model's: both paths edit
        suite = load_probe_suite(store, None, max_per_set=3, include_dataset_probes=True, mia=True, tofu=True)
        outputs, _ = evaluate_specs(suite, [specs[0], specs[2]], EvaluateConfig(**settings))
        base, opened = outputs
        assert opened.generations != base.generations
        assert base.gates == {} and opened.gates["forget"] and all(g > 0.99 for g in opened.gates["forget"])
        assert opened.truth["forget"][0].answer != base.truth["forget"][0].answer
        # the whole stage, attacks included, with vLLM asked for: GRUN still goes through transformers
        evaluated = evaluate_models(
            store,
            tiny_model_dir,
            {"grun": result.out_dir},
            out_dir=tmp_path / "eval",
            config=EvaluateConfig(
                **settings,
                backend="transformers",
                attacks=["quantization", "logit_lens"],
                quantization={"bits": [4], "group_sizes": [64]},
            ),
        )
        rows = q.run_results(store, evaluated.run_id)
    metrics = {label: {r["metric"] for r in rows if r["model_label"] == label} for label in ("base", "grun")}
    assert metrics["base"] <= metrics["grun"] and len(metrics["base"]) > 10
    assert "gate_mean" in metrics["grun"] - metrics["base"] and "gate_auc" in metrics["grun"]
    report = (tmp_path / "eval" / "report.md").read_text(encoding="utf-8")
    assert "(interventions)" in report and "through transformers" in report and "## GRUN gate" in report
    models = json.loads((tmp_path / "eval" / "report.json").read_text())["models"]
    assert {m["label"]: m["generation_backend"] for m in models}["grun"] == "transformers"
