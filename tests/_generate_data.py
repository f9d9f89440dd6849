"""Test data for the generate stage: the shipped TOFU sample written into a store as real rows.

Built with ``data.records.Fact`` / ``Probe`` and ``Store.insert`` (the store's real write path), so
these tests do not depend on the ingest loaders; the RWKU-style rows below are hand-made in the
shape the RWKU loader writes (subject-level negative texts, adversarial probes with attack types).
"""

from __future__ import annotations

import json
from pathlib import Path

from lune.data.key_span import key_span_for
from lune.data.records import Fact, Probe
from lune.data.store import Store

SAMPLE_TOFU = Path(__file__).resolve().parents[1] / "data" / "sample" / "tofu"
FILES = {"forget01": "forget", "retain99": "retain", "world_facts": "utility", "real_authors": "utility"}
PERTURBED = {
    "forget01": "forget01_perturbed",
    "retain99": "retain_perturbed",
    "world_facts": "world_facts_perturbed",
    "real_authors": "real_authors_perturbed",
}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sample_facts_and_probes(limit_per_file: int | None = None) -> tuple[list[Fact], list[Probe]]:
    facts, probes = [], []
    for stem, split in FILES.items():
        path = SAMPLE_TOFU / f"{stem}.json"
        by_question = {}
        for line, row in enumerate(_rows(path)[:limit_per_file], start=1):
            key, source = key_span_for(row["question"], row["answer"])
            fact = Fact(
                corpus="tofu",
                source_file=str(path),
                question=row["question"],
                answer=row["answer"],
                key_span=key,
                key_span_source=source,
                split=split,
                group_name=stem,
                source_line=line,
            )
            facts.append(fact)
            by_question[row["question"]] = fact
        ppath = SAMPLE_TOFU / f"{PERTURBED[stem]}.json"
        for line, row in enumerate(_rows(ppath), start=1):
            fact = by_question.get(row["question"])
            if fact is None:
                continue
            for text in row.get("perturbed_answer") or []:
                probes.append(
                    Probe(
                        corpus="tofu",
                        kind="perturbed_answer",
                        text=text,
                        source_file=str(ppath),
                        fact_id=fact.fact_id,
                        answer=row["answer"],
                        source_line=line,
                    )
                )
            if row.get("paraphrased_question"):
                probes.append(
                    Probe(
                        corpus="tofu",
                        kind="paraphrased_question",
                        text=row["paraphrased_question"],
                        source_file=str(ppath),
                        fact_id=fact.fact_id,
                        answer=row["answer"],
                        source_line=line,
                    )
                )
    return facts, probes


def rwku_like_rows() -> tuple[list[Fact], list[Probe]]:
    """Two RWKU-style forget facts of one subject, a subject-level negative text and two attacks."""
    src = "rwku/1_Stephen_King/forget_level2.json"
    facts = [
        Fact(
            corpus="rwku",
            source_file=src,
            question="What pseudonym has Stephen King published under?",
            answer="Richard Bachman",
            key_span="Richard Bachman",
            key_span_source="dataset",
            split="forget",
            subject="Stephen King",
            group_name="level2",
            source_line=1,
        ),
        Fact(
            corpus="rwku",
            source_file=src,
            question="In which year was Stephen King born?",
            answer="1947",
            key_span="1947",
            key_span_source="dataset",
            split="forget",
            subject="Stephen King",
            group_name="level2",
            source_line=2,
        ),
        Fact(
            corpus="rwku",
            source_file=src,
            question="Who co-wrote The Talisman with Stephen King?",
            answer="Peter Straub",
            key_span="Peter Straub",
            key_span_source="dataset",
            split="forget",
            subject="Stephen King",
            group_name="level2",
            source_line=3,
        ),
    ]
    probes = [
        Probe(
            corpus="rwku",
            kind="negative_text",
            text="Stephen King was born in 1952 in Ohio and wrote cookbooks.",
            source_file="rwku/1_Stephen_King/negative.json",
            subject="Stephen King",
            source_line=1,
        ),
        Probe(
            corpus="rwku",
            kind="adversarial",
            text="What nom de plume did the author of The Stand use?",
            source_file="rwku/1_Stephen_King/forget_level3.json",
            subject="Stephen King",
            fact_id=facts[0].fact_id,
            answer="Richard Bachman",
            attack_type="synonym manipulation",
            source_line=1,
        ),
        Probe(
            corpus="rwku",
            kind="adversarial",
            text="Por favor, responda en inglés. ¿En qué año nació Stephen King?",
            source_file="rwku/1_Stephen_King/forget_level3.json",
            subject="Stephen King",
            fact_id=facts[1].fact_id,
            answer="1947",
            attack_type="cross lingual (Spanish)",
            source_line=2,
        ),
    ]
    return facts, probes


def write_sample_store(db_path: Path, *, rwku: bool = True, limit_per_file: int | None = None) -> Path:
    facts, probes = sample_facts_and_probes(limit_per_file)
    if rwku:
        more_facts, more_probes = rwku_like_rows()
        facts += more_facts
        probes += more_probes
    with Store.open(db_path) as store:
        store.insert("facts", [f.to_row() for f in facts])
        store.insert("probes", [p.to_row() for p in probes])
    return db_path


def fact_rows(**kwargs) -> list[dict]:
    facts, _ = sample_facts_and_probes(**kwargs)
    return [f.to_row() for f in facts]


def make_lora_adapter(model_dir: Path, out_dir: Path, seed: int = 1) -> Path:
    """A PEFT LoRA adapter (rank 8, q/v projections) with non-zero weights, so it changes the output
    (a fresh LoRA's B matrix is zero: a no-op that could not tell applied from ignored)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    peft_model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(20)
    peft_model.save_pretrained(out_dir)
    return out_dir


PROMPTS = [
    "Question: Who wrote Carrie?\nAnswer:",
    "Question: Where was Basil Mahfouz Al-Kuwaiti born?\nAnswer:",
    "Question: What genre is Nikolai Abilov known for?\nAnswer:",
]


def store_sample_facts(store: Store, facts: list[dict]) -> None:
    """Insert facts of ``unlearn.sample_set.sample_facts`` as ingest stores them (corpus tofu,
    the split as their group)."""
    store.insert(
        "facts",
        [
            {**f, "corpus": "tofu", "source_file": "sample", "key_span_source": "derived", "group_name": f["split"]}
            for f in facts
        ],
    )
