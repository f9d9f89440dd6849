"""Score-stage speed: the embedding stage against bare SentenceTransformer.encode, and curation SQL.

    python bench/score.py [--n 100000] [--candidates 1000000] [--skip-embedding] [--skip-curation] [--labelled]

1. Embedding: ``--n`` candidate texts (TOFU answers made distinct) of ``--n / 5`` facts, scored by the
   ``similarity`` scorer on a fresh store (hash, cache look-up, batch encode, cache write, cosine,
   score write), against bare ``SentenceTransformer.encode`` of the same distinct texts (candidates
   and answers) with the same batch size. The two run in alternating blocks so that both see the same
   load on a shared machine; wall and CPU seconds are reported. Target: overhead at most 10 %.
2. Curation: ``--candidates`` synthetic scored candidates (8 negatives, 1 refusal, 1 paraphrase per
   fact; 6 scores each; random cached embeddings for the paraphrases), then the policy's verdict SQL
   (``decide_verdicts``) and the whole ``curate`` (verdicts, train / eval split, save). Target: the
   SQL at most 5 s for 1,000,000 candidates.
3. ``--labelled``: the TOFU forget10 labelled check (precision / recall of the keep verdict).

Prints one line per measurement and a JSON summary (``--json PATH`` writes it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from lune.data.ids import content_id  # noqa: E402
from lune.data.records import Fact  # noqa: E402
from lune.data.store import Store  # noqa: E402

TOFU = REPO / "data" / "benchmarks" / "tofu"


def load_answers() -> list[tuple[str, str]]:
    pairs = []
    for line in (TOFU / "full.json").read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            pairs.append((row["question"], row["answer"]))
    return pairs


def synthetic_candidates(n: int, per_fact: int = 5) -> tuple[list[dict], list[dict]]:
    """(fact rows, candidate rows): n distinct negatives, ``per_fact`` per fact, from TOFU's answers."""
    pairs = load_answers()
    rng = random.Random(0)
    facts, candidates = [], []
    for f in range((n + per_fact - 1) // per_fact):
        q, a = pairs[f % len(pairs)]
        fact = Fact(
            corpus="bench",
            source_file="bench",
            question=f"{q} (case {f})",
            answer=f"{a} (case {f})",
            key_span=a.split()[-1].strip("."),
            key_span_source="derived",
            split="forget",
        )
        facts.append(fact.to_row())
        for k in range(per_fact):
            if len(candidates) == n:
                break
            _, other = pairs[rng.randrange(len(pairs))]
            text = f"{other.rstrip('.')}, as stated in record {f}-{k}."
            candidates.append(
                {
                    "candidate_id": content_id(fact.fact_id, "negative", text),
                    "fact_id": fact.fact_id,
                    "kind": "negative",
                    "text": text,
                    "generator": "bench",
                }
            )
    return facts, candidates


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def bench_embedding(n: int, batch_size: int, blocks: int) -> dict:
    from lune.generators.config import ScoreConfig
    from lune.generators.scorers import ScoringContext, run
    from lune.generators.scorers.similarity import Similarity

    facts, candidates = synthetic_candidates(n)
    fact_of = {f["fact_id"]: f for f in facts}
    tmp = Path(tempfile.mkdtemp(prefix="lune-bench-score-"))
    config = ScoreConfig(batch_size=batch_size)
    bare = {"wall": 0.0, "cpu": 0.0, "texts": 0}
    scorer = {"wall": 0.0, "cpu": 0.0, "texts": 0, "rows": 0}
    with Store(tmp / "bench.duckdb") as store:
        context = ScoringContext(store, config)
        model = context.embedder.load()
        model.encode(["warm up"] * batch_size, batch_size=batch_size)
        per_block = (len(facts) + blocks - 1) // blocks
        for b in range(blocks):
            block_facts = facts[b * per_block : (b + 1) * per_block]
            ids = {f["fact_id"] for f in block_facts}
            block_cands = [c for c in candidates if c["fact_id"] in ids]
            texts = list(dict.fromkeys([c["text"] for c in block_cands] + [f["answer"] for f in block_facts]))
            # Bare encode of exactly the texts the scorer will embed.
            w0, c0 = time.perf_counter(), cpu()
            model.encode(
                texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
            bare["wall"] += time.perf_counter() - w0
            bare["cpu"] += cpu() - c0
            bare["texts"] += len(texts)
            store.insert("facts", block_facts)
            store.insert("candidates", block_cands)
            w0, c0 = time.perf_counter(), cpu()
            scorer["rows"] += run(Similarity(context))
            scorer["wall"] += time.perf_counter() - w0
            scorer["cpu"] += cpu() - c0
            scorer["texts"] += len(texts)
            print(
                f"  block {b + 1}/{blocks}: {len(texts)} texts, bare {bare['wall']:.1f} s, "
                f"scorer {scorer['wall']:.1f} s so far",
                flush=True,
            )
        cached = store.scalar("SELECT count(*) FROM embeddings")
    assert scorer["rows"] == n and cached == bare["texts"], (scorer, cached)
    del fact_of
    return {
        "n_candidates": n,
        "distinct_texts": bare["texts"],
        "batch_size": batch_size,
        "blocks": blocks,
        "bare_wall_s": round(bare["wall"], 2),
        "bare_cpu_s": round(bare["cpu"], 2),
        "scorer_wall_s": round(scorer["wall"], 2),
        "scorer_cpu_s": round(scorer["cpu"], 2),
        "bare_texts_per_s": round(bare["texts"] / bare["wall"], 1),
        "scorer_texts_per_s": round(scorer["texts"] / scorer["wall"], 1),
        "overhead_wall_pct": round((scorer["wall"] / bare["wall"] - 1) * 100, 1),
        "overhead_cpu_pct": round((scorer["cpu"] / bare["cpu"] - 1) * 100, 1),
    }


def bench_curation(n: int, dim: int = 32) -> dict:
    import pyarrow as pa

    from lune.data.curation_queries import decide_verdicts
    from lune.data.ids import text_hash
    from lune.data.scoring_queries import store_vectors
    from lune.generators.config import CurateConfig, ScoreConfig
    from lune.generators.curation import curate

    per_fact = 10
    n_facts = n // per_fact
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="lune-bench-curate-"))
    model = "bench-random"
    started = time.perf_counter()
    with Store(tmp / "bench.duckdb") as store:
        fact_ids = [content_id("bench-fact", i) for i in range(n_facts)]
        store.insert(
            "facts",
            pa.table(
                {
                    "fact_id": fact_ids,
                    "corpus": ["bench"] * n_facts,
                    "source_file": ["bench"] * n_facts,
                    "question": [f"What is fact {i}?" for i in range(n_facts)],
                    "answer": [f"Fact {i} is true." for i in range(n_facts)],
                    "key_span": ["true"] * n_facts,
                    "key_span_source": ["derived"] * n_facts,
                    "split": ["forget"] * n_facts,
                }
            ),
        )
        kinds = ["negative"] * 8 + ["refusal", "paraphrase"]
        cand_ids = [content_id("bench-cand", i) for i in range(n)]
        cand_fact = [fact_ids[i // per_fact] for i in range(n)]
        cand_kind = [kinds[i % per_fact] for i in range(n)]
        texts = [f"Candidate {i} of fact {i // per_fact}." for i in range(n)]
        store.insert(
            "candidates",
            pa.table(
                {
                    "candidate_id": cand_ids,
                    "fact_id": cand_fact,
                    "kind": cand_kind,
                    "text": texts,
                    "generator": ["bench"] * n,
                }
            ),
        )
        scorers = ["similarity", "answer_leak", "fluency", "duplicate", "quality", "contradiction"]
        values = {
            "similarity": rng.uniform(0.1, 1.0, n),
            "answer_leak": (rng.random(n) < 0.1).astype(float),
            "fluency": rng.uniform(0.3, 1.0, n),
            "duplicate": (rng.random(n) < 0.05).astype(float),
            "quality": rng.random(n),
            "contradiction": rng.random(n),
        }
        for name in scorers:
            store.insert(
                "scores",
                pa.table(
                    {"candidate_id": cand_ids, "scorer": [name] * n, "scorer_version": ["1"] * n, "value": values[name]}
                ),
            )
        # Random unit vectors for the paraphrases and questions (the split reads them from the cache).
        para = [i for i in range(n) if cand_kind[i] == "paraphrase"]
        vec_texts = [texts[i] for i in para] + [f"What is fact {i}?" for i in range(n_facts)]
        vectors = rng.standard_normal((len(vec_texts), dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store_vectors(store, model, [text_hash(t) for t in vec_texts], vectors)
        setup = time.perf_counter() - started
        print(f"  setup: {n} candidates, {n * len(scorers)} scores in {setup:.1f} s", flush=True)

        config = CurateConfig(name="bench")
        policies = {
            kind: getattr(config, kind).model_dump() for kind in ("negative", "refusal", "paraphrase", "attack")
        }
        w0, c0 = time.perf_counter(), cpu()
        decide_verdicts(store, "bench-sql", policies, config.splits)
        sql_wall, sql_cpu = time.perf_counter() - w0, cpu() - c0
        verdicts = store.scalar("SELECT count(*) FROM candidate_verdicts WHERE set_id = 'bench-sql'")
        print(f"  verdict SQL: {verdicts} verdicts in {sql_wall:.2f} s", flush=True)
        w0, c0 = time.perf_counter(), cpu()
        result = curate(store, config, ScoreConfig(embedding_model=model))
        full_wall, full_cpu = time.perf_counter() - w0, cpu() - c0
        print(f"  curate (SQL + split + save): {full_wall:.2f} s, kept {result.counts['kept']}", flush=True)
    return {
        "candidates": n,
        "facts": n_facts,
        "scores": n * len(scorers),
        "verdict_sql_s": round(sql_wall, 2),
        "verdict_sql_cpu_s": round(sql_cpu, 2),
        "curate_total_s": round(full_wall, 2),
        "curate_total_cpu_s": round(full_cpu, 2),
        "kept": result.counts["kept"],
        "dropped": result.counts["dropped"],
    }


def bench_labelled() -> dict:
    from lune.generators.scorers.labelled_check import run_check

    tmp = Path(tempfile.mkdtemp(prefix="lune-bench-labelled-"))
    w0 = time.perf_counter()
    with Store(tmp / "check.duckdb") as store:
        result = run_check(store, TOFU / "forget10_perturbed.json")
    result["seconds"] = round(time.perf_counter() - w0, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="candidate texts for the embedding comparison")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=10, help="alternating bare / scorer blocks")
    parser.add_argument("--candidates", type=int, default=1_000_000, help="scored candidates for the curation SQL")
    parser.add_argument("--skip-embedding", action="store_true")
    parser.add_argument("--skip-curation", action="store_true")
    parser.add_argument("--labelled", action="store_true", help="also run the TOFU forget10 labelled check")
    parser.add_argument("--json", help="write the summary to this file")
    args = parser.parse_args()

    import torch

    summary: dict = {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }
    if not args.skip_embedding:
        print(f"embedding: {args.n} candidates", flush=True)
        summary["embedding"] = emb = bench_embedding(args.n, args.batch_size, args.blocks)
        print(
            f"embedding: bare {emb['bare_texts_per_s']} texts/s, scorer {emb['scorer_texts_per_s']} texts/s, "
            f"overhead {emb['overhead_wall_pct']} % wall, {emb['overhead_cpu_pct']} % CPU",
            flush=True,
        )
    if not args.skip_curation:
        print(f"curation: {args.candidates} candidates", flush=True)
        summary["curation"] = bench_curation(args.candidates)
    if args.labelled:
        print("labelled check: TOFU forget10_perturbed", flush=True)
        summary["labelled"] = lab = bench_labelled()
        print(f"labelled: precision {lab['precision']:.3f}, recall {lab['recall']:.3f} (n={lab['n']})", flush=True)
    summary["load_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
