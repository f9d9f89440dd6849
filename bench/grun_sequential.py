"""GRUN on sequential requests: forget requests one after another, each training on from the previous
request's interventions (``method_options.start_from``), against one request with every fact at once.

    python bench/grun_sequential.py                                  # embedded default, 3 requests, loss lune
    python bench/grun_sequential.py --forget-loss idk --steps 150 --json out.json

Steps: teach the embedded default (the shipped TOFU sample, the tiny model; cached under --workdir,
no retain model), take the sample's curated set (TOFU's own perturbed answers as negatives,
``unlearn.sample_set``) and split its 40 forget facts into --requests groups, in order. Schedules:

- ``new only``: request k (k >= 2) trains on group k alone, starting from request k-1's edits (the gate is
  never shown the earlier groups again: does it stay open on them?);
- ``cumulative``: request k (k >= 2) trains on groups 1..k, starting from request k-1's edits;
- ``all at once``: one run on every group (the reference).

Request 1 (group 1, fresh edits) is the same in both schedules and runs once.

After each request: greedy key-span recall on each group and on the retain facts, and the mean gate
on each group's and the retain facts' questions. Prints a Markdown table; --json writes the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for key, value in {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(key, value)


def mean_gate(model: Any, tokenizer: Any, questions: list[str]) -> float:
    """Mean over questions and edited layers of the gate at each question's last prompt token."""
    import torch

    from lune.core.greedy import left_padded
    from lune.core.interventions import attached
    from lune.core.tokens import question_ids

    handle = attached(model)
    input_ids, mask = left_padded([question_ids(tokenizer, q) for q in questions], tokenizer.pad_token_id or 0)
    with torch.no_grad():
        model(input_ids=input_ids, attention_mask=mask)
    return round(float(torch.stack(handle.gates).float().mean()), 3)


def measure(folder: Path, base: Path, groups: list[list[dict[str, Any]]], retain: list[dict[str, Any]]) -> dict:
    """Recall and mean gate per group and on retain facts, for the base model with ``folder``'s edits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lune.core.interventions import attach
    from lune.unlearn.teach import recall_by_split

    model = AutoModelForCausalLM.from_pretrained(str(base)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    attach(model, folder, tokenizer=tokenizer)
    out: dict[str, Any] = {}
    for name, facts in [*((f"group {i + 1}", g) for i, g in enumerate(groups)), ("retain", retain)]:
        out[f"recall {name}"] = recall_by_split(model, tokenizer, facts)["recall"]
        out[f"gate {name}"] = mean_gate(model, tokenizer, [f["question"] for f in facts])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/bench-grun-sequential", help="teach cache and outputs")
    parser.add_argument("--requests", type=int, default=3, help="forget requests (groups of the 40 forget facts)")
    parser.add_argument("--forget-loss", default="lune", choices=["grad_diff", "npo", "idk", "lune"])
    parser.add_argument("--steps", type=int, default=150, help="unlearn.max_steps of each request")
    parser.add_argument("--retain", type=int, default=40, help="retain facts measured (the first N)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()

    from lune.core.threads import torch_threads

    with torch_threads():  # sized to this machine's free cores, as the stages size themselves
        return run(args)


def run(args: argparse.Namespace) -> int:
    from bench._tables import markdown_table
    from lune.unlearn.config import TeachConfig, UnlearnConfig
    from lune.unlearn.inputs import build_data
    from lune.unlearn.run import unlearn
    from lune.unlearn.sample_set import curated_set, retain_of, sample_facts
    from lune.unlearn.teach import teach

    work = Path(args.workdir)
    facts = sample_facts()
    taught = teach(facts, work, TeachConfig(retain_model=False), progress=True).model_dir
    forget = [f for f in facts if f["split"] == "forget"]
    size = -(-len(forget) // args.requests)
    groups = [forget[i : i + size] for i in range(0, len(forget), size)]
    retain = [f for f in facts if f["split"] == "retain"][: args.retain]

    def request(label: str, trained_on: list[dict[str, Any]], start_from: Path | None) -> tuple[Path, dict]:
        options: dict[str, Any] = {"forget_loss": args.forget_loss}
        if start_from is not None:
            options["start_from"] = str(start_from)
        out = work / re.sub(r"[^a-z0-9]+", "-", label).strip("-")
        data = build_data(curated_set(trained_on, refusals=args.forget_loss == "idk"), retain_of(facts))
        started = time.perf_counter()
        unlearn(taught, data, out, UnlearnConfig(method="grun", method_options=options, max_steps=args.steps))
        row = {
            "schedule": label,
            "facts trained on": len(data.forget),
            "wall s": round(time.perf_counter() - started, 1),
        }
        row.update(measure(out, taught, groups, retain))
        print(json.dumps(row), flush=True)
        return out, row

    rows = []
    first, row = request("request 1 (both schedules)", groups[0], None)  # the schedules differ from request 2 on
    rows.append(row)
    for schedule in ("new only", "cumulative"):
        previous = first
        for k in range(1, len(groups)):
            trained_on = groups[k] if schedule == "new only" else [f for g in groups[: k + 1] for f in g]
            previous, row = request(f"{schedule} request {k + 1}", trained_on, previous)
            rows.append(row)
    rows.append(request("all at once", forget, None)[1])

    print(markdown_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
