"""GRUN (Gated Representation UNlearning; "A General Framework to Enhance Fine-tuning-based LLM
Unlearning", arXiv 2502.17823; reference code renjie3/GRUN): instead of changing weights, a gated
low-rank edit of the residual stream at a few layers, at the last prompt position
(``core/interventions.py``), trained with a fine-tuning loss plus a gate loss.

The base model is frozen; only the edits (R, W, b) and their gates train. One step's loss:

    L = forget term + retain_weight * NLL(retain) + gate_weight * BCE(gates; 1 on forget, 0 on retain)

with the forget term of ``forget_loss`` (``grad_diff``: ``-NLL(forget answers)``; ``npo``:
``npo_coeff * losses.npo_loss`` against the same model with the edits off; ``idk``: NLL of a refusal;
``lune``: NLL of LUNE's curated negatives, a pairing the paper did not try), on the pairs of the
method of that name, and the BCE over every edited layer's gate on the forget and the retain batch
(:func:`gate_bce`). Defaults are the reference's (``cmd_grun.sh``): rank 4, linear gate, gate
weight 10, learning rate 4e-3, retain weight 2 (grad_diff) or 1, NPO coefficient 100 with beta 0.1,
layers 20, 25, 31 of 32 scaled to the model's depth (:func:`default_layers`). AdamW without weight
decay: decay on R collapses it to zero in one step under the orthogonal parametrization.

Output: ``interventions.json`` + ``interventions.safetensors`` (no adapter); evaluation loads them
through transformers (``core.models.iter_loaded``): vLLM cannot serve them as a LoRA request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from lune.data.errors import LuneError
from lune.unlearn import losses
from lune.unlearn.examples import Example
from lune.unlearn.loop import adamw, warmup_then_constant
from lune.unlearn.methods.grad_ascent import GradAscent
from lune.unlearn.methods.idk import DEFAULT_REFUSALS, Idk
from lune.unlearn.methods.lune import Lune
from lune.unlearn.methods.npo import Npo
from lune.unlearn.trainer import MethodOptions, TrainOutcome, UnlearnTrainer

if TYPE_CHECKING:
    from lune.unlearn.config import UnlearnConfig
    from lune.unlearn.inputs import UnlearnData

ForgetLoss = Literal["grad_diff", "npo", "idk", "lune"]
# The reference's layers on 32-layer models (Llama-3.1-8B, Mistral-7B): 62.5%, 78% and 97% of the depth.
REFERENCE_LAYERS = (20, 25, 31)
REFERENCE_DEPTH = 32
SUBMODULE = "grun_interventions"  # where the edits sit in the model while it trains (counts, checkpoints)


class GrunOptions(MethodOptions):
    """Settings of ``grun`` (reference defaults: renjie3/GRUN ``cmd_grun.sh``)."""

    forget_loss: ForgetLoss = Field(
        "grad_diff",
        description="forget term: grad_diff (ascent on the true answers), npo, idk (refusals) or lune "
        "(LUNE's curated negatives)",
    )
    layers: list[int] | None = Field(
        None,
        description="decoder layers (0-based) edited; default: the reference's 20, 25, 31 of 32 scaled to "
        "the depth (2, 3 of the tiny model's 4; 18, 23, 29 of SmolLM2-135M's 30)",
    )
    rank: int = Field(4, ge=1, description="rank of each LoReFT edit (rows of R)")
    gate: Literal["linear", "mlp"] = Field(
        "linear", description="gate function: linear (hidden -> 1) or mlp (hidden -> 256 -> 64 -> 1, ReLU)"
    )
    gate_weight: float = Field(10.0, ge=0, description="weight of the gates' binary cross-entropy")
    retain_weight: float | None = Field(
        None, ge=0, description="weight of the retain NLL; default 2 with grad_diff, 1 otherwise (the reference's)"
    )
    npo_coeff: float = Field(100.0, gt=0, description="npo: weight of the NPO term")
    beta: float = Field(0.1, gt=0, description="npo: inverse temperature beta")
    learning_rate: float = Field(4e-3, gt=0, description="AdamW learning rate of the edits and gates")
    refusals: list[str] = Field(
        list(DEFAULT_REFUSALS), min_length=1, description="idk: refusal targets when the set has no refusal rows"
    )
    start_from: str | None = Field(
        None,
        description="an earlier grun output folder (interventions.json + .safetensors) to train on from, for "
        "sequential requests; its layers, rank and gate are kept (method_options.layers must match or be unset)",
    )


def default_layers(num_layers: int) -> list[int]:
    """The reference's layers 20, 25, 31 of 32 at the same fractions of ``num_layers`` (rounded down,
    duplicates merged): [2, 3] of 4, [18, 23, 29] of 30, [20, 25, 31] of 32."""
    return sorted({min(num_layers - 1, layer * num_layers // REFERENCE_DEPTH) for layer in REFERENCE_LAYERS})


def gate_bce(forget_logits: list[Any], retain_logits: list[Any]) -> Any:
    """GRUN's gate loss: the binary cross-entropy of every gate value, every layer's, labelled 1 on
    forget prompts and 0 on retain prompts, averaged over all of them (the reference's ``BCELoss`` on
    the concatenation): ``mean(-log g) over forget gates + (-log(1 - g)) over retain gates``, from the
    gate logits (numerically stable). Lists of [B] tensors, one per layer -> scalar."""
    import torch
    import torch.nn.functional as F

    forget = torch.cat([t.float().reshape(-1) for t in forget_logits])
    retain = torch.cat([t.float().reshape(-1) for t in retain_logits])
    logits = torch.cat([forget, retain])
    labels = torch.cat([torch.ones_like(forget), torch.zeros_like(retain)])
    return F.binary_cross_entropy_with_logits(logits, labels)


class Grun(UnlearnTrainer):
    """Gated LoReFT edits trained with a forget term, the retain NLL and the gate BCE (module docstring)."""

    name = "grun"
    uses_lora = False
    Options = GrunOptions

    @classmethod
    def check_config(cls, config: UnlearnConfig) -> None:
        if config.retain_anchor == "nll":
            raise ValueError(
                "grun already descends on retain facts (weight: method_options.retain_weight); "
                "leave retain_anchor at 'none' or use 'kl'"
            )
        if config.gradient_checkpointing:
            # backward would recompute a checkpointed layer with the positions of the last forward
            # (the retain batch's), not those of the batch being recomputed
            raise ValueError("grun does not support gradient_checkpointing; turn it off")

    def __init__(self, model: Any, tokenizer: Any, data: UnlearnData, config: UnlearnConfig, *, progress: bool = True):
        import torch

        from lune.core.interventions import Interventions, attach, prompt_marker

        super().__init__(model, tokenizer, data, config, progress=progress)
        options: GrunOptions = self.options
        self.model.requires_grad_(False)  # the base model stays frozen: only the edits train
        num_layers = self.model.config.num_hidden_layers
        marker = prompt_marker(tokenizer)
        if options.start_from:
            self.interventions = self.earlier_interventions(options.start_from, marker)
            self.check_layers(self.interventions.config.layers, num_layers)
        else:
            layers = options.layers if options.layers is not None else default_layers(num_layers)
            self.check_layers(layers, num_layers)
            self.interventions = Interventions.create(
                layers,
                self.model.config.hidden_size,
                rank=options.rank,
                gate=options.gate,
                prompt_marker=marker,
                method=self.name,
                seed=config.seed,
            ).to(self.device)
        # Registered in the model while it trains: parameter counts, the optimiser and early
        # stopping's best-checkpoint copies see the edits like any trainable weight.
        self.model.add_module(
            SUBMODULE, torch.nn.ModuleDict({str(k): m for k, m in self.interventions.modules.items()})
        )
        self.handle = attach(self.model, self.interventions)
        self.retain_weight = (
            options.retain_weight
            if options.retain_weight is not None
            else (2.0 if options.forget_loss == "grad_diff" else 1.0)
        )
        self.reference_logps: Any = None

    @staticmethod
    def check_layers(layers: list[int], num_layers: int) -> None:
        if not layers or any(not 0 <= layer < num_layers for layer in layers):
            raise LuneError(
                f"grun: layers {layers} must be non-empty and within the model's {num_layers} (0 to {num_layers - 1})"
            )

    def earlier_interventions(self, folder: str, marker: list[int]) -> Any:
        """The artefact of an earlier request, trainable, checked against this model and these options."""
        from lune.core.interventions import load

        earlier = load(folder, trainable=True, device=self.device)
        where = f"grun: method_options.start_from {folder}"
        if earlier.config.hidden_size != self.model.config.hidden_size:
            raise LuneError(
                f"{where} edits width {earlier.config.hidden_size}; this model's is {self.model.config.hidden_size}"
            )
        if earlier.config.prompt_marker and earlier.config.prompt_marker != marker:
            raise LuneError(f"{where} was trained with another tokenizer or chat template (its prompt marker differs)")
        wanted = self.options.layers
        if wanted is not None and sorted(wanted) != sorted(earlier.config.layers):
            raise LuneError(
                f"{where} edits layers {earlier.config.layers}; method_options.layers {wanted} differs "
                "(leave it unset to keep the earlier layers)"
            )
        return earlier

    # -- which pairs, which loss -------------------------------------------------------------------

    def training_pairs(self) -> list[tuple[str, str]]:
        """The pairs of the method named by ``forget_loss`` (grad_diff and npo: the true answers)."""
        pick = {
            "grad_diff": GradAscent.training_pairs,
            "npo": GradAscent.training_pairs,
            "idk": Idk.training_pairs,
            "lune": Lune.training_pairs,
        }[self.options.forget_loss]
        return pick(self)  # type: ignore[arg-type]  # they read data, config and options only

    def retain_use(self) -> str | None:
        return "its retain term and gate loss"

    def prepare(self, examples: list[Example]) -> None:
        if self.options.forget_loss == "npo":
            Npo.prepare(self, examples)  # type: ignore[arg-type]  # fills self.reference_logps

    def learning_rate(self) -> float:
        return self.options.learning_rate

    def build_optimizer(self) -> tuple[list[Any], Any, Any]:
        params = list(self.interventions.parameters())
        optimizer, scheduler = adamw(
            params, lr=self.learning_rate(), weight_decay=0.0, schedule=warmup_then_constant(self.config.warmup_steps)
        )
        return params, optimizer, scheduler

    def forward(self, batch: dict[str, Any], model: Any = None, *, hidden_layer: int | None = None) -> Any:
        """:meth:`UnlearnTrainer.forward` with the edits at each row's last prompt token (from the labels)."""
        from lune.core.interventions import positions_from_labels

        with self.handle.at(positions_from_labels(batch["labels"], losses.IGNORE_INDEX)):
            return super().forward(batch, model, hidden_layer=hidden_layer)

    def frozen_forward(self, batch: dict[str, Any], *, hidden_layer: int | None = None) -> Any:
        """The base model: the same model with the edits off (no copy)."""
        import torch

        with torch.no_grad(), self.handle.disabled():
            return super().forward(batch, hidden_layer=hidden_layer)

    def loss(self, batch: dict[str, Any], retain_batch: dict[str, Any] | None) -> Any:
        if retain_batch is None:
            raise LuneError("grun needs retain facts (its gate learns to stay shut on them)")
        options: GrunOptions = self.options
        forget_logits = self.forward(batch)
        forget_gates = list(self.handle.gate_logits)
        retain_logits = self.forward(retain_batch)
        retain_gates = list(self.handle.gate_logits)
        labels = batch["labels"]
        if options.forget_loss == "grad_diff":
            forget = losses.grad_ascent_loss(forget_logits, labels)
        elif options.forget_loss == "npo":
            policy = losses.sequence_logprobs(forget_logits, labels)
            forget = options.npo_coeff * losses.npo_loss(policy, self.reference_logps[batch["index"]], options.beta)
        else:  # idk, lune: NLL of the refusal / the negative
            forget = losses.nll(forget_logits, labels)
        retain = losses.nll(retain_logits, retain_batch["labels"])
        return forget + self.retain_weight * retain + options.gate_weight * gate_bce(forget_gates, retain_gates)

    # -- output -------------------------------------------------------------------------------------

    def gate_means(self, questions: list[str]) -> float | None:
        """Mean gate value (over layers and questions) when the model is asked ``questions``."""
        import torch

        from lune.core.prompt_format import render_prompt

        if not questions:
            return None
        values = []
        was_training, side = self.model.training, self.tokenizer.padding_side
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        try:
            for start in range(0, len(questions), self.config.batch_size):
                chunk = [render_prompt(self.tokenizer, q) for q in questions[start : start + self.config.batch_size]]
                batch = self.tokenizer(chunk, return_tensors="pt", padding=True).to(self.device)
                with torch.no_grad():
                    self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                values.append(torch.stack(self.handle.gates).float().mean(0).cpu())
        finally:
            self.model.train(was_training)
            self.tokenizer.padding_side = side
        return round(float(torch.cat(values).mean()), 4)

    def train(self) -> TrainOutcome:
        """Train (the shared loop), then record how far the gates open on forget and retain questions,
        and on the set's held-out paraphrases and attacks (``eval`` rows: never trained on)."""
        outcome = super().train()
        outcome.resources["gate_forget"] = self.gate_means([f["question"] for f in self.data.forget])
        outcome.resources["gate_retain"] = self.gate_means([f["question"] for f in self.data.retain])
        for kind in ("paraphrase", "attack"):  # held-out prompts of the set: does the gate generalise?
            rows = [r for r in self.data.eval if (r.get("prompt_kind") or r.get("kind")) == kind]
            prompts = [r.get("prompt") or r.get("text") for r in rows if r.get("prompt") or r.get("text")]
            outcome.resources[f"gate_heldout_{kind}"] = self.gate_means(prompts)
        return outcome

    def manifest_fields(self) -> dict[str, Any]:
        """Sequential requests: which earlier artefact this one trained on from (and its weights' hash)."""
        from pathlib import Path

        from lune.core.interventions import WEIGHTS_FILE
        from lune.core.model_refs import sha256_of

        start = self.options.start_from
        if not start:
            return {}
        return {"start_from": {"path": str(Path(start).resolve()), "sha256": sha256_of(Path(start) / WEIGHTS_FILE)}}

    def save_output(self, folder: Any, tokenizer: Any) -> str:
        """The interventions artefact (``core.interventions.save``), no model weights."""
        from lune.core.interventions import save

        save(self.interventions, folder)
        return "interventions"
