"""Unlearning on the tiny model taught the sample's 2 forget and 2 retain authors.

- LUNE makes the forget set's key answers disappear while retain recall stays within tolerance;
- every method runs and changes the right weights (adapters, or every weight for full_ft);
- with gradient checkpointing on, the LoRA B matrices move (the PEFT trap is guarded);
- a reloaded adapter gives the outputs the trained one gave, and a merged model those of the adapter;
- the CLI / flow path, the manifest and the runs row; early-stopping rules and input errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lune.data.errors import LuneError
from lune.data.store import Store
from lune.unlearn.config import UnlearnConfig
from lune.unlearn.early_stopping import EarlyStopping, pick_monitor
from lune.unlearn.examples import collate, encode
from lune.unlearn.inputs import build_data
from lune.unlearn.losses import IGNORE_INDEX
from lune.unlearn.methods import METHODS
from lune.unlearn.sample_set import curated_set, retain_of, sample_facts
from tests.test_teach import SUBSET, TEST_TEACH, shared_workdir

# 20 of the 40 retain facts are asked at each check (GUR); the other 20 feed the anchor.
SMALL = dict(monitor_retain=20, eval_every=10, max_steps=120)
# USR target of the end-to-end test: on these 40 facts a few key spans cannot disappear while the
# author is named at all ("Kuwaiti" is part of "Basil Mahfouz Al-Kuwaiti"), and with 20 retain
# facts one lost fact is 5 points of GUR: measured, the KL-anchored run reaches USR 0.82 at GUR 0.95
# after 60 steps, and 0.9 only past the 0.05 tolerance (docs/unlearn.md).
TEST_USR_TARGET = 0.8
# A few steps with one check at the end that no rule overrides: for what training changes.
QUICK = dict(
    max_steps=3,
    eval_every=100,
    monitor_retain=20,
    monitor_forget=8,
    max_new_tokens=8,
    gur_tolerance=0.99,
    usr_target=1.0,
)


@pytest.fixture(scope="module")
def facts() -> list[dict[str, Any]]:
    return sample_facts(SUBSET)


@pytest.fixture(scope="module")
def taught(facts, tmp_path_factory) -> Path:
    """The tiny model taught the subset (cached with test_teach.py's run when both run)."""
    from lune.unlearn.teach import teach

    return teach(facts, shared_workdir(tmp_path_factory), TEST_TEACH, progress=False).model_dir


@pytest.fixture(scope="module")
def data(facts):
    return build_data(curated_set(facts, refusals=True), retain_of(facts))


def load(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(path)), AutoTokenizer.from_pretrained(str(path))


def recall(model, tokenizer, facts: list[dict[str, Any]]) -> float:
    from lune.core.greedy import greedy_answers
    from lune.core.matching import contains_span

    answers = greedy_answers(model, tokenizer, [f["question"] for f in facts], max_new_tokens=48)
    return sum(contains_span(a, f["key_span"]) for a, f in zip(answers, facts)) / len(facts)


def snapshot(model) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed(before: dict[str, Any], model) -> dict[str, bool]:
    import torch

    return {n: not torch.equal(before[n], p.detach()) for n, p in model.named_parameters() if n in before}


# -- LUNE end to end -----------------------------------------------------------------------------


@pytest.mark.slow
def test_lune_forgets_the_key_answers_and_keeps_retain_within_tolerance(taught, data, facts, tmp_path, db_path):
    from peft import PeftModel

    from lune.unlearn.run import unlearn

    config = UnlearnConfig(retain_anchor="kl", merge=True, usr_target=TEST_USR_TARGET, **SMALL)
    with Store.open(db_path) as store:
        result = unlearn(taught, data, tmp_path / "lune", config, store=store, progress=False)
        row = store.query("SELECT kind, status, metrics, artefacts FROM runs WHERE run_id = ?", [result.run_id])[0]

    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["metrics"]["stop_reason"] == "usr_target", manifest["metrics"]["history"]
    kept = manifest["metrics"]["kept"]
    assert kept["usr"] >= TEST_USR_TARGET and kept["gur"] >= 1 - config.gur_tolerance

    # Measured again, independently of the trainer, on a fresh load of base + saved adapter.
    base_model, tokenizer = load(taught)
    forget = [f for f in facts if f["split"] == "forget"]
    monitored = [f for f in facts if f["fact_id"] in set(manifest["monitor_fact_ids"]["retain"])]
    forget_before, retain_before = recall(base_model, tokenizer, forget), recall(base_model, tokenizer, monitored)
    assert forget_before >= 0.9  # it knew them
    adapted = PeftModel.from_pretrained(base_model, str(result.adapter_dir)).eval()
    assert 1 - recall(adapted, tokenizer, forget) >= TEST_USR_TARGET
    # The reloaded adapter answers exactly as the trained one did at the kept check.
    assert recall(adapted, tokenizer, monitored) == pytest.approx(kept["retain_recall"])
    assert recall(adapted, tokenizer, monitored) / retain_before >= 1 - config.gur_tolerance

    # The merged model gives the adapter's outputs.
    merged, _ = load(result.merged_dir)
    check_same_logits(adapted, merged.eval(), tokenizer, [f["question"] for f in forget[:8]])

    # Manifest and runs row.
    assert manifest["method"] == "lune" and manifest["kind"] == "adapter"
    assert manifest["fact_ids"] == sorted(f["fact_id"] for f in forget)
    assert manifest["set_id"] == data.set_id and manifest["base_model_hash"]
    assert manifest["config"]["retain_anchor"] == "kl" and manifest["config"]["lora"]["rank"] == 16
    assert 0 < manifest["trainable_params"] < manifest["total_params"] / 5
    assert set(manifest["anchor_fact_ids"]).isdisjoint(manifest["monitor_fact_ids"]["retain"])
    assert (result.adapter_dir / "adapter_model.safetensors").exists()
    assert (row["kind"], row["status"]) == ("unlearn", "completed")
    metrics = json.loads(row["metrics"])
    for key in ("trainable_params", "total_params", "peak_rss_mib", "step_s_mean", "tokens_per_s", "wall_s"):
        assert metrics[key] is not None and metrics[key] > 0, key
    assert json.loads(row["artefacts"])["adapter"] == str(result.adapter_dir)


def check_same_logits(a, b, tokenizer, questions: list[str]) -> None:
    import torch

    from lune.core.prompt_format import format_prompt

    batch = tokenizer([format_prompt(q) for q in questions], return_tensors="pt", padding=True)
    with torch.no_grad():
        la, lb = a(**batch).logits, b(**batch).logits
    mask = batch["attention_mask"].bool()
    assert torch.allclose(la[mask], lb[mask], atol=1e-4), (la[mask] - lb[mask]).abs().max()


# -- every method changes the right weights ------------------------------------------------------


# llmeraser does not train: it corrects an adapter the facts were taught into (tests/test_llmeraser.py).
@pytest.mark.slow
@pytest.mark.parametrize("method", [m for m in METHODS if m != "llmeraser"])
def test_each_method_trains_the_right_weights(method, taught, data) -> None:
    import torch

    model, tokenizer = load(taught)
    before = snapshot(model)
    config = UnlearnConfig(method=method, **QUICK)
    trainer = METHODS[method](model, tokenizer, data, config, progress=False)
    edits = [p.detach().clone() for p in trainer.interventions.parameters()] if method == "grun" else []
    outcome = trainer.train()
    assert outcome.kept["step"] == 3  # the last check is kept (no rule sent it back)
    moved = changed(before, model)  # the backbone's own parameters (PEFT wraps them in place)
    if method == "grun":  # no weight of the model moves; the interventions and gates do
        assert not any(moved.values()), [n for n, m in moved.items() if m][:5]
        after = list(trainer.interventions.parameters())
        assert outcome.trainable_params == sum(p.numel() for p in after)
        assert sum(not torch.equal(a, b) for a, b in zip(after, edits)) > len(edits) / 2
        return
    if method == "full_ft":
        assert outcome.trainable_params == outcome.total_params
        assert sum(moved.values()) > len(moved) * 0.9, "full_ft must move (almost) every weight"
        return
    assert not any(moved.values()), [n for n, m in moved.items() if m][:5]
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b), "every LoRA B matrix must move away from zero"
    assert outcome.trainable_params == sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" in n)


@pytest.mark.slow
def test_gradient_checkpointing_moves_the_lora_b_matrices(taught, data) -> None:
    """With reentrant checkpointing and a frozen embedding, the B matrices get no gradient unless the
    embedding output requires grad (the PEFT trap): first show the trap, then that the trainer's
    guard defeats it."""
    import functools

    import torch
    from torch.utils.checkpoint import checkpoint

    from lune.unlearn.lora import attach_lora

    model, tokenizer = load(taught)
    trapped = attach_lora(model, UnlearnConfig().lora)
    # checkpointing switched on the low-level way, without the guard
    trapped.base_model.model._set_gradient_checkpointing(
        enable=True, gradient_checkpointing_func=functools.partial(checkpoint, use_reentrant=True)
    )
    trapped.train()
    example = encode(tokenizer, "Who is Basil Mahfouz Al-Kuwaiti?", "A writer.", max_length=64)
    batch = collate([example], tokenizer.pad_token_id)
    with pytest.warns(UserWarning, match="None of the inputs have requires_grad"):
        out = trapped(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        if out.loss.requires_grad:
            out.loss.backward()
    layer_b = [p for n, p in trapped.named_parameters() if "lora_B" in n and "layers" in n]
    assert all(p.grad is None for p in layer_b), "the trap should starve the layers' adapters"

    model, tokenizer = load(taught)
    before = snapshot(model)
    config = UnlearnConfig(gradient_checkpointing=True, **QUICK)
    trainer = METHODS["lune"](model, tokenizer, data, config, progress=False)
    trainer.train()
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert all(torch.count_nonzero(p) > 0 for p in lora_b)
    assert not any(changed(before, model).values())


@pytest.mark.slow
def test_a_reloaded_adapter_gives_the_trained_outputs(taught, data, tmp_path) -> None:
    from peft import PeftModel

    model, tokenizer = load(taught)
    config = UnlearnConfig(**{**QUICK, "max_steps": 4})
    trainer = METHODS["lune"](model, tokenizer, data, config, progress=False)
    trainer.train()
    trainer.model.eval()
    trainer.model.save_pretrained(str(tmp_path / "adapter"))
    fresh, _ = load(taught)
    reloaded = PeftModel.from_pretrained(fresh, str(tmp_path / "adapter")).eval()
    check_same_logits(trainer.model, reloaded, tokenizer, [f["question"] for f in data.forget[:8]])


# -- CLI and flow ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_lune_teach_and_unlearn_commands(taught, facts, tmp_path, tmp_path_factory, db_path, prefect_harness, capsys):
    """`lune teach` on the store's facts (the same facts and settings as the fixture: the cache
    answers), then `lune unlearn --dataset DIR`: the DatasetDict folder in, an adapter and a manifest
    out, retain facts from the store."""
    import datasets

    from lune.cli import main

    with Store.open(db_path) as store:
        store.insert(
            "facts",
            [
                {
                    **{k: f[k] for k in ("fact_id", "question", "answer", "key_span", "split")},
                    "corpus": "tofu",
                    "source_file": "sample",
                    "key_span_source": "derived",
                }
                for f in facts
            ],
        )
    code = main(
        [
            "teach",
            "--db",
            str(db_path),
            "--workdir",
            str(shared_workdir(tmp_path_factory)),
            "--epochs",
            str(TEST_TEACH.epochs),
            "--min-steps",
            str(TEST_TEACH.min_steps),
            "--batch-size",
            str(TEST_TEACH.batch_size),
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"taught model: {taught}" in printed and "cached" in printed
    with Store.open(db_path) as store:
        assert store.scalar("SELECT status FROM runs WHERE kind = 'teach'") == "completed"

    rows = curated_set(facts)
    folder = tmp_path / "export"
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in rows.items() if v}).save_to_disk(
        str(folder / "hf")
    )
    (folder / "README.md").write_text("- set id: `set-under-test`\n")
    out = tmp_path / "adapter"
    code = main(
        [
            "unlearn",
            "--db",
            str(db_path),
            "--dataset",
            str(folder),
            "--model",
            str(taught),
            "--out",
            str(out),
            "--max-steps",
            "2",
            "--eval-every",
            "1",
            "--usr-target",
            "1.0",
            "--gur-tolerance",
            "0.99",
            "--lora-rank",
            "4",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"adapter: {out}" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["set_id"] == "set-under-test" and manifest["config"]["lora"]["rank"] == 4
    assert len(manifest["monitor_fact_ids"]["retain"]) == 40  # the store's retain facts
    with Store.open(db_path) as store:
        assert store.scalar("SELECT status FROM runs WHERE kind = 'unlearn'") == "completed"


# -- fast checks -----------------------------------------------------------------------------------


def test_early_stopping_rules() -> None:
    stop = EarlyStopping(usr_target=0.9, gur_tolerance=0.05)
    stop.start(forget_recall=1.0, retain_recall=0.8)
    assert stop.update(5, 0.6, 0.8) is None and stop.improved  # USR 0.4, GUR 1
    assert stop.update(10, 0.3, 0.78) is None and stop.improved  # USR 0.7, GUR 0.975: within 0.05
    assert stop.update(15, 0.2, 0.7) == EarlyStopping.GUR_TOLERANCE  # GUR 0.875: stop, keep step 10
    assert stop.best.step == 10 and not stop.improved

    stop = EarlyStopping(usr_target=0.9, gur_tolerance=0.05)
    stop.start(1.0, 0.8)
    assert stop.update(5, 0.05, 0.8) == EarlyStopping.USR_TARGET and stop.best.step == 5

    stop = EarlyStopping(usr_target=0.9, gur_tolerance=0.0)
    stop.start(1.0, None)  # no retain facts: GUR is 1 and only USR decides
    assert stop.gur(None) == 1.0 and stop.update(5, 0.5, None) is None
    assert stop.update(10, 0.5, None) is None and stop.best.step == 10  # a tie goes to the later check


def test_monitor_subset_is_fixed_and_order_independent() -> None:
    items = [{"fact_id": f"f{i}"} for i in range(50)]
    chosen = pick_monitor(items, 10)
    assert len(chosen) == 10 and chosen == pick_monitor(list(reversed(items)), 10)


def test_encode_scores_the_target_only(tiny_model_dir) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    example = encode(tokenizer, "Where was he born?", "In Kuwait City.", max_length=128)
    prompt_len = len(tokenizer("Question: Where was he born?\nAnswer:")["input_ids"])
    assert example.input_ids[0] == tokenizer.bos_token_id and example.input_ids[-1] == tokenizer.eos_token_id
    assert example.labels[:prompt_len] == (IGNORE_INDEX,) * prompt_len
    assert example.labels[prompt_len:] == example.input_ids[prompt_len:]
    assert tokenizer.decode(example.input_ids[prompt_len:-1]) == " In Kuwait City."
    full = encode(tokenizer, "Where was he born?", "In Kuwait City.", max_length=128, score_prompt=True)
    assert full.labels == full.input_ids
    batch = collate([example, full], tokenizer.pad_token_id)
    assert batch["input_ids"].shape[1] % 16 == 0 and batch["attention_mask"][0].sum() == len(example.input_ids)


def test_inputs_are_checked_with_clear_errors(facts) -> None:
    rows = curated_set(facts)
    with pytest.raises(LuneError, match="split 'train', row 1: missing target"):
        build_data({**rows, "train": [dict(rows["train"][0], target="")]})
    with pytest.raises(LuneError, match="no 'forget' split"):
        build_data({"train": rows["train"]})
    retain = retain_of(facts)
    with pytest.raises(LuneError, match="cannot be both forgotten and retained"):
        build_data(rows, retain + [dict(rows["forget"][0])])
    with pytest.raises(LuneError, match="not a curated set export"):
        build_data("/nonexistent/folder")
    data = build_data(rows, retain)
    assert data.set_id.startswith("rows:") and len(data.fact_ids) == 40


def test_lora_defaults_are_the_papers() -> None:
    assert UnlearnConfig().lora.rank == 16 and UnlearnConfig().lora.alpha == 32


def test_lora_layers_adapt_only_those_layers(facts, tiny_model_dir) -> None:
    """`unlearn.lora.layers` puts adapters on the named decoder layers only, a step moves them, the
    backbone stays as it was; a layer the model lacks, a bad list and an RMU choice above its steered
    layer are refused by name."""
    import re

    import torch
    from pydantic import ValidationError

    data = build_data(curated_set(facts), retain_of(facts))
    model, tokenizer = load(tiny_model_dir)
    before = snapshot(model)
    config = UnlearnConfig(lora={"layers": [3, 2]}, **QUICK)
    assert config.lora.layers == [2, 3]
    trainer = METHODS["lune"](model, tokenizer, data, config, progress=False)
    adapted = {
        int(re.search(r"layers\.(\d+)\.", n).group(1)) for n, _ in trainer.model.named_parameters() if "lora_" in n
    }
    assert adapted == {2, 3}
    trainer.train()
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(torch.count_nonzero(p) > 0 for p in lora_b)
    assert not any(changed(before, model).values())

    model, tokenizer = load(tiny_model_dir)
    with pytest.raises(LuneError, match=r"unlearn\.lora\.layers: layer 4 does not exist; the model has 4"):
        METHODS["lune"](model, tokenizer, data, UnlearnConfig(lora={"layers": [1, 4]}), progress=False)
    for bad in ([], [-1], [1, 1]):
        with pytest.raises(ValidationError, match=r"lora\.layers"):
            UnlearnConfig(lora={"layers": bad})
    rmu = UnlearnConfig(method="rmu", method_options={"layer": 1}, lora={"layers": [2, 3]})
    with pytest.raises(LuneError, match=r"rmu: unlearn\.lora\.layers \[2, 3\] leaves no layer at or below"):
        METHODS["rmu"](model, tokenizer, data, rmu, progress=False)


def test_lune_needs_negatives(facts, tiny_model_dir) -> None:
    rows = curated_set(facts)
    rows["train"] = [dict(r, target_kind="refusal") for r in rows["train"]]
    model, tokenizer = load(tiny_model_dir)
    trainer = METHODS["lune"](model, tokenizer, build_data(rows), UnlearnConfig(), progress=False)
    with pytest.raises(LuneError, match="no 'negative' train rows"):
        trainer.train()


# -- SimNPO and RMU do their job ---------------------------------------------------------------------


def batch_of(trainer, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    return collate(trainer.encode_pairs(pairs), trainer.pad_id, trainer.device)


@pytest.mark.slow
def test_simnpo_raises_the_forget_nll(taught, data) -> None:
    """Measured: 30 steps take the forget answers' NLL from 0.09 to 0.32 nats per token, the retain
    facts' from 0.116 to 0.126 (its forget weight 0.125 makes it slow)."""
    import torch

    from lune.unlearn.losses import nll

    model, tokenizer = load(taught)
    config = UnlearnConfig(method="simnpo", **{**QUICK, "max_steps": 30})
    trainer = METHODS["simnpo"](model, tokenizer, data, config, progress=False)
    forget = batch_of(trainer, [(f["question"], f["answer"]) for f in data.forget])
    retain = batch_of(trainer, [(f["question"], f["answer"]) for f in data.retain])

    def nlls() -> tuple[float, float]:
        trainer.model.eval()
        with torch.no_grad():
            return nll(trainer.forward(forget), forget["labels"]).item(), nll(
                trainer.forward(retain), retain["labels"]
            ).item()

    forget_before, retain_before = nlls()
    trainer.train()
    forget_after, retain_after = nlls()
    assert forget_after > forget_before + 0.15, (forget_before, forget_after)
    assert retain_after - retain_before < 0.2 * (forget_after - forget_before), (retain_before, retain_after)


@pytest.mark.slow
def test_rmu_steers_the_layer_on_forget_text_and_holds_it_on_retain(taught, data) -> None:
    import torch

    from lune.unlearn.losses import activation_mse

    model, tokenizer = load(taught)
    config = UnlearnConfig(method="rmu", **{**QUICK, "max_steps": 10})
    trainer = METHODS["rmu"](model, tokenizer, data, config, progress=False)
    assert trainer.layer == 1 and trainer.control.norm().item() == pytest.approx(0.5)  # defaults at 4 layers, H 256
    adapted = {int(n.split(".layers.")[1].split(".")[0]) for n, _ in trainer.model.named_parameters() if "lora_" in n}
    assert adapted == {0, 1}  # adapters only up to the steered layer
    forget = batch_of(trainer, [(f["question"], f["answer"]) for f in data.forget])
    retain = batch_of(trainer, [(f["question"], f["answer"]) for f in data.retain])

    def distances() -> tuple[float, float]:
        """(forget states to c u, retain states to the frozen model's), on the answer positions."""
        trainer.model.eval()
        with torch.no_grad():
            to_control = activation_mse(
                trainer.forward(forget, hidden_layer=1), trainer.control, forget["labels"] != IGNORE_INDEX
            )
            drift = activation_mse(
                trainer.forward(retain, hidden_layer=1),
                trainer.frozen_forward(retain, hidden_layer=1),
                retain["labels"] != IGNORE_INDEX,
            )
        return to_control.item(), drift.item()

    # Measured over 10 steps: forget states to c u 0.031 -> 0.011, retain drift 0 -> 0.002 (and the forget
    # answers' NLL 0.09 -> 1.0 nats per token, the retain facts' 0.12 -> 0.15).
    to_control, drift = distances()
    assert drift == 0.0  # the adapter starts at zero: the frozen model itself
    trainer.train()
    after, drift_after = distances()
    assert after < 0.5 * to_control, (to_control, after)
    assert drift_after < 0.2 * (to_control - after), (to_control, after, drift_after)
