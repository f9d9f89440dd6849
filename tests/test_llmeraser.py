"""LLMEraser on a tiny LoRA-taught model: the adapter's training set is recorded, a removal moves the
adapter towards the one retrained without the removed facts (base model untouched), a response
correction lowers the loss of the new answers, and a model without a recorded adapter is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from lune.data.errors import LuneError  # noqa: E402
from lune.unlearn.config import TeachAdapter, TeachConfig, TinyModelSettings, UnlearnConfig  # noqa: E402
from lune.unlearn.inputs import UnlearnData  # noqa: E402
from lune.unlearn.manifest import model_fingerprint, read_manifest  # noqa: E402
from lune.unlearn.methods.llmeraser import plan_edit  # noqa: E402
from lune.unlearn.run import unlearn  # noqa: E402
from lune.unlearn.sample_set import sample_facts  # noqa: E402
from lune.unlearn.teach import teach  # noqa: E402
from lune.unlearn.teach_adapter import retrain_adapter, training_facts  # noqa: E402

# 12 facts, a 1-layer width-64 Llama, rank-4 LoRA plus the output head, 200 steps.
TEACH = TeachConfig(
    learning_rate=5e-3,
    epochs=1,
    min_steps=200,
    batch_size=8,
    retain_model=False,
    check_recall=False,
    tiny=TinyModelSettings(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=1),
    adapter=TeachAdapter(enabled=True, rank=4),
)


def adapter_vector(folder: Path):
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "adapter" / "adapter_model.safetensors"))
    return torch.cat([tensors[k].flatten() for k in sorted(tensors)])


def correcting(fact: dict, folder: Path, *, by: str, iterations: int = 10) -> dict:
    """llmeraser options correcting ``fact``'s answer to "Nobody knows." (matched by ``by``: question or fact_id)."""
    corrections = folder / "corrections.jsonl"
    corrections.write_text(json.dumps({by: fact[by], "answer": "Nobody knows."}) + "\n")
    return {
        "mode": "correct",
        "corrections": str(corrections),
        "solver": "cg",
        "iterations": iterations,
        "damping": 0.1,
    }


@pytest.fixture(scope="module")
def taught(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The taught adapter, two forget facts, and the adapter retrained without them (the gold)."""
    work = tmp_path_factory.mktemp("llmeraser")
    facts = sample_facts({"forget": 4, "retain": 8, "utility": 0})
    result = teach(facts, work, TEACH, progress=False)
    removed = [f for f in facts if f["split"] == "forget"][:2]
    retrain_adapter(result.model_dir, work / "gold", removed=[f["fact_id"] for f in removed], progress=False)
    return {"work": work, "facts": facts, "model": result.model_dir, "removed": removed, "gold": work / "gold"}


@pytest.mark.slow  # with the module's teach fixture: 2 min on the busy 2-core machine
def test_the_taught_adapter_records_its_training_set(taught: dict) -> None:
    record = read_manifest(taught["model"])["teach_adapter"]
    assert record["training_fact_ids"] == [f["fact_id"] for f in taught["facts"]]
    assert [f["answer"] for f in training_facts(taught["model"])] == [f["answer"] for f in taught["facts"]]
    assert (taught["model"] / "config.json").exists()  # the merged model: any method can load it
    gold = read_manifest(taught["gold"])["teach_adapter"]["training_fact_ids"]
    assert set(gold) == set(record["training_fact_ids"]) - {f["fact_id"] for f in taught["removed"]}


@pytest.mark.slow  # with the module's teach fixture: 2 min on the busy 2-core machine
def test_removal_moves_the_adapter_towards_the_retrained_one_and_leaves_the_base(taught: dict) -> None:
    base = Path(read_manifest(taught["model"])["teach_adapter"]["base_model"])
    base_hash, taught_hash = model_fingerprint(base), model_fingerprint(taught["model"] / "adapter")
    options = {"solver": "cg", "iterations": 10, "damping": 0.1, "retrain": True}
    config = UnlearnConfig(method="llmeraser", method_options=options)
    data = UnlearnData(train=[], forget=taught["removed"])
    result = unlearn(taught["model"], data, taught["work"] / "erased", config, progress=False)

    theta, gold, corrected = (adapter_vector(p) for p in (taught["model"], taught["gold"], result.out_dir))
    assert (corrected - gold).norm() < (theta - gold).norm()
    assert torch.nn.functional.cosine_similarity(corrected - theta, gold - theta, dim=0) > 0
    # the run's own retraining (retrain: true) is the fixture's gold, bit for bit: same seed and settings
    assert torch.equal(adapter_vector(result.out_dir / "retrained"), gold)
    distances = (result.metrics["kept_param_distance_corrected_to_retrained"], float((corrected - gold).norm()))
    assert distances[0] == pytest.approx(distances[1], rel=1e-4)
    assert result.metrics["kept_param_distance_taught_to_retrained"] == pytest.approx(
        float((theta - gold).norm()), rel=1e-4
    )
    kept = result.metrics
    assert kept["kept_loss_edited_before_post"] > kept["kept_loss_edited_before_pre"]  # the removed facts' loss rose
    assert model_fingerprint(base) == base_hash and model_fingerprint(taught["model"] / "adapter") == taught_hash
    manifest = read_manifest(result.out_dir)
    assert manifest["kind"] == "model" and manifest["method"] == "llmeraser"
    removed = {f["fact_id"] for f in taught["removed"]}
    assert not removed & set(manifest["teach_adapter"]["training_fact_ids"])
    assert len(manifest["metrics"]["history"]) == 10  # the objective, iteration by iteration


@pytest.mark.slow  # with the module's teach fixture: 2 min on the busy 2-core machine
def test_response_correction_lowers_the_loss_of_the_new_answer(taught: dict, tmp_path: Path) -> None:
    fact = taught["facts"][5]
    options = correcting(fact, tmp_path, by="question")
    config = UnlearnConfig(method="llmeraser", method_options=options)
    result = unlearn(taught["model"], UnlearnData(train=[], forget=taught["removed"]), tmp_path / "out", config)
    kept = result.metrics
    assert kept["kept_loss_edited_after_post"] < kept["kept_loss_edited_after_pre"]
    assert kept["kept_loss_edited_before_post"] > kept["kept_loss_edited_before_pre"]
    edited = {f["fact_id"]: f for f in training_facts(result.out_dir)}
    assert edited[fact["fact_id"]]["answer"] == "Nobody knows." and len(edited) == len(taught["facts"])


def test_plan_edit_matches_by_question_or_id_and_names_what_it_cannot_match() -> None:
    facts = [
        {"fact_id": "a", "question": "Q1?", "answer": "A1"},
        {"fact_id": "b", "question": "Q2?", "answer": "A2"},
    ]
    before, after, replaced = plan_edit(facts, "remove", ["b", "zz"], [])
    assert (before, after, replaced) == ([facts[1]], [], {})
    before, after, replaced = plan_edit(facts, "modify", [], [{"fact_id": "a", "new_question": "Q1 again?"}])
    assert after == [{"fact_id": "a", "question": "Q1 again?", "answer": "A1"}] and before == [facts[0]]
    with pytest.raises(LuneError, match="row 1: no fact of the training set"):
        plan_edit(facts, "correct", [], [{"question": "Q3?", "answer": "x"}])
    with pytest.raises(LuneError, match="none of the 1 forget fact"):
        plan_edit(facts, "remove", ["zz"], [])
    with pytest.raises(LuneError, match="--llmeraser-corrections"):
        plan_edit(facts, "correct", [], [])


def test_a_model_without_a_recorded_adapter_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = UnlearnData(train=[], forget=[{"fact_id": "f", "question": "Q?", "answer": "A", "key_span": "A"}])
    with pytest.raises(LuneError) as caught:
        unlearn(tiny_model_dir, data, tmp_path / "out", UnlearnConfig(method="llmeraser"), progress=False)
    assert str(tiny_model_dir) in str(caught.value) and "teach.adapter.enabled" in str(caught.value)


@pytest.mark.slow  # with the module's teach fixture: 2 min on the busy 2-core machine
def test_a_step_that_raises_the_edited_training_loss_is_shortened(taught: dict, tmp_path: Path) -> None:
    # An update scaled far past the influence estimate stands in for the overshoot measured on SmolLM2
    # (damping 0.01: every answer of D lost); backtracking must halve it until D's loss does not rise.
    options = correcting(taught["facts"][5], tmp_path, by="fact_id", iterations=5)
    data = UnlearnData(train=[], forget=taught["removed"])

    def run(name: str, **extra: float) -> dict:
        config = UnlearnConfig(method="llmeraser", method_options={**options, "scale": 1000.0, **extra})
        return unlearn(taught["model"], data, tmp_path / name, config, progress=False).metrics

    plain = run("plain", backtrack=0)
    assert plain["kept_step_factor"] == 1.0
    assert plain["kept_loss_edited_d_post"] > plain["kept_loss_edited_d_pre"]  # the overshoot is real
    guarded = run("guarded")
    assert guarded["kept_step_factor"] < 1.0
    assert guarded["kept_loss_edited_d_post"] <= guarded["kept_loss_edited_d_pre"]
    assert guarded["kept_update_norm"] == pytest.approx(
        plain["kept_update_norm"] * guarded["kept_step_factor"], rel=1e-3
    )
