"""Negatives written by SmolLM2-135M-Instruct against the rules backend, on the same TOFU facts.

    python bench/negatives_smollm2.py [--facts 40] [--n 4] [--backends rules,vllm,transformers]
        [--judge vllm|transformers|none] [--judge-facts 40] [--layout auto] [--json PATH]

For each backend, on a fresh store holding the TOFU sample (``data/sample/tofu``, forget01: 40 facts;
the first ``--facts`` of them): generate ``--n`` negatives and ``--n`` paraphrases per fact (no dataset
candidates), score them (similarity, answer_leak, contradiction by the LLM judge, fluency, quality,
duplicate) and apply the default curation policy. Reported per backend:

- model load seconds, generation seconds, candidates/s (generation only, the model loaded);
- yield per kind: kept / generated (after scoring and curation; rejections are not candidates);
- the quality-score distribution per kind (mean, p10, p50, p90);
- a few kept and dropped negatives, to read.

Then the judge alone (``--judge``, SmolLM2 through that backend, its ``auto`` layout) on TOFU's own
labelled pairs of the first ``--judge-facts`` facts: each perturbed answer is a contradiction, the
paraphrased answer is not; agreement, precision / recall of "contradicts", and the verdict counts.

The vLLM judge shares the vLLM generator's engine (one engine start). Prints one line per measurement
and a JSON summary (``--json PATH`` writes it). Run with ``source scripts/env.sh`` (vLLM's CPU
settings); leave ``OMP_NUM_THREADS`` unset for vLLM (it binds its own threads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

SAMPLE = REPO / "data" / "sample" / "tofu"
MODEL = "smollm2-135m-instruct"
SCORERS = ["similarity", "answer_leak", "contradiction", "fluency", "quality", "duplicate"]


def log(message: str) -> None:
    print(message, flush=True)


def sample_store(folder: Path) -> Any:
    """A store at ``folder/bench.duckdb`` with the TOFU sample ingested (forget01 as the forget split)."""
    from lune.data.ingest import ingest
    from lune.data.store import Store

    store = Store.open(folder / "bench.duckdb")
    ingest(store, {"format": "tofu", "path": str(SAMPLE), "forget": "forget01"})
    return store


def forget_facts(store: Any, limit: int) -> list[dict[str, Any]]:
    from lune.data import generation_queries as queries

    facts = queries.select_facts(store, split="forget", where=None)
    return sorted(facts, key=lambda f: f["question"])[:limit]


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"count": 0, "mean": None, "p10": None, "p50": None, "p90": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {
        "count": len(values),
        "mean": round(statistics.fmean(values), 3),
        "p10": at(0.1),
        "p50": at(0.5),
        "p90": at(0.9),
    }


def bench_backend(name: str, args: argparse.Namespace, judge: Any, judge_name: str | None) -> dict[str, Any]:
    """Generate, score and curate with backend ``name`` on a fresh store; ``judge`` scores contradiction."""
    from lune.data import generation_queries as queries
    from lune.generators.config import CurateConfig, GenerateConfig, JudgeConfig, ScoreConfig
    from lune.generators.curation import decide
    from lune.generators.generate import backend_spec, cached_backend, run_backend
    from lune.generators.rules.spans import SpanBank
    from lune.generators.scorers.base import ScoringContext
    from lune.generators.scorers.runner import run_scorer

    with tempfile.TemporaryDirectory() as tmp:
        store = sample_store(Path(tmp))
        facts = forget_facts(store, args.facts)
        settings = GenerateConfig(
            backend=name,
            model=None if name == "rules" else MODEL,
            kinds=["negative", "paraphrase"],
            n=args.n,
            include_dataset=False,
            prompt_layout=args.layout,
            max_tokens=64,
        )
        bank = SpanBank.from_facts(queries.corpus_facts(store, {"tofu"})) if name == "rules" else None
        started = time.perf_counter()
        backend, _ = cached_backend(backend_spec(settings, bank=bank))
        load_s = time.perf_counter() - started
        out = run_backend(facts, backend, settings, run_id="bench", batch_id=name)
        gen_s = out["stats"]["seconds"]
        candidates = out["candidates"]
        store.insert("candidates", candidates)
        if out["rejections"]:
            store.reject(out["rejections"])
        log(
            f"{name}: load {load_s:.1f} s, {len(facts)} facts -> {len(candidates)} candidates "
            f"({out['stats']['by_kind']}), {len(out['rejections'])} rejected outputs, {gen_s:.1f} s, "
            f"{len(candidates) / gen_s:.2f} candidates/s"
        )

        judge_config = JudgeConfig(backend=judge_name, model=MODEL) if judge is not None else None
        score_config = ScoreConfig(judge=judge_config)
        context = ScoringContext(store, score_config)
        score_s = time.perf_counter()
        for scorer in SCORERS:
            options = {"judge": judge} if scorer == "contradiction" and judge is not None else {}
            run_scorer(store, scorer, score_config, run_id="bench", context=context, **options)
        score_s = time.perf_counter() - score_s
        counts = decide(store, "bench", CurateConfig(), score_config)
        rows = store.query(
            "SELECT c.kind, c.text, s.value AS quality, v.keep, v.reason "
            "FROM candidates c LEFT JOIN scores s ON s.candidate_id = c.candidate_id AND s.scorer = 'quality' "
            "LEFT JOIN candidate_verdicts v ON v.candidate_id = c.candidate_id AND v.set_id = 'bench'"
        )
        store.close()
    by_kind: dict[str, Any] = {}
    for kind in ("negative", "paraphrase"):
        mine = [r for r in rows if r["kind"] == kind]
        kept = [r for r in mine if r["keep"]]
        reasons: dict[str, int] = {}
        for r in mine:
            if not r["keep"]:
                reasons[str(r["reason"])] = reasons.get(str(r["reason"]), 0) + 1
        by_kind[kind] = {
            "generated": len(mine),
            "kept": len(kept),
            "yield": round(len(kept) / len(mine), 3) if mine else None,
            "dropped": reasons,
            "quality": percentiles([r["quality"] for r in mine if r["quality"] is not None]),
            "kept_examples": [r["text"] for r in kept[:4]],
            "dropped_examples": [f"{r['text']} ({r['reason']})" for r in mine if not r["keep"]][:4],
        }
        log(f"{name} {kind}: kept {len(kept)}/{len(mine)}, quality {by_kind[kind]['quality']}, dropped {reasons}")
    return {
        "backend": name,
        "facts": len(facts),
        "load_s": round(load_s, 2),
        "generate_s": round(gen_s, 2),
        "candidates": len(candidates),
        "rejected_outputs": len(out["rejections"]),
        "candidates_per_s": round(len(candidates) / gen_s, 3),
        "score_s": round(score_s, 2),
        "by_kind": by_kind,
        "curation": {k: counts.get(k) for k in ("kept", "dropped")},
    }


def labelled_pairs(limit: int) -> list[dict[str, Any]]:
    """TOFU's labelled answers of the first ``limit`` forget01 facts: perturbed = 1, paraphrased = 0."""
    rows = [json.loads(line) for line in (SAMPLE / "forget01_perturbed.json").read_text().splitlines() if line.strip()]
    pairs = []
    for i, row in enumerate(sorted(rows, key=lambda r: r["question"])[:limit]):
        pairs.append(
            {
                "id": f"{i}-p",
                "question": row["question"],
                "answer": row["answer"],
                "text": row["paraphrased_answer"],
                "label": 0,
            }
        )
        for j, perturbed in enumerate(row["perturbed_answer"]):
            pairs.append(
                {"id": f"{i}-n{j}", "question": row["question"], "answer": row["answer"], "text": perturbed, "label": 1}
            )
    return pairs


def bench_judge(judge: Any, judge_name: str, limit: int) -> dict[str, Any]:
    """The judge on TOFU's labelled pairs: agreement with the labels, precision / recall of contradicts."""
    from lune.generators.config import JudgeConfig, ScoreConfig
    from lune.generators.scorers.base import ScoringContext
    from lune.generators.scorers.contradiction import Contradiction, judge_layout

    pairs = labelled_pairs(limit)
    config = ScoreConfig(judge=JudgeConfig(backend=judge_name, model=MODEL))
    scorer = Contradiction(ScoringContext(None, config), judge=judge)  # type: ignore[arg-type]
    started = time.perf_counter()
    scores = scorer.score([{"candidate_id": p["id"], **p} for p in pairs])
    seconds = time.perf_counter() - started
    verdicts: dict[str, int] = {}
    tp = fp = fn = tn = unread = 0
    for pair, score in zip(pairs, scores, strict=True):
        verdict = str(score.detail.get("verdict"))
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
        if score.value is None:
            unread += 1
            continue
        said = score.value >= 0.5
        tp += said and pair["label"] == 1
        fp += said and pair["label"] == 0
        fn += (not said) and pair["label"] == 1
        tn += (not said) and pair["label"] == 0
    read = tp + fp + fn + tn
    result = {
        "judge": judge_name,
        "layout": judge_layout(config.judge),  # type: ignore[arg-type]
        "pairs": len(pairs),
        "contradictions": sum(p["label"] for p in pairs),
        "read": read,
        "unread": unread,
        "agreement": round((tp + tn) / read, 3) if read else None,
        "precision": round(tp / (tp + fp), 3) if tp + fp else None,
        "recall": round(tp / (tp + fn), 3) if tp + fn else None,
        "balanced_accuracy": round(((tp / (tp + fn) if tp + fn else 0) + (tn / (tn + fp) if tn + fp else 0)) / 2, 3),
        "verdicts": verdicts,
        "seconds": round(seconds, 2),
    }
    log(f"judge ({judge_name}): {result}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--facts", type=int, default=40, help="forget01 facts (the sample has 40)")
    parser.add_argument("--n", type=int, default=4, help="candidates per fact and kind")
    parser.add_argument("--backends", default="rules,vllm,transformers")
    parser.add_argument("--judge", default="vllm", choices=["vllm", "transformers", "none"])
    parser.add_argument("--judge-facts", type=int, default=40, help="facts whose labelled answers the judge reads")
    parser.add_argument("--layout", default="auto", choices=["auto", "instruct", "few_shot"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from lune.generators.config import GenerateConfig
    from lune.generators.generate import backend_spec, cached_backend

    judge_name = None if args.judge == "none" else args.judge
    judge = None
    if judge_name is not None:
        # The judge is the generator of the same backend (cached_backend: one engine, one model load).
        started = time.perf_counter()
        judge = cached_backend(backend_spec(GenerateConfig(backend=judge_name, model=MODEL)))[0]
        log(f"judge {judge_name}: loaded in {time.perf_counter() - started:.1f} s")
    summary: dict[str, Any] = {"command": " ".join(["bench/negatives_smollm2.py", *(argv or sys.argv[1:])]), "runs": []}
    for name in args.backends.split(","):
        summary["runs"].append(bench_backend(name, args, judge, judge_name))
    if judge is not None:
        summary["judge"] = bench_judge(judge, judge_name, args.judge_facts)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
