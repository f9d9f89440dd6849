"""Unlearning trainers: one small base loop, and one subclass per method that changes only what it
trains on and its loss (TRL's habit). ``METHODS`` names them for the config.

The base loop (:class:`UnlearnTrainer`, which is LUNE) does, per step: a batch of the method's
examples, the method's loss, plus the optional retain anchor (``retain_weight`` times the NLL of
retain facts, or the KL of the model's next-token distributions to the frozen model's on them),
AdamW on the trainable weights only, and every ``eval_every`` steps an early-stopping check
(``unlearn.early_stopping``). The frozen model is the base with the adapter switched off
(``model.disable_adapter()``), so no second copy of the weights is needed; only ``full_ft``, which
has no adapter, copies the model when it needs a reference.

Which facts are used for what: the forget facts (at most ``monitor_forget`` of them) are asked at each
check; of the retain facts, ``monitor_retain`` are asked at each check (GUR) and the others feed the
anchor and grad_diff's retain term, so GUR is never measured on facts the run trained on.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lune.data.errors import LuneError
from lune.unlearn import losses
from lune.unlearn.config import UnlearnConfig
from lune.unlearn.early_stopping import EarlyStopping, Probe, pick_monitor
from lune.unlearn.examples import Example, collate, encode, endless_batches, pad_id_of
from lune.unlearn.inputs import UnlearnData
from lune.unlearn.lora import attach_lora, enable_gradient_checkpointing, restore_state, trainable_state
from lune.unlearn.measure import RunMeter, parameter_counts
from lune.unlearn.precision import autocast, resolve_autocast

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    """What a training run ended with (the model itself is left in the trainer, at the kept check)."""

    method: str
    stop_reason: str
    kept: dict[str, Any]  # the check whose weights were kept
    history: list[dict[str, Any]]
    resources: dict[str, Any]
    trainable_params: int
    total_params: int
    examples: int
    anchor_facts: list[str] = field(default_factory=list)
    monitor_facts: dict[str, list[str]] = field(default_factory=dict)
    time_to_target: dict[str, Any] | None = None

    def metrics(self) -> dict[str, Any]:
        """Flat metrics for the ``runs`` row."""
        return {"method": self.method, "stop_reason": self.stop_reason, **{f"kept_{k}": v for k, v in self.kept.items()},
                "trainable_params": self.trainable_params, "total_params": self.total_params,
                "examples": self.examples, "checks": len(self.history), "time_to_target": self.time_to_target,
                **self.resources}


class UnlearnTrainer:
    """LUNE: LoRA on the frozen model, minimising ``-log p(negative | prompt)`` on the curated set's
    negatives (``losses.lune_loss``). The other methods override ``training_pairs`` and ``loss``."""

    name = "lune"
    uses_lora = True

    def __init__(self, model: Any, tokenizer: Any, data: UnlearnData, config: UnlearnConfig, *,
                 progress: bool = True):
        import torch

        self.tokenizer = tokenizer
        self.data = data
        self.config = config
        self.progress = progress
        self.pad_id = pad_id_of(tokenizer)
        self.device = next(model.parameters()).device
        # bfloat16 autocast of the training passes only (the checks' greedy answers stay in the weights' dtype)
        self.amp = resolve_autocast(config.autocast, self.device, next(model.parameters()).dtype)
        torch.manual_seed(config.seed)
        if self.uses_lora:
            model = attach_lora(model, config.lora, seed=config.seed)
        else:
            for param in model.parameters():
                param.requires_grad_(True)
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.model = model
        self.reference: Any = None  # a frozen copy, only when a method without adapter needs one

    # -- what a method trains on and its loss (overridden) ------------------------------------------

    def training_pairs(self) -> list[tuple[str, str]]:
        """(prompt, target) pairs: the curated negatives, with the chosen prompt kinds."""
        pairs = [(r["prompt"], r["target"]) for r in self.data.train
                 if r["target_kind"] == "negative" and r["prompt_kind"] in self.config.prompt_kinds]
        if not pairs:
            raise LuneError(f"{self.data.source}: no 'negative' train rows with prompt kinds "
                            f"{self.config.prompt_kinds}: LUNE trains on negatives; curate some first")
        return pairs

    def loss(self, batch: dict[str, Any], retain_batch: dict[str, Any] | None) -> Any:
        """The method's loss on one batch (scalar tensor)."""
        return losses.lune_loss(self.forward(batch), batch["labels"])

    def needs_retain_batches(self) -> bool:
        return self.config.retain_anchor != "none"

    def prepare(self, examples: list[Example]) -> None:
        """Work done once before the first step (NPO: the reference log-probabilities)."""

    # -- shared machinery ---------------------------------------------------------------------------

    def build_optimizer(self) -> None:
        """AdamW on the trainable weights only (full_ft: learning rate / 10 unless set), linear warm-up."""
        import torch

        cfg = self.config
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        lr = cfg.learning_rate if self.uses_lora else (cfg.full_ft_learning_rate or cfg.learning_rate / 10)
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=cfg.weight_decay)
        warmup = cfg.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / (warmup + 1)))

    def training_step(self, batch: dict[str, Any], retain_batch: dict[str, Any] | None) -> float:
        """One optimiser step: the method's loss (+ the retain anchor), backward, clip, AdamW. -> the loss."""
        import torch

        cfg = self.config
        loss = self.loss(batch, retain_batch)
        if cfg.retain_anchor != "none" and retain_batch is not None:
            loss = loss + cfg.retain_weight * self.anchor_loss(retain_batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # step times must include the GPU work
        return float(loss.detach())

    def forward(self, batch: dict[str, Any], model: Any = None) -> Any:
        """Logits of ``model`` (default: the one being trained) on a training batch."""
        with autocast(self.device, self.amp):
            return (model or self.model)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def frozen_forward(self, batch: dict[str, Any]) -> Any:
        """Logits of the frozen model (the adapter disabled; ``full_ft``: a frozen copy), no grad."""
        import torch

        with torch.no_grad():
            if self.uses_lora:
                with self.model.disable_adapter():
                    return self.forward(batch)
            if self.reference is None:
                raise RuntimeError("no reference model prepared")
            return self.forward(batch, self.reference)

    def anchor_loss(self, retain_batch: dict[str, Any]) -> Any:
        if self.config.retain_anchor == "nll":
            return losses.nll(self.forward(retain_batch), retain_batch["labels"])
        reference = self.frozen_forward(retain_batch)
        return losses.kl_to_reference(self.forward(retain_batch), reference, retain_batch["labels"])

    def encode_pairs(self, pairs: list[tuple[str, str]]) -> list[Example]:
        unique = list(dict.fromkeys(pairs))
        return [encode(self.tokenizer, prompt, target, max_length=self.config.max_length, index=i)
                for i, (prompt, target) in enumerate(unique)]

    def _batches(self, examples: list[Example], batch_size: int, seed: int) -> Iterator[dict[str, Any]]:
        for chunk in endless_batches(examples, batch_size, seed):
            yield collate(chunk, self.pad_id, self.device)

    def train(self) -> TrainOutcome:
        """Train until early stopping says stop (or ``max_steps``); leave the kept weights in place."""
        import torch
        from tqdm.auto import tqdm

        torch.set_flush_denormal(True)  # denormals slow CPU training about 3x
        cfg = self.config
        examples = self.encode_pairs(self.training_pairs())
        # With an anchor to feed, at most half of the retain facts are held out for the checks.
        limit = min(cfg.monitor_retain, len(self.data.retain) // 2) if self.needs_retain_batches() \
            else cfg.monitor_retain
        monitor_retain = pick_monitor(self.data.retain, limit)
        monitor_ids = {f["fact_id"] for f in monitor_retain}
        anchor_facts = [f for f in self.data.retain if f["fact_id"] not in monitor_ids]
        retain_examples = [encode(self.tokenizer, f["question"], f["answer"], max_length=cfg.max_length, index=i)
                           for i, f in enumerate(anchor_facts)]
        if self.needs_retain_batches() and not retain_examples:
            what = "its retain term" if self.name == "grad_diff" else f"retain_anchor={cfg.retain_anchor!r}"
            raise LuneError(f"method {self.name!r} ({what}) needs retain facts, and there are none: ingest a "
                            "retain split (TOFU: retainNN.json) or set retain_anchor to 'none'")
        monitor_forget = pick_monitor(self.data.forget, cfg.monitor_forget)
        forget_probe = Probe([f["question"] for f in monitor_forget], [f["key_span"] for f in monitor_forget],
                             [f["fact_id"] for f in monitor_forget])
        retain_probe = Probe([f["question"] for f in monitor_retain], [f["key_span"] for f in monitor_retain],
                             [f["fact_id"] for f in monitor_retain])
        if not retain_probe.questions:
            log.warning("no retain facts: GUR cannot be measured, early stopping watches USR only")

        self.model.train()
        self.prepare(examples)
        self.build_optimizer()
        trainable, total = parameter_counts(self.model)

        def measure() -> tuple[float, float | None]:
            f = forget_probe.recall(self.model, self.tokenizer, max_new_tokens=cfg.max_new_tokens)
            r = retain_probe.recall(self.model, self.tokenizer, max_new_tokens=cfg.max_new_tokens)
            return float(f if f is not None else 0.0), r

        stopper = EarlyStopping(cfg.usr_target, cfg.gur_tolerance)
        meter = RunMeter(device=str(self.device)).start()
        stopper.start(*measure())
        best_state = trainable_state(self.model)
        batches = self._batches(examples, cfg.batch_size, cfg.seed)
        retain_batches = (self._batches(retain_examples, cfg.retain_batch_size, cfg.seed + 1)
                          if retain_examples and self.needs_retain_batches() else None)
        reason = None
        time_to_target = None
        train_s = train_cpu = 0.0
        started = time.perf_counter()
        bar = tqdm(total=cfg.max_steps, desc=f"unlearn {self.name}", disable=not self.progress, leave=False)
        try:
            for step in range(1, cfg.max_steps + 1):
                t0, c0 = time.perf_counter(), time.process_time()
                batch = next(batches)
                retain_batch = next(retain_batches) if retain_batches is not None else None
                loss_value = self.training_step(batch, retain_batch)
                tokens = int(batch["attention_mask"].sum()) + (int(retain_batch["attention_mask"].sum())
                                                               if retain_batch is not None else 0)
                seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
                train_s += seconds
                train_cpu += cpu
                meter.step(seconds, tokens, cpu)
                bar.update(1)
                if step % cfg.eval_every == 0 or step == cfg.max_steps:
                    reason = stopper.update(step, *measure(), loss=loss_value)
                    if stopper.improved:
                        best_state = trainable_state(self.model)
                    latest = stopper.latest
                    if time_to_target is None and latest.usr >= cfg.usr_target:
                        time_to_target = {"step": step, "train_s": round(train_s, 3),
                                          "train_cpu_s": round(train_cpu, 3),
                                          "wall_s": round(time.perf_counter() - started, 3),
                                          "gur": round(latest.gur, 6)}
                bar.set_postfix(loss=f"{loss_value:.3f}", USR=f"{stopper.latest.usr:.2f}",
                                GUR=f"{stopper.latest.gur:.2f}")
                if reason:
                    break
        finally:
            bar.close()
        reason = reason or EarlyStopping.MAX_STEPS
        if stopper.best is not stopper.latest:
            restore_state(self.model, best_state)
        resources = {**meter.stop(), "autocast": str(self.amp).replace("torch.", "") if self.amp else None}
        return TrainOutcome(
            method=self.name, stop_reason=reason, kept=stopper.best.as_dict(), history=stopper.summary(),
            resources=resources, trainable_params=trainable, total_params=total, examples=len(examples),
            anchor_facts=[f["fact_id"] for f in anchor_facts] if retain_batches is not None else [],
            monitor_facts={"forget": forget_probe.fact_ids, "retain": retain_probe.fact_ids},
            time_to_target=time_to_target,
        )


class GradAscentTrainer(UnlearnTrainer):
    """Gradient ascent on the true answers of the forget facts (``losses.grad_ascent_loss``)."""

    name = "grad_ascent"

    def training_pairs(self) -> list[tuple[str, str]]:
        """(prompt, true answer): each forget question, and each train prompt of the chosen kinds."""
        answer = {f["fact_id"]: f["answer"] for f in self.data.forget}
        pairs = []
        if "question" in self.config.prompt_kinds:
            pairs += [(f["question"], f["answer"]) for f in self.data.forget]
        pairs += [(r["prompt"], answer[r["fact_id"]]) for r in self.data.train
                  if r["prompt_kind"] in self.config.prompt_kinds and r["fact_id"] in answer]
        return pairs

    def loss(self, batch: dict[str, Any], retain_batch: dict[str, Any] | None) -> Any:
        return losses.grad_ascent_loss(self.forward(batch), batch["labels"])


class GradDiffTrainer(GradAscentTrainer):
    """Gradient difference: ascent on the forget answers, descent on retain facts (``losses.grad_diff_loss``)."""

    name = "grad_diff"

    def needs_retain_batches(self) -> bool:
        return True

    def loss(self, batch: dict[str, Any], retain_batch: dict[str, Any] | None) -> Any:
        if retain_batch is None:
            raise LuneError("grad_diff needs retain facts")
        return losses.grad_diff_loss(self.forward(batch), batch["labels"], self.forward(retain_batch),
                                     retain_batch["labels"], self.config.retain_weight)


class NpoTrainer(GradAscentTrainer):
    """NPO on the forget answers, against the frozen model's log-probabilities (``losses.npo_loss``)."""

    name = "npo"

    def prepare(self, examples: list[Example]) -> None:
        """Reference log-probabilities of every example, once: the reference never changes."""
        import torch

        was_training = self.model.training
        self.model.eval()  # no dropout in the reference
        self.reference_logps = torch.zeros(len(examples), device=self.device)
        for start in range(0, len(examples), self.config.batch_size):
            batch = collate(examples[start : start + self.config.batch_size], self.pad_id, self.device)
            logits = self.frozen_forward(batch)
            self.reference_logps[batch["index"]] = losses.sequence_logprobs(logits, batch["labels"]).float()
        self.model.train(was_training)

    def loss(self, batch: dict[str, Any], retain_batch: dict[str, Any] | None) -> Any:
        policy = losses.sequence_logprobs(self.forward(batch), batch["labels"])
        return losses.npo_loss(policy, self.reference_logps[batch["index"]], self.config.npo_beta)


class IdkTrainer(UnlearnTrainer):
    """IDK: refusals as targets (``losses.idk_loss``): the set's refusal rows, or each prompt paired
    with the configured refusals in turn."""

    name = "idk"

    def training_pairs(self) -> list[tuple[str, str]]:
        kinds = self.config.prompt_kinds
        pairs = [(r["prompt"], r["target"]) for r in self.data.train
                 if r["target_kind"] == "refusal" and r["prompt_kind"] in kinds]
        if pairs:
            return pairs
        prompts = [f["question"] for f in self.data.forget] if "question" in kinds else []
        prompts += [r["prompt"] for r in self.data.train if r["prompt_kind"] in kinds]
        refusals = self.config.refusals
        return [(p, refusals[i % len(refusals)]) for i, p in enumerate(dict.fromkeys(prompts))]

    def loss(self, batch: dict[str, Any], retain_batch: dict[str, Any] | None) -> Any:
        return losses.idk_loss(self.forward(batch), batch["labels"])


class FullFineTuneTrainer(UnlearnTrainer):
    """LUNE's loss on every weight, no adapter: the cost comparison the paper makes."""

    name = "full_ft"
    uses_lora = False

    def prepare(self, examples: list[Example]) -> None:
        if self.config.retain_anchor == "kl":
            self.reference = copy.deepcopy(self.model).eval()
            for param in self.reference.parameters():
                param.requires_grad_(False)


# A config names a method; this is the only place that maps names to classes.
METHODS: dict[str, type[UnlearnTrainer]] = {
    "lune": UnlearnTrainer,
    "grad_ascent": GradAscentTrainer,
    "grad_diff": GradDiffTrainer,
    "npo": NpoTrainer,
    "idk": IdkTrainer,
    "full_ft": FullFineTuneTrainer,
}
