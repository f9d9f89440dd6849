"""TOFU as open-unlearning measures it (issue 16 item 5), each change against a hand-worked example:
min-k% with k = 0.4 rounded down, forget vs holdout membership inference (the loader's holdout
split), the nine model-utility components with missing ones an error, retain ROUGE on
retain_perturbed's facts, and a generation cap that fits the answers. (The answer's EOS scored in
likelihoods: tests/test_tokens.py.)"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lune.core.models import ModelSpec
from lune.data.config import IngestSource
from lune.data.errors import LuneError
from lune.data.loaders import tofu as tofu_loader
from lune.evaluation.config import EvaluateConfig
from lune.evaluation.metrics import mia, tofu
from lune.evaluation.metrics.registry import MetricContext
from lune.evaluation.outputs import ModelOutputs, TruthLikelihoods
from lune.evaluation.probes import EvalProbe, ProbeSuite, TruthItem

REPO = Path(__file__).resolve().parents[1]
SAMPLE_TOFU = REPO / "data" / "sample" / "tofu"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# -- min-k% and min-k%++ -----------------------------------------------------------------------


def _open_unlearning_min_k(lp: np.ndarray, k: float) -> float:
    """open-unlearning's MinKProbAttack.compute_score, written out: minus the mean of the
    ``max(1, int(len * k))`` lowest log-probs (their sign: lower = member; lune's: higher = member)."""
    return -float(np.mean(np.sort(lp)[: max(1, int(len(lp) * k))]))


def test_min_k_counts_round_down_like_open_unlearning() -> None:
    assert EvaluateConfig().min_k == 0.4 and EvaluateConfig().min_k_rounding == "floor"
    assert mia.lowest_k_count(5, 0.4) == 2  # 2.0
    assert mia.lowest_k_count(3, 0.4) == 1 and mia.lowest_k_count(3, 0.4, "ceil") == 2  # 1.2
    assert mia.lowest_k_count(16, 0.4) == 6 and mia.lowest_k_count(16, 0.4, "ceil") == 7  # 6.4
    assert mia.lowest_k_count(2, 0.2) == 1 and mia.lowest_k_count(2, 0.2, "ceil") == 1  # at least one
    # seven tokens: floor(0.4 * 7) = floor(2.8) = 2 lowest (-6, -4); ceil(2.8) = 3; old ceil(0.2 * 7) = 2
    lp = np.array([-0.5, -6.0, -1.0, -4.0, -0.1, -2.0, -3.0])
    stats = mia.TokenStats(lp, np.zeros(7), np.ones(7))
    assert mia.min_k_score(stats) == pytest.approx(-5.0)
    assert mia.min_k_score(stats, 0.4, "ceil") == pytest.approx(-13.0 / 3)
    assert mia.min_k_score(stats, 0.2, "ceil") == pytest.approx(-5.0)
    assert mia.min_k_score(stats) == pytest.approx(-_open_unlearning_min_k(lp, 0.4))


def test_min_k_plus_plus_standardises_then_rounds_down() -> None:
    # z = (lp - mu) / sigma = [1, -2, -0.5, 0.25, -1]; floor(0.4 * 5) = 2 lowest: -2, -1
    stats = mia.TokenStats(
        np.array([-1.0, -5.0, -2.0, -1.5, -3.0]), np.array([-2.0, -1.0, -1.0, -2.0, -2.0]), np.array([1, 2, 2, 2, 1.0])
    )
    assert mia.min_k_plus_plus_score(stats) == pytest.approx(-1.5)
    assert mia.min_k_plus_plus_score(stats, 0.2, "ceil") == pytest.approx(-2.0)
    scores = mia.mia_scores(stats, "text", 0.4, "floor")
    assert scores["min_k_plus_plus"] == pytest.approx(-1.5) and scores["min_k"] == pytest.approx(-4.0)


def test_the_eos_counts_in_the_loss_not_in_min_k() -> None:
    # answer tokens -1, -3, -2 and EOS -0.5: loss over all four, min-k over the three (floor(1.2) = 1: -3)
    stats = mia.TokenStats(np.array([-1.0, -3.0, -2.0, -0.5]), np.zeros(4), np.ones(4))
    scores = mia.mia_scores(stats, "abc", eos_scored=True)
    assert scores["loss"] == pytest.approx(-6.5 / 4)
    assert scores["min_k"] == pytest.approx(-3.0) and scores["min_k_plus_plus"] == pytest.approx(-3.0)
    # without the EOS left out: floor(0.4 * 4) = 1 lowest of four, still -3; with k = 0.5 it shows
    assert mia.mia_scores(stats, "abc", 0.5)["min_k"] == pytest.approx(-2.5)  # -3, -2
    assert mia.mia_scores(stats, "abc", 0.5, eos_scored=True)["min_k"] == pytest.approx(-3.0)  # floor(1.5) = 1


# -- the TOFU holdout split ------------------------------------------------------------------------


def test_the_sample_holds_out_as_many_facts_as_it_forgets() -> None:
    files = tofu_loader.load(IngestSource(format="tofu", path=str(SAMPLE_TOFU), forget="forget01"))
    facts = [f for loaded in files for f in loaded.facts]
    splits = Counter(f["split"] for f in facts)
    assert splits["holdout"] == splits["forget"] == 40
    holdout = [f for f in facts if f["split"] == "holdout"]
    assert {f["group_name"] for f in holdout} == {"holdout01"}
    assert Counter(f["subject"] for f in holdout) == {"Isabel Martínez": 20, "Michel Vaelsing": 20}  # whole authors
    evaluated = {(r["question"], r["answer"]) for r in _jsonl(SAMPLE_TOFU / "retain_perturbed.json")}
    assert not [f for f in holdout if (f["question"], f["answer"]) in evaluated]
    assert splits["retain"] == 160 and all(
        (f["question"], f["answer"]) in evaluated for f in facts if f["split"] == "retain"
    )


def test_the_full_benchmark_holds_out_forget05_sized(benchmark_data: Path) -> None:
    folder = benchmark_data / "tofu"
    files = {
        Path(f.path).name: f for f in tofu_loader.load(IngestSource(format="tofu", path=str(folder), forget="forget05"))
    }
    retain = files["retain95.json"].facts
    assert Counter(f["split"] for f in retain) == {"retain": 3800 - 200, "holdout": 200}
    # the last ten authors before forget05's, outside retain_perturbed (its first 20 authors)
    assert {(f["source_line"] - 1) // 20 for f in retain if f["split"] == "holdout"} == set(range(180, 190))


def test_a_holdout_file_is_read_as_is(tmp_path: Path) -> None:
    for name in ("forget01.json", "retain99.json"):
        shutil.copy(SAMPLE_TOFU / name, tmp_path / name)
    rows = _jsonl(SAMPLE_TOFU / "retain99.json")[:3]
    (tmp_path / "holdout01.json").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    files = {
        Path(f.path).name: f
        for f in tofu_loader.load(IngestSource(format="tofu", path=str(tmp_path), forget="forget01"))
    }
    assert Counter(f["split"] for f in files["holdout01.json"].facts) == {"holdout": 3}
    assert Counter(f["split"] for f in files["retain99.json"].facts) == {"retain": 200}  # nothing carved


# -- model utility -----------------------------------------------------------------------------


def test_model_utility_takes_all_nine_components() -> None:
    # retain 1/2, 1/4, 1; real authors 1/2 x 3; world facts 1/4, 1, 1: sum of inverses 2+4+1+6+4+1+1 = 19
    values = [0.5, 0.25, 1.0, 0.5, 0.5, 0.5, 0.25, 1.0, 1.0]
    components = dict(zip(tofu.UTILITY_COMPONENTS, values))
    result = tofu.model_utility(components, require_all=True)
    assert result.value == pytest.approx(9 / 19) and result.n == 9
    with pytest.raises(tofu.MissingUtilityComponents, match="missing: real_authors_probability, world_facts_truth"):
        tofu.model_utility(
            {**components, "real_authors_probability": None, "world_facts_truth_ratio": math.nan}, require_all=True
        )
    partial = {k: v for k, v in components.items() if not k.startswith("world_facts")}
    with pytest.raises(tofu.MissingUtilityComponents):
        tofu.model_utility(partial, require_all=True)
    assert tofu.model_utility(partial).value == pytest.approx(6 / (2 + 4 + 1 + 6))  # lune's old variant


def _utility_suite(groups: tuple[str, ...]) -> ProbeSuite:
    probes = {"retain": [EvalProbe("retain", "r0", "q", "Rome", "Rome")], "utility": []}
    truth = {"retain": [TruthItem("retain", "r0", "q", "Rome", ("Rome",), ("Oslo",))]}
    for group in groups:
        probes["utility"].append(EvalProbe("utility", f"{group}0", "q", "Nile", "Nile", group=group))
        truth[group] = [TruthItem(group, f"{group}0", "q", "Nile", ("Nile",), ("Amazon",))]
    return ProbeSuite(probes, truth=truth)


def _utility_outputs(groups: tuple[str, ...]) -> ModelOutputs:
    # every answer: normalised probability 0.6 against 0.2 for the wrong one; greedy answers are right
    truth = {g: [TruthLikelihoods(math.log(0.6), [math.log(0.6)], [math.log(0.2)])] for g in ("retain", *groups)}
    return ModelOutputs(ModelSpec("base", "m"), {"retain": ["Rome"], "utility": ["Nile"] * len(groups)}, truth=truth)


def test_model_utility_rows_of_the_nine_and_missing_ones_an_error() -> None:
    groups = ("real_authors", "world_facts")
    ctx = MetricContext("run", _utility_suite(groups), [_utility_outputs(groups)], None, EvaluateConfig())
    (row,) = [r for r in tofu.tofu_rows(ctx).results if r["metric"] == "model_utility"]
    # retain: probability 0.6, truth ratio 1 - 1/3, ROUGE 1; each utility group: 0.6 / 0.8, 2/3, 1
    inverses = 1 / 0.6 + 1.5 + 1 + 2 * (4 / 3 + 1.5 + 1)
    assert row["value"] == pytest.approx(9 / inverses) and row["n"] == 9

    one = ("world_facts",)
    ctx = MetricContext("run", _utility_suite(one), [_utility_outputs(one)], None, EvaluateConfig())
    with pytest.raises(LuneError, match=r"model base: .*missing: real_authors_probability.*utility_missing: skip"):
        tofu.tofu_rows(ctx)
    skip = MetricContext(
        "run", _utility_suite(one), [_utility_outputs(one)], None, EvaluateConfig(utility_missing="skip")
    )
    (row,) = [r for r in tofu.tofu_rows(skip).results if r["metric"] == "model_utility"]
    assert row["value"] == pytest.approx(6 / (1 / 0.6 + 1.5 + 1 + 4 / 3 + 1.5 + 1)) and row["n"] == 6


# -- probe sets: retain ROUGE on retain_perturbed, MIA on holdout ------------------------------


def test_retain_probes_are_retain_perturbeds_facts(tmp_path: Path, db_path: Path) -> None:
    from lune.data.ingest import ingest
    from lune.data.store import Store
    from lune.evaluation.probes import load_probe_suite

    folder = tmp_path / "tofu"
    shutil.copytree(SAMPLE_TOFU, folder)
    kept = _jsonl(SAMPLE_TOFU / "retain_perturbed.json")[:100]  # TOFU evaluates a subset of its retain facts
    (folder / "retain_perturbed.json").write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    with Store(db_path) as store:
        ingest(store, {"format": "tofu", "path": str(folder), "forget": "forget01"})
        suite = load_probe_suite(store, None, max_per_set=None)
        old = load_probe_suite(store, None, max_per_set=None, retain_probes="all", mia_nonmembers="perturbed")
    evaluated = {r["question"] for r in kept}
    assert {p.question for p in suite.probes["retain"]} == evaluated
    assert len(old.probes["retain"]) == 160
    assert {t.source for t in suite.mia_nonmembers} == {"holdout_fact"} and len(suite.mia_nonmembers) == 40
    assert {t.source for t in old.mia_nonmembers} == {"perturbed_answer"}


# -- the generation cap --------------------------------------------------------------------------


def test_the_generation_cap_fits_the_longest_answer(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from lune.core.tokens import answer_text
    from lune.evaluation.inference import FIT_MARGIN_TOKENS, generation_cap

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    answers = [r["answer"] for r in _jsonl(SAMPLE_TOFU / "forget01.json")]
    suite = ProbeSuite({"forget": [EvalProbe("forget", str(i), "q", a, a) for i, a in enumerate(answers)]})
    longest = max(len(tokenizer(answer_text(tokenizer, a), add_special_tokens=False)["input_ids"]) for a in answers)
    assert longest > 48  # the old cap cut the longest answers of the sample short
    assert generation_cap(tokenizer, suite, EvaluateConfig()) == longest + FIT_MARGIN_TOKENS
    assert generation_cap(tokenizer, suite, EvaluateConfig(max_new_tokens=20)) == 20
    assert generation_cap(tokenizer, suite, EvaluateConfig(fit_max_new_tokens=False)) == 200
