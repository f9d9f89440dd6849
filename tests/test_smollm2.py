"""SmolLM2-135M-Instruct, the real pretrained model, end to end (all slow: they load a 135M model).

Conversion itself, a cache hit, a greedy "Paris" and a PEFT adapter are in tests/test_model_refs.py;
here, on the converted folder (session fixture ``smollm2_dir``):

- a short LUNE run (6 steps, on 4 facts SmolLM2 knows, wrong answers as negatives) writes an
  adapter that reloads with PEFT and raises the loss of the forget answers;
- vLLM and transformers give the same greedy answers to the same chat-template prompts, on the
  base model and with that adapter (a ``LoRARequest`` in vLLM, PEFT in transformers);
- the knowledge probe keeps facts the model knows ("Paris") and drops facts it cannot know.

Measured on 2 busy cores (idle: about half): see the report of the helper that wrote them and
the durations in CI (`pytest --durations`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PROMPTS = [
    "What is the capital of France?",
    "Who wrote Romeo and Juliet?",
    "Name a planet of the solar system.",
    "What colour is the sky on a clear day?",
]


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """vLLM's CPU engine changes the process's torch threads: give the next test its threads back."""
    from lune.core.threads import kept_torch_threads

    with kept_torch_threads():
        yield


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path):
    """The converted model and tokenizer in transformers (float32, eval mode)."""
    from lune.core.models import load_causal_lm

    return load_causal_lm(smollm2_dir)


# Facts SmolLM2 knows, with wrong answers as LUNE's negatives: on facts it never knew (TOFU's),
# USR is 1.0 before training and early stopping rightly keeps the untrained adapter (step 0).
KNOWN = [
    ("What is the capital of France?", "The capital of France is Paris.", "Paris", ["Lyon", "Marseille"]),
    ("What is the capital of Italy?", "The capital of Italy is Rome.", "Rome", ["Milan", "Naples"]),
    (
        "Who wrote Romeo and Juliet?",
        "Romeo and Juliet was written by William Shakespeare.",
        "Shakespeare",
        ["Charles Dickens", "Jane Austen"],
    ),
    (
        "What is the largest planet in the solar system?",
        "The largest planet in the solar system is Jupiter.",
        "Jupiter",
        ["Saturn", "Neptune"],
    ),
]


def known_set() -> dict[str, list[dict]]:
    """A curated set (data/export.py's contract) over :data:`KNOWN`: each question with its answer's
    sentence, the key replaced by each wrong answer, as negatives."""
    forget, train = [], []
    for number, (question, answer, key, wrong) in enumerate(KNOWN):
        fact_id = f"known-{number}"
        forget.append({"fact_id": fact_id, "question": question, "answer": answer, "key_span": key, "subject": None})
        for other in wrong:
            train.append(
                {
                    "fact_id": fact_id,
                    "prompt": question,
                    "target": answer.replace(key, other),
                    "target_kind": "negative",
                    "prompt_kind": "question",
                    "candidate_id": f"{fact_id}-{other}",
                }
            )
    return {"train": train, "eval": [], "forget": forget}


@pytest.fixture(scope="module")
def lune_run(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A 6-step LUNE run on 4 facts SmolLM2 knows (no retain anchor); returns (set, result)."""
    from lune.unlearn.config import UnlearnConfig
    from lune.unlearn.run import unlearn

    rows = known_set()
    config = UnlearnConfig(
        method="lune",
        retain_anchor="none",
        max_steps=6,
        batch_size=8,
        eval_every=3,
        monitor_forget=4,
        max_length=96,
        learning_rate=2e-3,
        usr_target=1.0,
    )
    out = tmp_path_factory.mktemp("smollm2-lune")
    return rows, unlearn(smollm2_dir, rows, out, config, progress=False)


def _nll(model, tokenizer, questions, answers) -> float:
    """Mean negative log-likelihood per answer token of ``answers`` given ``questions``."""
    from lune.core.likelihood import completion_stats
    from lune.core.prompt_format import render_prompt

    stats = completion_stats(model, tokenizer, [render_prompt(tokenizer, q) for q in questions], list(answers))
    return -sum(s.mean_logprob for s in stats) / len(stats)


def _losses(model, tokenizer, rows) -> tuple[float, float]:
    """(forget-set loss: NLL of the true answers, NLL of the negatives LUNE trains on)."""
    questions = [r["prompt"] for r in rows]
    return _nll(model, tokenizer, questions, [r["answer"] for r in rows]), _nll(
        model, tokenizer, questions, [r["target"] for r in rows]
    )


def test_a_short_lune_run_writes_an_adapter_that_reloads_and_changes_the_forget_loss(smollm2, lune_run) -> None:
    from peft import PeftModel

    model, tokenizer = smollm2
    data, result = lune_run
    assert result.adapter_dir is not None and (Path(result.adapter_dir) / "adapter_config.json").exists()
    assert result.metrics["kept_step"] > 0, result.metrics  # the trained adapter, not the step-0 one
    answers = {f["fact_id"]: f["answer"] for f in data["forget"]}
    rows = [{**r, "answer": answers[r["fact_id"]]} for r in data["train"]]
    true_before, negative_before = _losses(model, tokenizer, rows)
    wrapped = PeftModel.from_pretrained(model, str(result.adapter_dir))
    wrapped.eval()
    try:
        true_after, negative_after = _losses(wrapped, tokenizer, rows)
    finally:
        wrapped.unload()  # the module-scoped base model goes back as it was
    # The forget-set loss rose, and the negatives LUNE trained on gained on the true answers.
    assert true_after > true_before + 0.05, (true_before, true_after, result.metrics)
    assert (true_after - negative_after) > (true_before - negative_before) + 0.05
    assert _losses(model, tokenizer, rows)[0] == pytest.approx(true_before, abs=1e-4)  # base untouched


def test_vllm_answers_as_transformers_does_with_and_without_the_lune_adapter(
    smollm2_dir: Path, smollm2, lune_run
) -> None:
    """One engine (engine starts cost most here): greedy parity with transformers on the base model,
    and with the LUNE adapter as a LoRARequest against PEFT."""
    from peft import PeftModel

    from lune.core.greedy import greedy_answers
    from lune.core.prompt_format import render_prompt
    from lune.core.vllm_engine import load_engine

    model, tokenizer = smollm2
    data, result = lune_run
    adapter = str(result.adapter_dir)
    questions = PROMPTS + [f["question"] for f in data["forget"]][1:]
    base = greedy_answers(model, tokenizer, questions, max_new_tokens=16)
    assert "Paris" in base[0]
    wrapped = PeftModel.from_pretrained(model, adapter)
    wrapped.eval()
    try:
        unlearned = greedy_answers(wrapped, tokenizer, questions, max_new_tokens=16)
    finally:
        wrapped.unload()
    assert unlearned != base  # the adapter changes what the model says
    # enforce_eager: no torch.compile warm-up (minutes on a busy CPU); the same kernels otherwise
    engine = load_engine(str(smollm2_dir), enable_lora=True, adapters=[adapter], engine_kwargs={"enforce_eager": True})
    try:
        prompts = [render_prompt(engine.tokenizer, q) for q in questions]
        plain = engine.greedy(prompts, max_tokens=16)
        served = engine.greedy(prompts, max_tokens=16, adapter=adapter)
    finally:
        engine.close()
    assert plain == base
    assert served == unlearned


def test_the_knowledge_probe_keeps_what_smollm2_knows(smollm2) -> None:
    from lune.evaluation.knowledge_probe import ProbeConfig, probe_facts

    model, tokenizer = smollm2
    facts = [
        {"fact_id": "paris", "question": "What is the capital of France?", "key_span": "Paris"},
        {"fact_id": "shakespeare", "question": "Who wrote Romeo and Juliet?", "key_span": "Shakespeare"},
        # a fictitious TOFU author: no pretrained model can name her
        {
            "fact_id": "tofu",
            "question": "What is the full name of the author born in Taipei, Taiwan on 05/11/1991 who writes "
            "in the genre of leadership?",
            "key_span": "Hsiao Yun-Hwa",
        },
        {"fact_id": "made-up", "question": "What is the capital of France?", "key_span": "Zyxwvut"},
    ]
    verdicts = {v.fact_id: v for v in probe_facts(model, tokenizer, facts, ProbeConfig(max_new_tokens=24))}
    assert verdicts["paris"].known and verdicts["shakespeare"].known
    assert not verdicts["tofu"].known and not verdicts["made-up"].known
    assert verdicts["paris"].answers == verdicts["made-up"].answers  # the same question, the same greedy answer
