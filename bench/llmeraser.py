"""LLMEraser against retraining: the corrected adapter vs the adapter retrained without the removed
facts (the gold) vs the uncorrected one, on the embedded default (the TOFU sample, tiny Llama) or a
given base model.

    python bench/llmeraser.py                                   # tiny Llama, remove the 40 forget facts
    python bench/llmeraser.py --removed 4 --damping 0.1,0.01    # fewer facts, two dampings
    python bench/llmeraser.py --solver adam --iterations 20 --lr 1e-5 --damping 1e-5   # the reference settings
    python bench/llmeraser.py --base-model smollm2-135m-instruct --teach-steps 200 --json out.json

Steps: teach the facts into a LoRA adapter (``teach.adapter``; cached under --workdir), retrain it
from scratch without the first --removed forget facts (same seed and settings; timed: the cost
LLMEraser replaces), then one LLMEraser removal per solver setting (timed). Per model (taught,
each corrected one, the gold), measured against the gold:

- parameter distance ||theta - theta_gold|| of the adapter (LoRA A, B and the saved output head),
  and the cosine between the update and theta_gold - theta_taught;
- output KL(gold || model) of the next-token distributions, averaged over the answer tokens of the
  removed facts and of the kept ones;
- key-span recall (greedy answers) on the removed facts and on the kept ones;
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
    parser.add_argument("--removed", type=int, default=40, help="forget facts removed (the first N)")
    parser.add_argument("--solver", default="cg", choices=["cg", "adam"])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-5, help="Adam's learning rate (solver adam)")
    parser.add_argument("--damping", default="0.1,0.01", help="comma-separated dampings, one run each")
    parser.add_argument("--batch-size", type=int, default=8, help="facts per Hessian-vector product")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    import torch

    from lune.unlearn.config import TeachAdapter, TeachConfig, UnlearnConfig
    from lune.unlearn.inputs import UnlearnData
    from lune.unlearn.run import unlearn
    from lune.unlearn.sample_set import sample_facts
    from lune.unlearn.teach import recall_by_split, teach
    from lune.unlearn.teach_adapter import retrain_adapter

    torch.set_flush_denormal(True)
    if "OMP_NUM_THREADS" not in os.environ and hasattr(os, "sched_getaffinity"):
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    work = Path(args.workdir)
    settings: dict[str, Any] = {"adapter": TeachAdapter(enabled=True), "retain_model": False}
    if args.base_model:
        settings.update(base_model=args.base_model, adapter=TeachAdapter(enabled=True, modules_to_save=[]))
    if args.teach_steps:
        settings["min_steps"] = args.teach_steps
    teach_config = TeachConfig(**settings)
    facts = sample_facts()
    started = time.perf_counter()
    taught = teach(facts, work, teach_config, progress=True)
    teach_s = time.perf_counter() - started
    removed = [f for f in facts if f["split"] == "forget"][: args.removed]
    removed_ids = {f["fact_id"] for f in removed}
    kept = [f for f in facts if f["fact_id"] not in removed_ids and f["split"] in ("forget", "retain", "utility")]
    gold_dir = work / f"gold-{args.removed}"
    started = time.perf_counter()
    if not (gold_dir / "adapter").exists():
        retrain_adapter(taught.model_dir, gold_dir, removed=sorted(removed_ids), progress=True)
    retrain_s = time.perf_counter() - started

    models: dict[str, tuple[Path, float | None]] = {"taught": (taught.model_dir, None)}
    for damping in [float(d) for d in args.damping.split(",")]:
        options = {
            "solver": args.solver,
            "iterations": args.iterations,
            "lr": args.lr,
            "damping": damping,
            "batch_size": args.batch_size,
        }
        out = work / f"llmeraser-{args.removed}-{args.solver}-{damping:g}"
        started = time.perf_counter()
        unlearn(
            taught.model_dir,
            UnlearnData(train=[], forget=removed),
            out,
            UnlearnConfig(method="llmeraser", method_options=options),
            progress=True,
        )
        models[f"llmeraser {args.solver} damping {damping:g}"] = (out, time.perf_counter() - started)
    models["retrained (gold)"] = (gold_dir, retrain_s)

    theta, gold = adapter_vector(taught.model_dir), adapter_vector(gold_dir)
    gold_model, tokenizer = load(gold_dir)
    probes = {"removed": removed, "kept": kept[:80]}
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
                "kl_removed": mean_kl(gold_dists["removed"], dists["removed"]),
                "kl_kept": mean_kl(gold_dists["kept"], dists["kept"]),
                "recall_removed": recall_by_split(model, tok, removed)["recall"],
                "recall_kept": recall_by_split(model, tok, probes["kept"])["recall"],
                "wall_s": round(seconds, 1) if seconds is not None else None,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nteach (cached or not): {teach_s:.1f} s; retraining: {retrain_s:.1f} s; removed {len(removed)} facts\n")
    print(markdown_table(rows))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": rows, "teach_s": teach_s, "retrain_s": retrain_s, "args": vars(args)}, indent=2),
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
