"""The relearning attack: the recovery formula by hand, the seeded T / V split by fact, the
fine-tuning it borrows from unlearn (flows/attacks.py) on the tiny model, the stage storing and
reporting its rows, and (slow) a taught and unlearned tiny model whose forgotten facts in V come
back after fine-tuning on T."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from _generate_data import store_sample_facts

from lune.data.errors import LuneError
from lune.data.store import Store
from lune.evaluation.attacks.relearning import recovery, recovery_gap, split_facts
from lune.evaluation.config import EvaluateConfig, RelearningAttackSettings

REPO = Path(__file__).resolve().parents[1]


# -- the formula and the split -----------------------------------------------------------------


def test_recovery_by_hand() -> None:
    # before unlearning 0.8 of V recalled, 0.2 after: unlearning took 0.6 away
    assert recovery(0.5, 0.2, 0.8) == pytest.approx(0.5)  # 0.3 of 0.6 came back
    assert recovery(0.8, 0.2, 0.8) == pytest.approx(1.0)  # all of it
    assert recovery(0.2, 0.2, 0.8) == 0.0
    assert recovery(0.05, 0.2, 0.8) == pytest.approx(-0.25)  # the attack lowered recall further
    assert recovery(0.9, 0.2, 0.8) == pytest.approx(7 / 6)  # beyond the model before unlearning
    # no denominator: unlearning took nothing away (or recall rose), or a value is missing
    assert recovery(0.5, 0.8, 0.8) is None and recovery(0.5, 0.9, 0.8) is None
    assert recovery(None, 0.2, 0.8) is None and recovery(0.5, None, 0.8) is None and recovery(0.5, 0.2, None) is None
    # the retain model (0.1 on V, never taught them) fine-tuned on T gets 0.25: R_retain = 0.15 / 0.7
    retain_r = recovery(0.25, 0.1, 0.8)
    assert retain_r == pytest.approx(0.15 / 0.7)
    assert recovery_gap(0.5, retain_r) == pytest.approx(0.5 - 0.15 / 0.7)
    assert recovery_gap(None, 0.1) is None and recovery_gap(0.5, None) is None


def test_split_is_seeded_by_fact_and_disjoint() -> None:
    ids = [f"fact-{i}" for i in range(20)]
    train, validate = split_facts(ids, 0.5, seed=0)
    assert len(train) == 10 and len(validate) == 10
    assert set(train) | set(validate) == set(ids) and not set(train) & set(validate)
    assert split_facts(list(reversed(ids)) + ids[:3], 0.5, seed=0) == (train, validate)  # order, repeats
    assert split_facts(ids, 0.5, seed=1) != (train, validate)
    assert len(split_facts(ids, 0.25, seed=0)[0]) == 5
    # a fact keeps its side when others join (the hash orders facts, the cut is a share)
    more_train, _ = split_facts(ids + [f"fact-{i}" for i in range(20, 40)], 0.5, seed=0)
    assert len(set(train) & set(more_train)) >= 7
    assert split_facts(ids[:2], 0.01, seed=0)[0] and split_facts(ids[:2], 0.99, seed=0)[1]  # both sides non-empty
    assert split_facts(ids[:1], 0.5, seed=0) == ([], ids[:1])  # one fact: nothing to train on


def test_settings_and_the_run_flag() -> None:
    from lune.cli_options import add_model_options, apply_options
    from lune.commands.run import attacks_on

    settings = RelearningAttackSettings(steps=[40, 10, 10, 20])
    assert settings.steps == [10, 20, 40] and settings.batch_size == 4 and settings.mode == "lora"
    with pytest.raises(ValueError, match="at least 1"):
        RelearningAttackSettings(steps=[0, 10])
    parser = argparse.ArgumentParser()
    add_model_options(parser, EvaluateConfig)
    args = parser.parse_args(["--attacks", "relearning", "--relearning-steps", "5,15", "--relearning-mode", "full"])
    config = apply_options(args, EvaluateConfig, {}, source="test")
    assert config.attacks == ["relearning"] and config.relearning.steps == [5, 15] and config.relearning.mode == "full"
    assert attacks_on(EvaluateConfig(), "all").attacks == ["logit_lens", "quantization", "relearning"]
    assert attacks_on(EvaluateConfig(mia=False), "relearning").attacks == ["relearning"]
    assert attacks_on(EvaluateConfig(mia=False), "relearning").mia is False  # the rest of the section kept
    with pytest.raises(
        LuneError, match=r"--attacks: unknown attack\(s\) pruning; known: logit_lens, quantization, relearning"
    ):
        attacks_on(EvaluateConfig(), "pruning")


# -- the fine-tuning on the tiny model ---------------------------------------------------------

PAIRS = [
    ("Who wrote The Silver Harbour?", "The Silver Harbour was written by Ilse Marrow."),
    ("Where was Ilse Marrow born?", "Ilse Marrow was born in Tallinn."),
    ("What genre does Ilse Marrow write?", "Ilse Marrow writes maritime mysteries."),
    ("Which prize did Ilse Marrow win?", "Ilse Marrow won the Lantern Prize."),
]


def answer_loss(model, tokenizer) -> float:
    import torch

    from lune.unlearn.examples import collate, encode, pad_id_of

    batch = collate([encode(tokenizer, q, a, max_length=64) for q, a in PAIRS], pad_id_of(tokenizer))
    with torch.no_grad():
        return float(model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}).loss)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_relearn_fine_tunes_and_measures_at_each_step(tiny_model_dir: Path, mode: str) -> None:
    import torch

    from lune.core.models import load_causal_lm
    from lune.flows.attacks import relearn

    model, tokenizer = load_causal_lm(tiny_model_dir)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    settings = RelearningAttackSettings(steps=[3, 6], batch_size=2, learning_rate=3e-3, mode=mode)
    seen: list[tuple[int, float, bool]] = []
    relearn(
        model, tokenizer, PAIRS, settings, lambda m, step: seen.append((step, answer_loss(m, tokenizer), m.training))
    )
    assert [s for s, _, _ in seen] == [0, 3, 6]
    assert seen[2][1] < seen[1][1] < seen[0][1]  # the answers' loss falls as it trains
    # PEFT wraps the projections in place (the attack hands over a merged copy): ``.base_layer``
    own = {n.replace(".base_layer", ""): p for n, p in model.named_parameters() if "lora_" not in n}
    assert set(own) == set(original)
    changed = [n for n, p in own.items() if not torch.equal(p, original[n])]
    if mode == "lora":  # the model's own weights stay; only the attacker's adapter trains
        assert not changed and any("lora_B" in n for n, _ in model.named_parameters())
    else:
        assert len(changed) == len(original)
    with pytest.raises(ValueError, match="no \\(question, answer\\) pairs"):
        relearn(model, tokenizer, [], settings, lambda m, step: None)


# -- the stage ---------------------------------------------------------------------------------


def test_evaluate_with_relearning_stores_and_reports_it(tiny_model_dir: Path, db_path: Path, tmp_path: Path) -> None:
    from lune.core.models import load_causal_lm
    from lune.data import evaluation_queries as q
    from lune.data.ingest import ingest
    from lune.evaluation.evaluate import evaluate_models
    from lune.flows.attacks import relearn
    from tests.test_attacks import noisy_adapter

    model, _ = load_causal_lm(tiny_model_dir)
    noisy_adapter(model).save_pretrained(tmp_path / "noisy")
    config = EvaluateConfig(
        attacks=["relearning"],
        relearning={"steps": [1, 2], "variants": ["forget", "retain"]},
        max_per_set=6,
        max_new_tokens=4,
        include_dataset_probes=False,
        mia=False,
        tofu=False,
    )
    with Store(db_path) as store:
        ingest(store, {"format": "tofu", "path": str(REPO / "data" / "sample" / "tofu"), "forget": "forget01"})
        with pytest.raises(LuneError, match="needs a fine-tuning function"):
            evaluate_models(store, tiny_model_dir, {}, out_dir=tmp_path / "none", config=config)
        outcome = evaluate_models(
            store,
            tiny_model_dir,
            {"noisy": str(tmp_path / "noisy")},
            retain_model=tiny_model_dir,
            out_dir=tmp_path / "eval",
            config=config,
            finetune=relearn,
        )
        rows = {
            (r["model_label"], r["metric"]): {**r, "detail": json.loads(r["detail"] or "{}")}
            for r in q.run_results(store, outcome.run_id)
        }
    for variant in ("forget", "retain"):
        for label in ("base", "noisy", "retain_model"):
            for step in (0, 1, 2):
                row = rows[label, f"attack.relearning.{variant}.step_{step}.recall"]
                assert row["n"] == 3 and 0 <= row["value"] <= 1  # V: 3 of the 6 forget facts
            assert rows[label, f"attack.relearning.{variant}.recall"]["detail"]["train_rows"] == 3
        assert (("base", f"attack.relearning.{variant}.recovery")) not in rows  # no denominator for it
        # the untrained model recalls nothing before or after: R has no denominator either
        assert rows["noisy", f"attack.relearning.{variant}.recovery"]["value"] is None
        assert ("noisy", f"attack.relearning.{variant}.recovery_vs_retain") in rows
        assert ("retain_model", f"attack.relearning.{variant}.recovery_vs_retain") not in rows
    report = (tmp_path / "eval" / "report.md").read_text(encoding="utf-8")
    hold = report.split("## Does it hold")[1]
    assert "| relearning (forget) | recovery R |" in hold and "| relearning (retain) | R - retain model's R |" in hold
    assert "| relearning (forget) | recall on V after relearning |" in hold
    assert "| relearning.forget.step_2.recall |" in hold and "relearning_recovery.png" in report
    assert (tmp_path / "eval" / "relearning_recovery.png").stat().st_size > 1000


def test_recovery_curves_for_the_plot() -> None:
    from lune.evaluation.report import relearning_curves

    rows = [
        {"model_label": "lune", "metric": "attack.relearning.forget.step_10.recall", "value": 0.5},
        {"model_label": "lune", "metric": "attack.relearning.forget.step_00.recall", "value": 0.1},
        {"model_label": "lune", "metric": "attack.relearning.forget.recovery", "value": 0.6},
        {"model_label": "base", "metric": "attack.relearning.retain.step_10.recall", "value": None},
    ]
    assert relearning_curves(rows) == {"forget": {"lune": [(0, 0.1), (10, 0.5)]}}


# -- a taught, unlearned tiny model ------------------------------------------------------------


@pytest.mark.slow
def test_relearning_brings_forgotten_facts_back(
    tmp_path_factory: pytest.TempPathFactory, db_path: Path, tmp_path: Path
) -> None:
    """The tiny model taught the sample subset (test_teach's cache) and unlearned by gradient ascent
    until it recalls a third of the forget facts or less, then fine-tuned on T: its recall on V comes
    back, and the retain model learns nothing of V from T. On the embedded default's taught model the
    same unlearning (8 steps, recall 0.1 on V) came back to 0.85 after 40 steps (R 0.88)."""
    from lune.data import evaluation_queries as q
    from lune.evaluation.evaluate import evaluate_models
    from lune.flows.attacks import relearn
    from lune.unlearn.config import UnlearnConfig
    from lune.unlearn.inputs import build_data
    from lune.unlearn.run import unlearn
    from lune.unlearn.sample_set import curated_set, retain_of, sample_facts
    from lune.unlearn.teach import teach
    from tests.test_teach import SUBSET, TEST_TEACH, shared_workdir

    facts = sample_facts(SUBSET)
    taught = teach(facts, shared_workdir(tmp_path_factory), TEST_TEACH, progress=False)
    data = build_data(curated_set(facts, refusals=True), retain_of(facts))
    # stops at the first check (every 4 steps) where USR >= 0.7, GUR allowed down to 0.7
    settings = dict(learning_rate=1e-3, max_steps=24, eval_every=4, usr_target=0.7, gur_tolerance=0.3)
    unlearned = unlearn(
        taught.model_dir, data, tmp_path / "ga", UnlearnConfig(method="grad_ascent", **settings), progress=False
    )
    config = EvaluateConfig(attacks=["relearning"], relearning={"variants": ["forget"]}, mia=False, tofu=False)
    with Store(db_path) as store:
        store_sample_facts(store, facts)
        outcome = evaluate_models(
            store,
            taught.model_dir,
            {"ga": str(unlearned.adapter_dir)},
            retain_model=taught.retain_model_dir,
            out_dir=tmp_path / "eval",
            config=config,
            finetune=relearn,
        )
        rows = {(r["model_label"], r["metric"]): r["value"] for r in q.run_results(store, outcome.run_id)}
    recall = {label: rows[label, "attack.relearning.forget.step_00.recall"] for label in ("base", "ga", "retain_model")}
    assert recall["base"] >= 0.9 and recall["ga"] <= 0.5 and recall["retain_model"] <= 0.2
    assert rows["ga", "attack.relearning.forget.recall"] > recall["ga"] + 0.2  # V comes back
    assert rows["ga", "attack.relearning.forget.recovery"] >= 0.4
    assert rows["ga", "attack.relearning.forget.recovery_vs_retain"] >= 0.3
