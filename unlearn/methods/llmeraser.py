"""LLMEraser (Ding et al., ICLR 2025, arXiv 2412.00383): correct a LoRA adapter by an influence-function
estimate of retraining it on its edited training set, instead of training with a loss.

The model must be a taught folder with an adapter and its recorded training set D
(``teach.adapter.enabled``; ``unlearn/teach_adapter.py``). Three edits of D (``mode``):

- ``remove``: drop the curated set's forget facts (instance removal);
- ``correct``: give facts new answers (response correction, the "outdated fact" case), from
  ``corrections``: a file of rows ``question`` (or ``fact_id``) and ``answer`` (the new one);
- ``modify``: ask facts by new prompts (query modification), rows ``question`` (or ``fact_id``) and
  ``new_question``.

Then ``b = (sum_after grad l - sum_before grad l) / |D|`` at the adapter, ``x ~ (H + damping I)^-1 b``
(``unlearn/influence.py``; Adam on ``0.5 x'Hx - b'x`` with one mini-batch Hessian-vector product per
iteration, or conjugate gradients on full-batch products), and the adapter becomes ``theta - f x``, ``f``
the longest of 1, 1/2, ... that does not raise the edited D's training loss (``backtrack``).
Output: the corrected model merged (a whole model, as full_ft writes) and, in ``adapter/``, the
corrected adapter with its edited training set (so a second edit can follow).
"""

from __future__ import annotations

import csv
import json
import logging
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from lune.data.errors import LuneError
from lune.unlearn import influence
from lune.unlearn.examples import collate, encode
from lune.unlearn.measure import parameter_counts
from lune.unlearn.teach_adapter import (
    ADAPTER_DIR,
    FACTS_FILE,
    RECORD_KEY,
    adapter_record,
    edited_facts,
    load_teach_adapter,
    training_facts,
)
from lune.unlearn.trainer import MethodOptions, TrainOutcome, UnlearnTrainer

log = logging.getLogger(__name__)


class LlmEraserOptions(MethodOptions):
    """Settings of ``llmeraser`` (solver defaults: the reference code's)."""

    mode: Literal["remove", "correct", "modify"] = Field(
        "remove",
        description="remove: drop the forget facts from D; correct: new answers, modify: new questions "
        "(both from `corrections`)",
    )
    corrections: str | None = Field(
        None,
        description="file (.jsonl, .json or .csv) of rows `question` (or `fact_id`) with the new `answer` "
        "(correct) or `new_question` (modify)",
    )
    solver: Literal["adam", "cg"] = Field(
        "adam",
        description="adam: minimise 0.5 x'Hx - b'x, one mini-batch Hessian-vector product a step (the "
        "reference); cg: conjugate gradients on full-batch products",
    )
    iterations: int = Field(20, ge=1, description="solver iterations (Hessian-vector products)")
    lr: float = Field(1e-5, gt=0, description="Adam learning rate of the solver")
    init: float = Field(1e-5, description="Adam's starting x, every coordinate")
    damping: float = Field(1e-5, ge=0, description="lambda of (H + lambda I) x = b (Adam's weight decay)")
    batch_size: int = Field(1, ge=1, description="facts per Hessian-vector product (adam) / per chunk (cg)")
    scale: float = Field(1.0, gt=0, description="multiply the update by this (1: the influence estimate)")
    # Measured on SmolLM2 (BENCHMARKS.md, LLMEraser): correcting 5 of 20 answers at damping 0.01, the
    # conjugate-gradient step had norm 94 and every answer of D was lost (loss 0.04 -> 36). The step
    # length is therefore checked against the loss the retrained adapter minimises.
    backtrack: int = Field(
        10,
        ge=0,
        description="halve the update up to this many times while it raises the training loss of the edited D "
        "(what retraining minimises); the adapter stays as taught if every length does. 0: take the solved step",
    )
    retrain: bool = Field(
        False,
        description="also retrain the adapter from scratch on the edited D (the gold reference, same seed and "
        "settings; written to `retrained/`) and record the parameter distances to it",
    )


def read_corrections(path: str | Path) -> list[dict[str, str]]:
    """Rows of a corrections file: JSON lines, a JSON list, or CSV with a header."""
    file = Path(path)
    if not file.is_file():
        raise LuneError(f"llmeraser corrections {file}: no such file")
    text = file.read_text(encoding="utf-8")
    if file.suffix == ".csv":
        return [dict(r) for r in csv.DictReader(text.splitlines())]
    if file.suffix == ".json":
        rows = json.loads(text)
        if not isinstance(rows, list):
            raise LuneError(f"llmeraser corrections {file}: expected a JSON list of rows")
        return rows
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def plan_edit(
    facts: list[dict[str, Any]], mode: str, forget_ids: list[str], corrections: list[dict[str, str]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, dict[str, str]]]:
    """(before, after, replaced): the facts of D as they were and as they become, and the per-fact
    replacements (for :func:`edited_facts`). Raises a LuneError naming what matches nothing."""
    by_id = {f["fact_id"]: f for f in facts}
    if mode == "remove":
        before = [by_id[i] for i in forget_ids if i in by_id]
        if not before:
            raise LuneError(
                f"llmeraser: none of the {len(forget_ids)} forget fact(s) is in the adapter's training set "
                f"({len(facts)} facts); was the adapter taught on this corpus?"
            )
        return before, [], {}
    key = "answer" if mode == "correct" else "new_question"
    if not corrections:
        raise LuneError(f"llmeraser --mode {mode}: give --llmeraser-corrections FILE with rows question, {key}")
    by_question = {f["question"]: f for f in facts}
    before, after, replaced = [], [], {}
    for number, row in enumerate(corrections, start=1):
        fact = by_id.get(row.get("fact_id", "")) or by_question.get(row.get("question", ""))
        if fact is None or not row.get(key):
            raise LuneError(
                f"llmeraser corrections, row {number}: "
                + (f"no {key!r}" if fact else f"no fact of the training set has this fact_id / question: {row}")
            )
        change = {"answer": row[key]} if mode == "correct" else {"question": row[key]}
        before.append(fact)
        after.append({**fact, **change})
        replaced[fact["fact_id"]] = change
    return before, after, replaced


class LlmEraser(UnlearnTrainer):
    """Influence-function correction of a taught LoRA adapter (module docstring); no training loop."""

    name = "llmeraser"
    uses_lora = False  # it corrects the taught adapter and writes the merged model
    Options = LlmEraserOptions

    @classmethod
    def load(cls, model_path: Path, config: Any) -> tuple[Any, Any]:
        """The base with the taught adapter (eager attention: double backward); refuses without one.
        float32 unless ``unlearn.dtype`` says otherwise: second derivatives in bfloat16 are mostly noise."""
        import torch

        from lune.unlearn.run import resolve_device

        adapter_record(model_path)  # the refusal, before loading anything
        device, _ = resolve_device(config)
        dtype = getattr(torch, config.dtype) if config.dtype else torch.float32
        return load_teach_adapter(model_path, dtype=dtype, device=device)

    def __init__(self, model: Any, tokenizer: Any, data: Any, config: Any, *, progress: bool = True):
        import torch

        self.tokenizer, self.data, self.config, self.options = tokenizer, data, config, config.method_options
        self.progress = progress
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.device = next(model.parameters()).device
        self.peft = model
        self.model = model
        self.reference = None
        self.edited: list[dict[str, Any]] = []
        self._adapter_tmp: Path | None = None
        self._retrained_tmp: Path | None = None
        torch.manual_seed(config.seed)

    def _batches(self, facts: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
        """Facts as the teach loss saw them (full-sequence loss), in batches."""
        examples = [
            encode(self.tokenizer, f["question"], f["answer"], max_length=self.config.max_length, score_prompt=True)
            for f in facts
        ]
        return [collate(examples[s : s + size], self.pad_id, self.device) for s in range(0, len(examples), size)]

    def _mean_loss(self, batches: list[dict[str, Any]]) -> float | None:
        import torch

        if not batches:
            return None
        with torch.no_grad():
            losses = torch.cat([influence.example_losses(self.peft, b) for b in batches])
        return round(float(losses.mean()), 4)

    def train(self) -> TrainOutcome:
        import torch

        if self.model_path is None:
            raise LuneError("llmeraser needs the taught folder (model_path) to read the adapter's training set")
        self.model_path = Path(self.model_path)
        started = time.perf_counter()
        opts = self.options
        facts = training_facts(self.model_path)
        corrections = read_corrections(opts.corrections) if opts.corrections else []
        before, after, replaced = plan_edit(facts, opts.mode, self.data.fact_ids, corrections)
        removed = [f["fact_id"] for f in before] if opts.mode == "remove" else []
        self.edited = edited_facts(facts, removed, replaced)
        n = len(facts)
        self.peft.eval()  # the taught adapter has no dropout by default; eval keeps products deterministic
        params = influence.trainable_parameters(self.peft)
        before_batches = self._batches(before, self.config.batch_size)
        after_batches = self._batches(after, self.config.batch_size)
        loss_before = {"edited_before": self._mean_loss(before_batches), "edited_after": self._mean_loss(after_batches)}

        b = influence.edit_vector(self.peft, params, before_batches, after_batches, n)
        history: list[dict[str, Any]] = []
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=opts.iterations, desc=f"llmeraser {opts.solver}", leave=False)

        def report(i: int, value: float) -> None:
            history.append({"iteration": i + 1, "objective": value})
            log.info("llmeraser %s iteration %d: 0.5 x'Hx - b'x = %.6g", opts.solver, i + 1, value)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(objective=f"{value:.4g}")

        if opts.solver == "adam":
            rng = random.Random(self.config.seed)
            order = list(range(n))

            def sample(x: Any, i: int) -> Any:  # one shuffled pass after another, batch_size facts a product
                if i * opts.batch_size % n < opts.batch_size:
                    rng.shuffle(order)
                start = i * opts.batch_size % n
                chosen = [facts[j] for j in order[start : start + opts.batch_size]]
                return influence.hvp(self.peft, params, self._batches(chosen, len(chosen))[0], x)

            solved = influence.solve_adam(
                sample, b, iterations=opts.iterations, lr=opts.lr, init=opts.init, damping=opts.damping, on_step=report
            )
        else:
            all_batches = self._batches(facts, opts.batch_size)
            solved = influence.solve_cg(
                lambda x, i: influence.full_hvp(self.peft, params, all_batches, x),
                b,
                iterations=opts.iterations,
                damping=opts.damping,
                on_step=report,
            )
        if bar is not None:
            bar.close()
        edited_batches = self._batches(self.edited, opts.batch_size)
        d_loss_pre = self._mean_loss(edited_batches)
        factor, d_loss_post = self._safeguarded_step(params, solved.x * opts.scale, edited_batches, d_loss_pre)
        loss_after = {"edited_before": self._mean_loss(before_batches), "edited_after": self._mean_loss(after_batches)}
        trainable, total = parameter_counts(self.peft)
        gold = self._retrained(removed, replaced)

        # the corrected adapter, kept for save_output; then the merged model is what run.py saves
        self._adapter_tmp = Path(tempfile.mkdtemp(prefix="llmeraser-"))
        self.peft.save_pretrained(str(self._adapter_tmp), safe_serialization=True)
        with torch.no_grad():
            self.model = self.peft.merge_and_unload()
        kept = {
            "mode": opts.mode,
            "solver": opts.solver,
            "edited_facts": len(before),
            "training_facts": n,
            "b_norm": round(float(b.norm()), 8),
            "update_norm": round(float(solved.x.norm() * opts.scale * factor), 8),
            "step_factor": factor,
            "loss_edited_d_pre": d_loss_pre,
            "loss_edited_d_post": d_loss_post,
            "objective": history[-1]["objective"] if history else None,
            "loss_edited_before_pre": loss_before["edited_before"],
            "loss_edited_before_post": loss_after["edited_before"],
            "loss_edited_after_pre": loss_before["edited_after"],
            "loss_edited_after_post": loss_after["edited_after"],
            **gold,
        }
        return TrainOutcome(
            method=self.name,
            stop_reason="solved",
            kept=kept,
            history=history,
            resources={"wall_s": round(time.perf_counter() - started, 3)},
            trainable_params=trainable,
            total_params=total,
            examples=n,
        )

    def _safeguarded_step(
        self, params: list[Any], step: Any, batches: list[dict[str, Any]], loss_pre: float | None
    ) -> tuple[float, float | None]:
        """``theta - f * step`` with the largest ``f`` of 1, 1/2, 1/4, ... (``backtrack`` halvings) that
        does not raise the edited D's mean training loss; ``f = 0`` (the adapter as taught, with a
        warning) when none is found. Returns ``(f, loss after)``. The influence estimate is a Newton
        step on that loss, so a step that raises it has left the region where the quadratic holds."""
        import torch

        saved = [p.detach().clone() for p in params]
        factor = 1.0
        for _ in range(self.options.backtrack + 1):
            influence.apply_update(params, step * factor, sign=-1.0)
            loss = self._mean_loss(batches)
            if not self.options.backtrack or loss is None or loss_pre is None or loss <= loss_pre:
                return factor, loss
            log.info("llmeraser: step x %g raised the edited D's loss %.4g -> %.4g; halving", factor, loss_pre, loss)
            with torch.no_grad():
                for p, before in zip(params, saved):
                    p.copy_(before)
            factor /= 2
        log.warning(
            "llmeraser: every step length down to x %g raised the edited D's training loss (%.4g); the adapter "
            "is left as taught. Raise the damping or lower `scale` (docs/llmeraser.md)",
            factor * 2,
            loss_pre,
        )
        return 0.0, loss_pre

    def _retrained(self, removed: list[str], replaced: dict[str, dict[str, str]]) -> dict[str, Any]:
        """With ``retrain``: retrain the gold adapter (``teach_adapter.retrain_adapter``) and measure the
        parameter distances of the taught and the corrected adapter to it."""
        if not self.options.retrain:
            return {}
        from peft import get_peft_model_state_dict
        from safetensors.torch import load_file

        from lune.unlearn.teach_adapter import retrain_adapter

        started = time.perf_counter()
        self._retrained_tmp = Path(tempfile.mkdtemp(prefix="llmeraser-gold-")) / "retrained"
        retrain_adapter(
            self.model_path, self._retrained_tmp, removed=removed, replaced=replaced, progress=self.progress
        )
        seconds = time.perf_counter() - started

        def vector(tensors: dict[str, Any]) -> Any:  # the saved adapter's keys, in one order
            return influence.flatten(tensors[k].to("cpu") for k in sorted(tensors))

        saved = "adapter_model.safetensors"
        gold = vector(load_file(str(self._retrained_tmp / ADAPTER_DIR / saved)))
        taught = vector(load_file(str(self.model_path / ADAPTER_DIR / saved)))
        fixed = vector(get_peft_model_state_dict(self.peft))
        return {
            "retrain_wall_s": round(seconds, 3),
            "param_distance_taught_to_retrained": round(float((taught - gold).norm()), 6),
            "param_distance_corrected_to_retrained": round(float((fixed - gold).norm()), 6),
        }

    def save_output(self, folder: Any, tokenizer: Any) -> str:
        """The merged corrected model and its tokenizer in ``folder``; the corrected adapter and the
        edited D in ``folder/adapter`` (a taught folder again: another edit can follow)."""
        self.model.save_pretrained(str(folder), safe_serialization=True)
        tokenizer.save_pretrained(str(folder))
        if self._adapter_tmp is not None:
            target = Path(folder) / ADAPTER_DIR
            shutil.move(str(self._adapter_tmp), str(target))
            (target / FACTS_FILE).write_text("".join(json.dumps(f) + "\n" for f in self.edited), encoding="utf-8")
        if self._retrained_tmp is not None:
            shutil.move(str(self._retrained_tmp), str(Path(folder) / "retrained"))
        return "model"

    def manifest_fields(self) -> dict[str, Any]:
        """The corrected adapter's record (manifest key ``teach_adapter``), as teach writes it."""
        if self.model_path is None:
            return {}
        record = adapter_record(self.model_path)
        return {
            RECORD_KEY: {
                "adapter_dir": ADAPTER_DIR,
                "base_model": record["base_model"],
                "facts_file": f"{ADAPTER_DIR}/{FACTS_FILE}",
                "training_fact_ids": [f["fact_id"] for f in self.edited],
                "corrected_from": str(self.model_path),
            }
        }
