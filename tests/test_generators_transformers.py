"""The transformers backend on a real tiny Llama: greedy as evaluation sees it, sampling, seeds,
stop strings, LoRA adapters (default, per call, or none)."""

from __future__ import annotations

import pytest
from _generate_data import PROMPTS, make_lora_adapter

from lune.core.greedy import greedy_answers, greedy_complete
from lune.data.errors import LuneError
from lune.generators.backends import TransformersGenerator
from lune.generators.backends.transformers_backend import trim_at_stop
from lune.generators.base import GenerationRequest

pytestmark = pytest.mark.slow  # loads and runs a (tiny) model


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    return make_lora_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"))


@pytest.fixture(scope="module")
def gen(tiny_model_dir):
    g = TransformersGenerator(str(tiny_model_dir), batch_size=4)
    g.load()
    return g


def test_greedy_is_evaluation_greedy(gen, tiny_model_dir) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    expected = greedy_complete(model, tokenizer, PROMPTS, max_new_tokens=12)
    assert gen.greedy(PROMPTS, max_tokens=12) == expected
    questions = ["Who wrote Carrie?", "What genre is Nikolai Abilov known for?"]
    assert gen.greedy_answers(questions, max_tokens=12) == greedy_answers(
        model, tokenizer, questions, max_new_tokens=12
    )
    # Batched or one by one, the same answers (left padding does not change a greedy answer here).
    assert [gen.greedy([p], max_tokens=12)[0] for p in PROMPTS] == expected


def test_sampling_n_seed_and_stop(gen) -> None:
    def run(seed, n=3, stop=()):
        requests = [
            GenerationRequest(prompt=p, n=n, temperature=1.0, top_p=0.95, max_tokens=10, seed=seed, stop=list(stop))
            for p in PROMPTS
        ]
        return [g.texts for g in gen.generate(requests)]

    first = run(seed=7)
    assert [len(t) for t in first] == [3, 3, 3]
    assert len(set(first[0])) > 1  # n samples, not n copies
    assert run(seed=7) == first  # same seeds, same samples
    assert run(seed=8) != first
    stopped = run(seed=7, stop=[" "])
    assert all(" " not in text for texts in stopped for text in texts)


def test_greedy_requests_give_n_identical_texts(gen) -> None:
    out = gen.generate([GenerationRequest(prompt=PROMPTS[0], n=2, temperature=0.0, max_tokens=8)])
    assert out[0].texts[0] == out[0].texts[1] == gen.greedy(PROMPTS[:1], max_tokens=8)[0]


def test_sampling_leaves_the_global_rng_alone(gen) -> None:
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    gen.generate([GenerationRequest(prompt=PROMPTS[0], n=2, temperature=1.0, max_tokens=4, seed=1)])
    assert torch.equal(torch.rand(3), expected)


def test_adapters_default_per_call_and_base(tiny_model_dir, adapter_dir, gen) -> None:
    base = gen.greedy(PROMPTS, max_tokens=12)
    with_adapter = TransformersGenerator(str(tiny_model_dir), adapter=str(adapter_dir))
    adapted = with_adapter.greedy(PROMPTS, max_tokens=12)
    assert adapted != base
    assert with_adapter.greedy(PROMPTS, max_tokens=12, adapter=False) == base
    assert with_adapter.model_name.endswith(str(adapter_dir))
    # One base model, adapters chosen per call (how evaluation compares base and unlearned).
    shared = TransformersGenerator(str(tiny_model_dir))
    assert shared.greedy(PROMPTS, max_tokens=12) == base
    assert shared.greedy(PROMPTS, max_tokens=12, adapter=str(adapter_dir)) == adapted
    assert shared.greedy(PROMPTS, max_tokens=12) == base  # the adapter is off again
    sampled = shared.generate([GenerationRequest(prompt=PROMPTS[0], n=2, temperature=1.0, max_tokens=6, seed=3)])
    assert len(sampled[0].texts) == 2


def test_missing_paths_are_clear_errors(tmp_path, gen) -> None:
    with pytest.raises(LuneError, match="not found"):
        TransformersGenerator(str(tmp_path / "nope")).load()
    with pytest.raises(LuneError, match=r"adapter folder .* not found"):
        gen.greedy(PROMPTS[:1], max_tokens=2, adapter=str(tmp_path / "nope"))


def test_trim_at_stop() -> None:
    assert trim_at_stop("abc\n\nQuestion: x", ["\n\n", "\nQuestion:"]) == "abc"
    assert trim_at_stop("abc", []) == "abc"
