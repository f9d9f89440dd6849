"""Early stopping's checks (unlearn/early_stopping.py): a check asks the forget and retain questions in
one greedy pass, and each probe's recall is computed on its own answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from lune.core.greedy import greedy_answers
from lune.unlearn.early_stopping import Probe, RecallChecks
from lune.unlearn.loop import LoopState
from lune.unlearn.sample_set import sample_facts


def test_share_counts_the_answers_that_state_their_key_span() -> None:
    probe = Probe(["q1", "q2", "q3", "q4"], ["Paris", "1990", "blue", "Ann"])
    answers = ["It is Paris.", "In 1991.", "Blue, of course", "nobody"]
    assert probe.share(answers) == pytest.approx(2 / 4)  # Paris, blue (spans match case-insensitively)
    assert Probe([], []).share([]) is None
    with pytest.raises(ValueError):
        probe.share(answers[:3])  # one answer per question, or it is a bug


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), AutoTokenizer.from_pretrained(str(tiny_model_dir))


def test_one_pass_gives_each_probe_its_own_answers(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    facts = sample_facts({"forget": 3, "retain": 5, "utility": 0})
    forget_q = [f["question"] for f in facts if f["split"] == "forget"]
    retain_q = [f["question"] for f in facts if f["split"] == "retain"]
    # Key spans made from each probe's own answers, asked alone: recall 1.0 for the forget probe and
    # 0.0 for the retain probe if and only if the joint pass hands every answer back to its question.
    said = greedy_answers(model, tokenizer, forget_q, max_new_tokens=6)
    forget = Probe(forget_q, [f"{a}" for a in said])
    retain = Probe(retain_q, ["never said by anyone"] * len(retain_q))
    checks = RecallChecks(
        model, tokenizer, forget, retain, usr_target=0.9, gur_tolerance=0.05, eval_every=1, max_new_tokens=6
    )
    assert all(said), "the untrained model must say something for this test to mean anything"
    assert checks.measure() == (1.0, 0.0)
    assert checks.answered == len(forget_q) + len(retain_q)


def test_checks_run_at_the_start_every_k_steps_and_at_the_last(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    facts = sample_facts({"forget": 2, "retain": 2, "utility": 0})
    probe = Probe([f["question"] for f in facts], [f["key_span"] for f in facts])
    checks = RecallChecks(
        model, tokenizer, probe, Probe([], []), usr_target=1.1, gur_tolerance=0.05, eval_every=3, max_new_tokens=2
    )
    state = LoopState(max_steps=7)
    checks.on_train_begin(state)
    for step in range(1, 8):
        state.step = step
        checks.on_step_end(state)
    assert [c.step for c in checks.rules.history] == [0, 3, 6, 7]
    assert checks.answered == 4 * len(probe)


def test_a_tolerance_under_one_monitored_fact_is_warned_about() -> None:
    from lune.unlearn.early_stopping import EarlyStopping, coarse_monitor_warning

    # 10 monitored facts: one lost is 0.1 of GUR, over the default 0.05
    warning = coarse_monitor_warning(0.05, 10)
    assert warning is not None and "10 monitored retain facts" in warning and "1/10 = 0.1" in warning
    assert coarse_monitor_warning(0.05, 20) is None  # 1/20 = 0.05: one lost fact is still allowed
    assert coarse_monitor_warning(0.05, 40) is None and coarse_monitor_warning(0.0, 0) is None
    # and the rule it warns about: at 10 facts, the first lost one stops the run
    rules = EarlyStopping(usr_target=0.9, gur_tolerance=0.05)
    rules.start(forget_recall=1.0, retain_recall=1.0)
    assert rules.update(5, forget_recall=0.8, retain_recall=0.9) == EarlyStopping.GUR_TOLERANCE
