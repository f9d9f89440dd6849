"""LLMEraser against retraining: the corrected adapter vs the adapter retrained on the edited training
set (the gold) vs the uncorrected one, on the embedded default (the TOFU sample, tiny Llama) or a given
base model. Three edits of D (``--mode``): remove the first N forget facts (instance removal), give
them new answers (response correction: TOFU's first perturbed answer, the "outdated fact" case), or
ask them by new questions (query modification: TOFU's paraphrased question).

    python bench/llmeraser.py                                   # tiny Llama, remove the 40 forget facts
    python bench/llmeraser.py --edited 4 --damping 0.1,0.01     # fewer facts, two dampings
    python bench/llmeraser.py --solver adam --iterations 20 --lr 1e-5 --damping 1e-5   # the reference settings
    python bench/llmeraser.py --base-model smollm2-135m-instruct --per-split 10 --teach-steps 60 \
        --teach-batch-size 8 --edited 5 --mode correct --damping 0.01 --iterations 10 --json out.json

Steps: teach the facts into a LoRA adapter (``teach.adapter``; cached under --workdir), retrain it
from scratch on the edited D (same seed and settings; timed: the cost LLMEraser replaces), then one
LLMEraser edit per solver setting (timed). Per model (taught, each corrected one, the gold),
measured against the gold:

- parameter distance ||theta - theta_gold|| of the adapter (LoRA A, B and, on the tiny model, the
  saved output head), and the cosine between the update and theta_gold - theta_taught;
- output KL(gold || model) of the next-token distributions, averaged over the answer tokens of the
  edited facts as they become (removed: as they were) and of the kept ones;
- key-span recall (greedy answers) of the edited facts as they were, as they become (correct:
  the new answer's span; modify: the answer asked by the new question), and of the kept ones;
- wall time (LLMEraser: the whole `unlearn` run; retraining: `retrain_adapter`).

Prints a Markdown table; --json writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for key, value in {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(key, value)


def adapter_vector(folder: Path) -> Any:
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "adapter" / "adapter_model.safetensors"))
    return torch.cat([tensors[k].flatten().float() for k in sorted(tensors)])


def load(folder: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    return model, AutoTokenizer.from_pretrained(str(folder))


def answer_distributions(model: Any, tokenizer: Any, facts: list[dict[str, Any]], max_length: int) -> list[Any]:
    """Log-probabilities [answer tokens, vocabulary] of each fact, teacher-forced on its answer."""
    import torch

    from lune.unlearn.examples import collate, encode, pad_id_of

    out = []
    pad = pad_id_of(tokenizer)
    with torch.no_grad():
        for fact in facts:
            example = encode(tokenizer, fact["question"], fact["answer"], max_length=max_length)
            batch = collate([example], pad)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[0, :-1]
            scored = batch["labels"][0, 1:] != -100
            out.append(torch.log_softmax(logits[scored].float(), -1))
    return out


def mean_kl(gold: list[Any], other: list[Any]) -> float:
    """KL(gold || other) per answer token, averaged over every token of the facts."""
    total = sum(float((g.exp() * (g - o)).sum()) for g, o in zip(gold, other))
    count = sum(int(g.shape[0]) for g in gold)
    return round(total / max(count, 1), 4)


def main() -> int:
    from bench._tables import markdown_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/bench-llmeraser", help="teach cache and outputs")
    parser.add_argument("--base-model", help="base model to teach (default: the tiny Llama)")
    parser.add_argument("--teach-steps", type=int, help="teach.min_steps (default: the config's, 300)")
    parser.add_argument("--mode", default="remove", choices=["remove", "correct", "modify"], help="the edit of D")
    parser.add_argument(
        "--edited", "--removed", dest="edited", type=int, default=40, help="forget facts edited (the first N)"
    )
    parser.add_argument(
        "--per-split", type=int, help="teach only the first N facts of each split (default: the whole sample)"
    )
    parser.add_argument("--teach-batch-size", type=int, help="teach.batch_size (default: the config's, 16)")
    parser.add_argument("--solver", default="cg", choices=["cg", "adam"])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-5, help="Adam's learning rate (solver adam)")
    parser.add_argument("--damping", default="0.1,0.01", help="comma-separated dampings, one run each")
    parser.add_argument("--batch-size", type=int, default=8, help="facts per Hessian-vector product")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    import torch

    from lune.data.key_span import key_span_for
    from lune.unlearn.config import TeachAdapter, TeachConfig, UnlearnConfig
    from lune.unlearn.inputs import UnlearnData
    from lune.unlearn.run import unlearn
    from lune.unlearn.sample_set import perturbed_rows, sample_facts
    from lune.unlearn.teach import recall_by_split, teach
    from lune.unlearn.teach_adapter import retrain_adapter

    torch.set_flush_denormal(True)
    if "OMP_NUM_THREADS" not in os.environ and hasattr(os, "sched_getaffinity"):
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    work = Path(args.workdir)
    settings: dict[str, Any] = {"adapter": TeachAdapter(enabled=True), "retain_model": False}
    if args.base_model:
        settings.update(base_model=args.base_model, adapter=TeachAdapter(enabled=True, modules_to_save=[]))
        settings["splits"] = ["forget", "retain"]  # a pretrained model's utility facts are what it knows
    if args.teach_steps:
        settings["min_steps"] = args.teach_steps
    if args.teach_batch_size:
        settings["batch_size"] = args.teach_batch_size
    teach_config = TeachConfig(**settings)
    limits = {s: args.per_split for s in ("forget", "retain", "utility")} if args.per_split else None
    facts = sample_facts(limits)
    started = time.perf_counter()
    taught = teach(facts, work, teach_config, progress=True)
    teach_s = time.perf_counter() - started
    edited = [f for f in facts if f["split"] == "forget"][: args.edited]
    edited_ids = {f["fact_id"] for f in edited}
    kept = [f for f in facts if f["fact_id"] not in edited_ids and f["split"] in ("forget", "retain", "utility")]
    # What each edited fact becomes (remove: itself, the probe of what should be gone)
    perturbed = {row["question"]: row for row in perturbed_rows()}
    corrections, replaced, after = [], {}, []
    for fact in edited:
        if args.mode == "remove":
            after.append(fact)
            continue
        row = perturbed[fact["question"]]
        if args.mode == "correct":
            new = row["perturbed_answer"][0]
            change = {"answer": new, "key_span": key_span_for(fact["question"], new)[0]}
            corrections.append({"fact_id": fact["fact_id"], "answer": new})
            replaced[fact["fact_id"]] = {"answer": new}
        else:
            change = {"question": row["paraphrased_question"]}
            corrections.append({"fact_id": fact["fact_id"], "new_question": row["paraphrased_question"]})
            replaced[fact["fact_id"]] = {"question": row["paraphrased_question"]}
        after.append({**fact, **change})
    corrections_file = work / f"corrections-{args.mode}-{args.edited}.jsonl"
    if corrections:
        corrections_file.write_text("".join(json.dumps(r) + "\n" for r in corrections), encoding="utf-8")
    gold_dir = work / (f"gold-{args.edited}" if args.mode == "remove" else f"gold-{args.mode}-{args.edited}")
    started = time.perf_counter()
    if not (gold_dir / "adapter").exists():
        removed = sorted(edited_ids) if args.mode == "remove" else []
        retrain_adapter(taught.model_dir, gold_dir, removed=removed, replaced=replaced, progress=True)
    retrain_s = time.perf_counter() - started

    models: dict[str, tuple[Path, float | None]] = {"taught": (taught.model_dir, None)}
    for damping in [float(d) for d in args.damping.split(",")]:
        options = {
            "solver": args.solver,
            "iterations": args.iterations,
            "lr": args.lr,
            "damping": damping,
            "batch_size": args.batch_size,
            "mode": args.mode,
            "corrections": str(corrections_file) if corrections else None,
        }
        label = "" if args.mode == "remove" else f"{args.mode}-"
        out = work / f"llmeraser-{label}{args.edited}-{args.solver}-{damping:g}"
        started = time.perf_counter()
        unlearn(
            taught.model_dir,
            UnlearnData(train=[], forget=edited),
            out,
            UnlearnConfig(method="llmeraser", method_options=options),
            progress=True,
        )
        models[f"llmeraser {args.solver} damping {damping:g}"] = (out, time.perf_counter() - started)
    models["retrained (gold)"] = (gold_dir, retrain_s)

    theta, gold = adapter_vector(taught.model_dir), adapter_vector(gold_dir)
    gold_model, tokenizer = load(gold_dir)
    probes = {"edited": after, "kept": kept[:80]}
    gold_dists = {k: answer_distributions(gold_model, tokenizer, v, 256) for k, v in probes.items()}
    rows = []
    for label, (folder, seconds) in models.items():
        vector = adapter_vector(folder)
        model, tok = load(folder)
        dists = {k: answer_distributions(model, tok, v, 256) for k, v in probes.items()}
        update = vector - theta
        rows.append(
            {
                "model": label,
                "param_distance_to_gold": round(float((vector - gold).norm()), 4),
                "cosine_update_vs_gold": round(
                    float(torch.nn.functional.cosine_similarity(update, gold - theta, dim=0)), 4
                )
                if float(update.norm()) > 0
                else None,
                "kl_edited": mean_kl(gold_dists["edited"], dists["edited"]),
                "kl_kept": mean_kl(gold_dists["kept"], dists["kept"]),
                "recall_edited_as_were": recall_by_split(model, tok, edited)["recall"],
                **(
                    {"recall_edited_as_become": recall_by_split(model, tok, after)["recall"]}
                    if args.mode != "remove"
                    else {}
                ),
                "recall_kept": recall_by_split(model, tok, probes["kept"])["recall"],
                "wall_s": round(seconds, 1) if seconds is not None else None,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nteach (cached or not): {teach_s:.1f} s; retraining: {retrain_s:.1f} s")
    taught_count = sum(f["split"] in teach_config.splits for f in facts)
    print(f"{args.mode}: {len(edited)} of the {taught_count} facts of D\n")
    print(markdown_table(rows))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": rows, "teach_s": teach_s, "retrain_s": retrain_s, "args": vars(args)}, indent=2),
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
