"""The unlearning trainer every method shares; the methods themselves are ``unlearn/methods/<name>.py``.

A method is a subclass that names itself (``name``), says which (prompt, target) pairs it trains on
(``training_pairs``) and which loss it minimises on a batch (``loss``, a function of
``unlearn.losses``), and optionally declares its own settings (``Options``, a pydantic model: the
section ``unlearn.method_options`` when that method runs). Defining such a subclass registers it
(``REGISTRY``, by ``name``); ``unlearn.methods`` imports every module of its folder, so adding a
method is adding one file there.

What the trainer does for every method: LoRA adapters on the frozen model (``uses_lora``; else every
weight trains), the optional retain anchor (``retain_weight`` times the NLL of retain facts, or the
KL of the model's next-token distributions to the frozen model's on them), AdamW on the trainable
weights only, and the shared loop (``unlearn.loop``) with early stopping (``RecallChecks``), metering
and progress as callbacks. The frozen model is the base with the adapter switched off
(``model.disable_adapter()``), so no second copy of the weights is needed; a method without adapter
copies the model when it needs a reference.

Which facts are used for what: the forget facts (at most ``monitor_forget`` of them) are asked at each
check; of the retain facts, ``monitor_retain`` are asked at each check (GUR) and the others feed the
anchor and a method's own retain term (grad_diff, simnpo, rmu), so GUR is never measured on facts the run trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, create_model

from lune.core.config_base import ConfigModel
from lune.core.models import attention_of, set_attention
from lune.core.registry import Registry
from lune.data.errors import LuneError
from lune.unlearn import losses
from lune.unlearn.early_stopping import EarlyStopping, Probe, RecallChecks, coarse_monitor_warning, pick_monitor
from lune.unlearn.examples import Example, collate, encode, endless_batches, pad_id_of
from lune.unlearn.inputs import UnlearnData
from lune.unlearn.loop import Batch, Progress, adamw, train_loop, warmup_then_constant
from lune.unlearn.lora import attach_lora, enable_gradient_checkpointing
from lune.unlearn.measure import Metering, parameter_counts
from lune.unlearn.precision import autocast, resolve_autocast

if TYPE_CHECKING:  # the config imports the methods, which import this module
    from lune.unlearn.config import UnlearnConfig

log = logging.getLogger(__name__)


class MethodOptions(ConfigModel):
    """Settings of one method (none by default); a method with its own declares a subclass as ``Options``."""


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
        return {
            "method": self.method,
            "stop_reason": self.stop_reason,
            **{f"kept_{k}": v for k, v in self.kept.items()},
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "examples": self.examples,
            "checks": len(self.history),
            "time_to_target": self.time_to_target,
            **self.resources,
        }


# Every method class, by name; filled by UnlearnTrainer.__init_subclass__ (read it as
# unlearn.methods.METHODS, which makes sure every method module was imported).
REGISTRY: Registry[type[UnlearnTrainer]] = Registry("unlearning method", "lune.unlearn.methods")


class UnlearnTrainer:
    """Base of the methods (see the module docstring); not a method itself."""

    name: ClassVar[str]  # what a config calls the method; set by each method class
    model_path: Any = None  # the folder the run loaded the model from (set by unlearn.run; LLMEraser reads it)
    uses_lora: ClassVar[bool] = True
    Options: ClassVar[type[MethodOptions]] = MethodOptions  # the method's own settings
    # Options with the ``method`` tag: the method's member of the config's ``method_options`` union
    options_section: ClassVar[type[MethodOptions]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is None:  # an intermediate class, no method of its own
            return
        REGISTRY.add(name, cls)  # a name taken by another class is an error naming both
        cls.options_section = create_model(
            cls.Options.__name__ if cls.Options is not MethodOptions else f"{cls.__name__}Options",
            __base__=cls.Options,
            __module__=cls.__module__,
            __doc__=cls.Options.__doc__,
            method=(
                Literal[name],
                Field(name, exclude=True, description="the method these settings are for (set from unlearn.method)"),
            ),
        )

    @classmethod
    def check_config(cls, config: UnlearnConfig) -> None:
        """Raise ValueError when ``config`` asks for something this method cannot do."""

    def __init__(self, model: Any, tokenizer: Any, data: UnlearnData, config: UnlearnConfig, *, progress: bool = True):
        import torch

        self.tokenizer = tokenizer
        self.data = data
        self.config = config
        self.options = config.method_options
        self.progress = progress
        self.pad_id = pad_id_of(tokenizer)
        self.device = next(model.parameters()).device
        # bfloat16 autocast of the training passes only (the checks' greedy answers stay in the weights' dtype)
        self.amp = resolve_autocast(config.autocast, self.device, next(model.parameters()).dtype)
        torch.manual_seed(config.seed)
        if self.uses_lora:
            model = attach_lora(model, config.lora, seed=config.seed, layers=self.adapted_layers(model))
        else:
            for param in model.parameters():
                param.requires_grad_(True)
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.model = model
        self.reference: Any = None  # a frozen copy, only when a method without adapter needs one

    # -- what a method says ---------------------------------------------------------------------------

    def training_pairs(self) -> list[tuple[str, str]]:
        """The (prompt, target) pairs the method trains on."""
        raise NotImplementedError

    def loss(self, batch: dict[str, Any], retain_batch: dict[str, Any] | None) -> Any:
        """The method's loss on one batch of its pairs (and a batch of retain facts, when it has one). -> scalar."""
        raise NotImplementedError

    def retain_use(self) -> str | None:
        """What this run feeds retain facts to (None: nothing): the anchor, or a method's own retain term."""
        return f"retain_anchor={self.config.retain_anchor!r}" if self.config.retain_anchor != "none" else None

    def prepare(self, examples: list[Example]) -> None:
        """Work done once before the first step (NPO: the reference log-probabilities)."""

    def learning_rate(self) -> float:
        return self.config.learning_rate

    def adapted_layers(self, model: Any) -> list[int] | None:
        """The decoder layers (0-based) that get LoRA adapters: ``unlearn.lora.layers``; None: every layer
        (RMU: up to the steered one)."""
        return self.config.lora.layers

    @classmethod
    def load(cls, model_path: Any, config: UnlearnConfig) -> tuple[Any, Any]:
        """The model and tokenizer a run of this method starts from (LLMEraser: the base and its taught adapter)."""
        from lune.unlearn.run import load_model  # run imports the methods, which import this module

        return load_model(model_path, config)

    def manifest_fields(self) -> dict[str, Any]:
        """Keys this method adds to ``manifest.json`` (LLMEraser: the corrected adapter's record)."""
        return {}

    def save_output(self, folder: Any, tokenizer: Any) -> str:
        """Write what training produced into ``folder``; return the manifest's ``kind``: the PEFT
        adapter (``adapter``), or the whole model and its tokenizer (``model``, no adapter). GRUN
        overrides it (``interventions``)."""
        self.model.save_pretrained(str(folder), safe_serialization=True)
        if not self.uses_lora:
            tokenizer.save_pretrained(str(folder))
        return "adapter" if self.uses_lora else "model"

    def build_optimizer(self) -> tuple[list[Any], Any, Any]:
        """(trainable parameters, AdamW over them, the warm-up schedule): what the loop steps."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer, scheduler = adamw(
            params,
            lr=self.learning_rate(),
            weight_decay=self.config.weight_decay,
            schedule=warmup_then_constant(self.config.warmup_steps),
        )
        return params, optimizer, scheduler

    # -- shared machinery ---------------------------------------------------------------------------

    def forward(self, batch: dict[str, Any], model: Any = None, *, hidden_layer: int | None = None) -> Any:
        """Logits of ``model`` (default: the one being trained) on a training batch, or with ``hidden_layer``
        the hidden states [B, T, H] after that decoder layer (0-based: transformers' ``hidden_states[layer + 1]``,
        which for the last layer is after the final norm). One autocast block: see ``unlearn.loop``."""
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        with autocast(self.device, self.amp):
            if hidden_layer is None:
                return (model or self.model)(**inputs).logits
            return (model or self.model)(**inputs, output_hidden_states=True).hidden_states[hidden_layer + 1]

    def frozen_forward(self, batch: dict[str, Any], *, hidden_layer: int | None = None) -> Any:
        """:meth:`forward` of the frozen model (the adapter disabled; without adapter: a frozen copy), no grad."""
        import torch

        with torch.no_grad():
            if self.uses_lora:
                with self.model.disable_adapter():
                    return self.forward(batch, hidden_layer=hidden_layer)
            if self.reference is None:
                raise RuntimeError("no reference model prepared")
            return self.forward(batch, self.reference, hidden_layer=hidden_layer)

    def anchor_loss(self, retain_batch: dict[str, Any]) -> Any:
        if self.config.retain_anchor == "nll":
            return losses.nll(self.forward(retain_batch), retain_batch["labels"])
        reference = self.frozen_forward(retain_batch)
        return losses.kl_to_reference(self.forward(retain_batch), reference, retain_batch["labels"])

    def step_loss(self, batch: dict[str, Any], retain_batch: dict[str, Any] | None = None) -> Any:
        """What one optimiser step minimises: the method's loss, plus the weighted retain anchor."""
        loss = self.loss(batch, retain_batch)
        if self.config.retain_anchor != "none" and retain_batch is not None:
            loss = loss + self.config.retain_weight * self.anchor_loss(retain_batch)
        return loss

    def encode_pairs(self, pairs: list[tuple[str, str]]) -> list[Example]:
        unique = list(dict.fromkeys(pairs))
        return [
            encode(self.tokenizer, prompt, target, max_length=self.config.max_length, index=i)
            for i, (prompt, target) in enumerate(unique)
        ]

    def _batches(self, examples: list[Example], batch_size: int, seed: int) -> Iterator[dict[str, Any]]:
        for chunk in endless_batches(examples, batch_size, seed):
            yield collate(chunk, self.pad_id, self.device)

    def _steps(self, examples: list[Example], retain_examples: list[Example] | None) -> Iterator[Batch]:
        """Each step's batches: the method's pairs, and retain facts when the run uses them."""
        cfg = self.config
        batches = self._batches(examples, cfg.batch_size, cfg.seed)
        retain = self._batches(retain_examples, cfg.retain_batch_size, cfg.seed + 1) if retain_examples else None
        while True:
            batch = next(batches)
            yield (batch, next(retain)) if retain is not None else (batch,)

    def train(self) -> TrainOutcome:
        """Train until early stopping says stop (or ``max_steps``); leave the kept weights in place."""
        import torch

        torch.set_flush_denormal(True)  # denormals slow CPU training about 3x
        cfg = self.config
        examples = self.encode_pairs(self.training_pairs())
        retain_use = self.retain_use()
        # With an anchor to feed, at most half of the retain facts are held out for the checks.
        limit = min(cfg.monitor_retain, len(self.data.retain) // 2) if retain_use else cfg.monitor_retain
        monitor_retain = pick_monitor(self.data.retain, limit)
        monitor_ids = {f["fact_id"] for f in monitor_retain}
        anchor_facts = [f for f in self.data.retain if f["fact_id"] not in monitor_ids]
        retain_examples = [
            encode(self.tokenizer, f["question"], f["answer"], max_length=cfg.max_length, index=i)
            for i, f in enumerate(anchor_facts)
        ]
        if retain_use and not retain_examples:
            raise LuneError(
                f"method {self.name!r} ({retain_use}) needs retain facts, and there are none: ingest a "
                "retain split (TOFU: retainNN.json) or set retain_anchor to 'none'"
            )
        monitor_forget = pick_monitor(self.data.forget, cfg.monitor_forget)
        forget_probe = Probe(
            [f["question"] for f in monitor_forget],
            [f["key_span"] for f in monitor_forget],
            [f["fact_id"] for f in monitor_forget],
        )
        retain_probe = Probe(
            [f["question"] for f in monitor_retain],
            [f["key_span"] for f in monitor_retain],
            [f["fact_id"] for f in monitor_retain],
        )
        if not retain_probe.questions:
            log.warning("no retain facts: GUR cannot be measured, early stopping watches USR only")
        elif warning := coarse_monitor_warning(cfg.gur_tolerance, len(retain_probe.questions)):
            log.warning(warning)

        self.model.train()
        self.prepare(examples)
        params, optimizer, scheduler = self.build_optimizer()
        trainable, total = parameter_counts(self.model)
        metering = Metering(device=str(self.device))
        checks = RecallChecks(
            self.model,
            self.tokenizer,
            forget_probe,
            retain_probe,
            usr_target=cfg.usr_target,
            gur_tolerance=cfg.gur_tolerance,
            eval_every=cfg.eval_every,
            max_new_tokens=cfg.max_new_tokens,
        )
        fed = retain_examples if retain_use else None
        # Eager attention while training on a CPU, as teaching does (unlearn/teach.py): torch's CPU
        # SDPA kernel spent a fifth of a step in its backward pass on these short rows. The model is
        # handed back with the attention it came with.
        loaded_attention = attention_of(self.model)
        if self.device.type == "cpu":
            set_attention(self.model, "eager")
        try:
            state = train_loop(
                self._steps(examples, fed),
                self.step_loss,
                params=params,
                optimizer=optimizer,
                scheduler=scheduler,
                max_steps=cfg.max_steps,
                grad_clip=cfg.grad_clip,
                device=self.device,
                callbacks=[metering, checks, Progress(f"unlearn {self.name}", enabled=self.progress)],
            )
        finally:
            set_attention(self.model, loaded_attention)
        resources = {**metering.resources, "autocast": str(self.amp).replace("torch.", "") if self.amp else None}
        return TrainOutcome(
            method=self.name,
            stop_reason=state.stop_reason or EarlyStopping.MAX_STEPS,
            kept=checks.rules.best.as_dict(),
            history=checks.rules.summary(),
            resources=resources,
            trainable_params=trainable,
            total_params=total,
            examples=len(examples),
            anchor_facts=[f["fact_id"] for f in anchor_facts] if fed else [],
            monitor_facts={"forget": forget_probe.fact_ids, "retain": retain_probe.fact_ids},
            time_to_target=checks.time_to_target,
        )
