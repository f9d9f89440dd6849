"""The knowledge probe and the select step, fast: the verdict rule worked by hand, the probe on a tiny
model (its answers are the model's own greedy answers), and the selection on a real store (the
TOFU sample): caps, set-aside facts, drop reasons as rows, and a second selection restoring the first's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SAMPLE_TOFU = Path(__file__).resolve().parents[1] / "data" / "sample" / "tofu"


# -- the rule ---------------------------------------------------------------------------------


def test_fact_score_is_the_mean_key_score_of_the_answers() -> None:
    from lune.evaluation.knowledge_probe import fact_score

    # short span: 1 when stated as whole tokens, else 0 -> (1 + 0) / 2
    assert fact_score(["Born in Portland, Maine.", "He was born in Maine."], "Portland") == 0.5
    assert fact_score(["Kuwaiti food"], "Kuwait") == 0.0  # whole tokens only
    assert fact_score([], "Paris") == 0.0
    # a long span (9 tokens > 8) scores its content coverage: 'wrote' 'novels' 'about' 'haunted' 'hotels'
    # 'maine' 'towns' 'dogs' (8 tokens longer than 2 characters); the answer states 'novels' 'haunted' 'hotels'
    span = "He wrote novels about haunted hotels, Maine towns, dogs"
    assert fact_score(["Mostly novels on haunted hotels."], span) == pytest.approx(3 / 8)


def test_judge_keeps_a_fact_when_the_mean_reaches_the_threshold() -> None:
    from lune.evaluation.knowledge_probe import judge

    facts = [{"fact_id": "a", "key_span": "1989"}, {"fact_id": "b", "key_span": "1989"}]
    prompts = [["q1", "q1 again"], ["q2"]]
    answers = [["In 1989.", "I do not know."], ["The year 1989."]]
    half = judge(facts, prompts, answers, threshold=0.5)
    assert [(v.fact_id, v.score, v.known) for v in half] == [("a", 0.5, True), ("b", 1.0, True)]
    strict = judge(facts, prompts, answers, threshold=1.0)
    assert [v.known for v in strict] == [False, True]
    assert strict[0].answers == ("In 1989.", "I do not know.")
    with pytest.raises(ValueError, match="2 facts, 1 prompt lists"):
        judge(facts, prompts[:1], answers)


def test_fact_prompts_add_paraphrases_once_in_order() -> None:
    from lune.evaluation.knowledge_probe import fact_prompts

    fact = {"fact_id": "f", "question": "Where was he born? "}
    assert fact_prompts(fact) == ["Where was he born?"]
    paraphrases = {"f": ["His birthplace?", "Where was he born?", " "], "g": ["other"]}
    assert fact_prompts(fact, paraphrases) == ["Where was he born?", "His birthplace?"]


def test_probe_config_and_the_evaluate_stage_share_the_long_span_rule() -> None:
    from lune.evaluation.knowledge_probe import LONG_SPAN_TOKENS, ProbeConfig
    from lune.evaluation.metrics.usr import LONG_SPAN_TOKENS as EVALUATE_DEFAULT

    assert LONG_SPAN_TOKENS == EVALUATE_DEFAULT
    with pytest.raises(ValueError, match="unknown split"):
        ProbeConfig(splits=["forget", "neighbours"])


# -- on a model -------------------------------------------------------------------------------


def test_probe_facts_judges_the_models_own_greedy_answers(tiny_model_dir: Path) -> None:
    from lune.core.greedy import greedy_answers
    from lune.core.models import load_causal_lm
    from lune.evaluation.knowledge_probe import ProbeConfig, probe_facts

    model, tokenizer = load_causal_lm(tiny_model_dir)
    questions = ["Who wrote the novel?", "Where was the author born?"]
    said = greedy_answers(model, tokenizer, questions, max_new_tokens=8)
    word = next(w for w in said[0].split() if w.isalpha())  # a word the model does say
    facts = [
        {"fact_id": "said", "question": questions[0], "key_span": word},
        {"fact_id": "echo", "question": "In 1956, Buffett founded ___ Partnership Ltd.", "key_span": "Buffett"},
        {"fact_id": "never", "question": questions[1], "key_span": "Zyxwvut Qponmlk"},
    ]
    verdicts = probe_facts(model, tokenizer, facts, ProbeConfig(max_new_tokens=8))
    # the echo fact is not asked: its question alone states the key, so any echo would pass
    assert [v.answers for v in verdicts] == [(said[0],), (), (said[1],)]
    assert [(v.fact_id, v.known, v.score, v.reason) for v in verdicts] == [
        ("said", True, 1.0, ""),
        ("echo", False, 0.0, "key_in_question"),
        ("never", False, 0.0, "unknown"),
    ]


# -- the select step on a store ---------------------------------------------------------------


def _ingest_sample(db: Path, corpus: str = "tofu-small") -> None:
    from lune.data.ingest import ingest
    from lune.data.store import Store

    with Store.open(db) as store:
        ingest(store, [{"format": "tofu", "path": str(SAMPLE_TOFU), "forget": "forget01", "corpus": corpus}])


def _splits(db: Path) -> dict[str, int]:
    from lune.data.store import Store

    with Store.open(db) as store:
        rows = store.query("SELECT split, count(*) AS n FROM facts GROUP BY split")
    return {r["split"]: r["n"] for r in rows}


def test_caps_keep_the_first_facts_of_each_split_and_record_why_the_others_went(db_path: Path) -> None:
    from lune.data.store import Store
    from lune.flows.select import select_facts

    _ingest_sample(db_path)
    _ingest_sample(db_path, corpus="other")  # another corpus in the same store is never touched
    before = _splits(db_path)
    per_corpus = {split: n // 2 for split, n in before.items()}  # the sample's splits, in one corpus
    assert per_corpus["forget"] == 40 and per_corpus["retain"] >= 40
    summary = select_facts.fn(str(db_path), ["tofu-small"], select={"max_facts": {"forget": 20, "retain": 20}})
    over = {"forget": 20, "retain": per_corpus["retain"] - 20}
    assert summary["kept"] == sum(per_corpus.values()) - sum(over.values())
    assert summary["counts"] == {
        **{f"{split}_kept": n for split, n in per_corpus.items() if split not in over},
        "forget_kept": 20,
        "forget_over_cap": 20,
        "retain_kept": 20,
        "retain_over_cap": over["retain"],
    }
    after = {split: n - over.get(split, 0) for split, n in before.items()}
    assert _splits(db_path) == {**after, "set_aside": sum(over.values())}
    with Store.open(db_path) as store:
        kept = store.query(
            "SELECT f.subject, f.source_line FROM facts f WHERE f.corpus = 'tofu-small' AND f.split = 'forget'"
        )
        reasons = store.query("SELECT reason, count(*) AS n FROM v_fact_selection GROUP BY reason ORDER BY reason")
    # the first 20 lines of forget01.json: its first author, whole
    assert sorted(r["source_line"] for r in kept) == list(range(1, 21))
    assert len({r["subject"] for r in kept}) == 1
    assert {r["reason"]: r["n"] for r in reasons} == {"kept": summary["kept"], "over_cap": sum(over.values())}

    # a second selection starts from every fact again
    select_facts.fn(str(db_path), ["tofu-small"], select={"max_facts": {"forget": 40}})
    assert _splits(db_path) == before


def test_the_probe_sets_aside_what_the_model_does_not_answer(db_path: Path, tiny_model_dir: Path) -> None:
    from lune.data.store import Store
    from lune.evaluation.knowledge_probe import states_key_itself
    from lune.flows.select import select_facts

    _ingest_sample(db_path)
    before = _splits(db_path)
    # An untrained tiny model states no TOFU answer: every probed forget fact is unknown, and the
    # step refuses to go on with nothing to forget.
    from lune.data.errors import LuneError

    with pytest.raises(LuneError, match=r"no forget fact .* is kept"):
        select_facts.fn(
            str(db_path),
            ["tofu-small"],
            probe={"enabled": True, "splits": ["forget"], "max_new_tokens": 4},
            model=str(tiny_model_dir),
        )
    with Store.open(db_path) as store:
        rows = store.query("SELECT split, reason, model, answers, score, question, key_span FROM v_fact_selection")
    assert len(rows) == sum(before.values())
    probed = [r for r in rows if r["split"] == "forget"]
    # TOFU questions that name their own key span (an author's name asked about) are not asked
    echoes = [r for r in probed if states_key_itself(r)]
    assert 0 < len(echoes) < 40 and len(probed) == 40
    assert {r["reason"] for r in echoes} == {"key_in_question"}
    assert all(r["answers"] is None for r in echoes)  # nothing asked, nothing answered
    asked = [r for r in probed if not states_key_itself(r)]
    assert {r["reason"] for r in asked} == {"unknown"}
    assert all(len(json.loads(r["answers"])) == 1 for r in asked)  # one prompt each: the question
    assert all(r["model"] == str(tiny_model_dir) and r["score"] == 0.0 for r in probed)
    assert {r["reason"] for r in rows if r["split"] != "forget"} == {"kept"}
    assert _splits(db_path) == {**{k: v for k, v in before.items() if k != "forget"}, "set_aside": 40}


# -- the pipeline's view ----------------------------------------------------------------------


def test_the_pipeline_selects_in_the_corpora_it_ingests_and_keeps_earlier_run_ids(tmp_path: Path) -> None:
    from lune.data.ids import content_id
    from lune.flows.config import load_config
    from lune.flows.pipeline import pipeline_corpora, pipeline_run_id

    repo = Path(__file__).resolve().parents[1]
    assert pipeline_corpora(load_config(repo / "configs" / "smollm2-known.yaml")) == ["rwku-smollm2", "tofu-utility"]
    default = load_config()
    assert pipeline_corpora(default) == ["tofu"]
    # Without a probe or caps, the run id is what it was before those sections existed (a rerun resumes).
    before = {k: v for k, v in default.model_dump(mode="json").items() if k not in ("probe", "select")}
    db = str(tmp_path / "lune.duckdb")
    assert pipeline_run_id(default, db) == content_id("pipeline", before, str(Path(db).resolve()))[:16]
    capped = default.model_copy(update={"select": default.select.model_validate({"max_facts": {"forget": 5}})})
    assert pipeline_run_id(capped, db) != pipeline_run_id(default, db)
