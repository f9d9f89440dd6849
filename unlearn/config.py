"""Settings of the teach and unlearn stages (sections ``teach:`` and ``unlearn:`` of the pipeline config).

Every field carries its help text; ``lune unlearn`` / ``lune teach`` options map onto these fields one
to one, and the resolved section is saved in the run's ``runs`` row and in the adapter's
``manifest.json``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from lune.core.config_base import ConfigModel
from lune.unlearn.methods import DEFAULT_METHOD, METHODS
from lune.unlearn.precision import Autocast

METHOD_NAMES = tuple(METHODS)
MethodName = Literal[METHOD_NAMES]  # type: ignore[valid-type]  # the registered methods' names
# One member per method: its own settings, told apart by the `method` tag, which UnlearnConfig sets
# from `unlearn.method` (a config never needs to write it).
AnyMethodOptions = Annotated[
    Union[tuple(m.options_section for m in METHODS.values())],  # noqa: UP007
    Field(discriminator="method"),
]


class TinyModelSettings(ConfigModel):
    """Shape of the tiny Llama built offline when no base model is given (see unlearn/tiny_model.py)."""

    vocab_size: int = Field(4096, ge=300, description="byte-level BPE vocabulary trained on the facts")
    hidden_size: int = Field(256, ge=16, description="model width")
    intermediate_size: int = Field(688, ge=16, description="MLP width")
    num_hidden_layers: int = Field(4, ge=1, description="decoder layers")
    num_attention_heads: int = Field(4, ge=1, description="attention heads")
    seed: int = Field(0, description="initialisation seed")


class TeachAdapter(ConfigModel):
    """Teach into a LoRA adapter instead of every weight (the setting LLMEraser corrects; unlearn/teach_adapter.py)."""

    enabled: bool = Field(False, description="teach a LoRA adapter on the frozen base (the taught folder is merged)")
    rank: int = Field(8, ge=1, description="adapter rank r")
    alpha: float = Field(32.0, gt=0, description="scaling numerator: the update is (alpha / r) * B A")
    # No dropout by default: the influence estimate's Hessian is then a function of the weights alone.
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="module names to adapt; 'all-linear': every attention and MLP projection"
    )
    # A randomly initialised tiny base cannot memorise facts through LoRA alone (cross-entropy stays
    # near 5); with its output head trainable too it does (measured: docs/llmeraser.md).
    modules_to_save: list[str] = Field(
        ["lm_head"], description="modules trained in full beside the adapter (the tiny model needs its output head)"
    )


class TeachConfig(ConfigModel):
    """Teaching a model the facts before unlearning them (the TOFU protocol), and the retain model."""

    enabled: bool = Field(True, description="teach a model the facts before unlearning (TOFU protocol)")
    base_model: str | None = Field(
        None,
        description="causal LM to teach: a Hugging Face folder, a GGUF file or a known name (docs/models.md); "
        "none: build the tiny Llama offline (tokenizer trained on the facts)",
    )
    tiny: TinyModelSettings = Field(default_factory=TinyModelSettings, description="shape of the tiny model")
    # 18 epochs: measured on the 261-fact sample, 15 epochs reach 0.92 key-span recall and 20 reach
    # 1.0 (docs/unlearn.md); each epoch is about 4 s on 2 cores.
    epochs: int = Field(18, ge=1, description="passes over the facts (raised to reach min_steps)")
    # A fixed epoch count gives a small corpus few steps: the retain model (fewer facts) and small
    # test corpora then recall less. 300 steps is what the 261-fact sample needs at batch 16.
    min_steps: int = Field(300, ge=0, description="at least this many optimiser steps per model (more epochs)")
    learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate (linear decay after warm-up)")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="share of steps with a linear warm-up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    batch_size: int = Field(16, ge=1, description="facts per step")
    max_length: int = Field(256, ge=8, description="tokens per fact (longer ones are cut)")
    seed: int = Field(0, description="shuffling seed")
    retain_model: bool = Field(
        True,
        description="also train the retain model (every fact but the forget split): "
        "the reference of TOFU's forget quality",
    )
    trust_remote_code: bool = Field(False, description="let transformers run code shipped with base_model")
    # bfloat16 weights with plain AdamW lose updates smaller than bfloat16's resolution (about 1/128
    # of a weight): with lr 1e-5 on a 7B model most of them. float32 where memory allows.
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="weights dtype while teaching (default: float32 on CPU, bfloat16 on GPU)"
    )
    autocast: Autocast = Field(
        "auto",
        description="bfloat16 autocast of the training steps over float32 weights "
        "(auto: on CPUs with native bfloat16, see unlearn/precision.py)",
    )
    check_recall: bool = Field(True, description="measure key-span recall on the taught facts after training")
    # A pretrained model already knows its utility facts (real authors, world facts): teaching them
    # again measures nothing, and fine-tuning on them hides what unlearning does to real knowledge.
    splits: list[Literal["forget", "retain", "utility"]] = Field(
        ["forget", "retain", "utility"],
        min_length=1,
        description="splits the model is taught (holdout never is); drop utility for a pretrained model, "
        "whose utility facts are what it already knows",
    )
    adapter: TeachAdapter = Field(
        default_factory=TeachAdapter, description="teach into a LoRA adapter (recorded with its training set)"
    )


class LoraSettings(ConfigModel):
    """The LoRA adapters LUNE and the LoRA baselines train (the backbone stays frozen)."""

    rank: int = Field(16, ge=1, description="adapter rank r (LUNE: 16)")
    alpha: float = Field(32.0, gt=0, description="scaling numerator: the update is (alpha / r) * B A")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="module names to adapt; 'all-linear': every attention and MLP projection"
    )
    layers: list[int] | None = Field(
        None,
        description="decoder layers (0-based) to adapt, e.g. [2, 3] for the upper half of a 4-layer model; "
        "null: every layer (RMU: its own layers, narrowed to these)",
    )

    @field_validator("layers")
    @classmethod
    def _layers_distinct(cls, layers: list[int] | None) -> list[int] | None:
        if layers is None:
            return None
        if not layers or any(layer < 0 for layer in layers) or len(set(layers)) != len(layers):
            raise ValueError(f"layers must be distinct non-negative layer indices, got {layers}")
        return sorted(layers)


class UnlearnConfig(ConfigModel):
    """One unlearning run: the method (a loss), its data, LoRA, optimisation and early stopping."""

    method: MethodName = Field(DEFAULT_METHOD, description="the unlearning method (unlearn/methods/<name>.py)")
    method_options: AnyMethodOptions = Field(
        default_factory=METHODS[DEFAULT_METHOD].options_section,
        description="settings of the chosen method only (its own table below; an unknown key is an error)",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="adapters (every method but full_ft)")
    learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate (constant after warm-up)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    batch_size: int = Field(16, ge=1, description="training rows per step")
    max_steps: int = Field(300, ge=1, description="upper bound on optimiser steps")
    max_length: int = Field(256, ge=8, description="tokens per prompt + target (longer ones are cut)")
    grad_clip: float = Field(1.0, gt=0, description="gradient-norm clipping")
    seed: int = Field(0, description="seed of shuffling, dropout and adapter initialisation")
    prompt_kinds: list[str] = Field(
        ["question", "paraphrase", "attack"], description="train prompts used (curated prompt_kind values)"
    )
    retain_anchor: Literal["none", "nll", "kl"] = Field(
        "none", description="keep retained facts: NLL on retain facts, or KL to the frozen model on them"
    )
    retain_weight: float = Field(
        1.0, ge=0, description="weight of the retain anchor (and of the retain terms of grad_diff, simnpo, rmu)"
    )
    retain_batch_size: int = Field(8, ge=1, description="retain facts per step (anchor; grad_diff, simnpo, rmu)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward (saves memory)")
    eval_every: int = Field(10, ge=1, description="early stopping: measure forget / retain recall every k steps")
    usr_target: float = Field(0.9, gt=0, le=1, description="early stopping: stop once USR reaches this")
    # The paper's tolerance is 0.5 points of GUR. With n retain probes one lost fact moves GUR by
    # 1/n (2.5 points at n = 40), so a 0.005 tolerance would stop at the first lost fact on a small
    # monitor set. 0.05 allows about two of 40; use 0.005 with >= 200 monitor facts (docs/unlearn.md).
    gur_tolerance: float = Field(
        0.05, ge=0, lt=1, description="early stopping: largest allowed drop of GUR (retain recall now / before) below 1"
    )
    monitor_forget: int = Field(200, ge=1, description="forget questions checked at each early-stopping check")
    monitor_retain: int = Field(
        64,
        ge=1,
        description="retain facts checked at each early-stopping check (at "
        "most half of them when an anchor needs the rest); they are held out of the "
        "retain anchor so GUR is not measured on trained facts",
    )
    max_new_tokens: int = Field(48, ge=1, description="greedy answer length at the checks")
    merge: bool = Field(False, description="also write the base model with the adapter merged in")
    trust_remote_code: bool = Field(False, description="let transformers run code shipped with the model")
    device: str | None = Field(None, description="torch device (default: cuda when available, else cpu)")
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="weights dtype (default: float32 on CPU, bfloat16 on GPU)"
    )
    autocast: Autocast = Field(
        "auto",
        description="bfloat16 autocast of the training steps over float32 weights "
        "(auto: on CPUs with native bfloat16, see unlearn/precision.py)",
    )

    # Baselines with unbounded losses (gradient ascent, NPO) or targets that fit every prompt (idk)
    # wreck retain facts within a few steps at LUNE's learning rate: measured on the embedded
    # default, all three crossed the GUR tolerance before the first check at 1e-3 and the comparison
    # showed three copies of the base model. Settings per method keep one config for a comparison.
    per_method: dict[str, dict[str, Any]] = Field(
        {},
        description="settings that differ by method, applied over the others when that method runs "
        "(e.g. {grad_ascent: {learning_rate: 1.0e-4, eval_every: 5}}); a nested section given here "
        "replaces the whole section",
    )

    @model_validator(mode="before")
    @classmethod
    def _options_of_the_method(cls, data: Any) -> Any:
        """Tag ``method_options`` with ``method`` (the union's discriminator): the options are read as
        that method's. Options given for another method are an error, not silently dropped."""
        if not isinstance(data, dict):
            return data
        method = data.get("method", DEFAULT_METHOD)
        if method not in METHODS:
            return {k: v for k, v in data.items() if k != "method_options"}  # `method`'s own error says it
        options = data.get("method_options", {})
        if isinstance(options, ConfigModel) and not hasattr(options, "method"):
            options = options.model_dump()  # a method's own Options model, untagged
        if isinstance(options, dict):
            tag, options = options.get("method", method), {**options, "method": method}
        else:  # a tagged section, kept as it is (assignment validation passes the current one)
            tag = getattr(options, "method", method)
        if tag != method:
            raise ValueError(f"method_options are for method {tag!r}, not {method!r} (the method they are read as)")
        return {**data, "method_options": options}

    @model_validator(mode="after")
    def _consistent(self) -> UnlearnConfig:
        METHODS[self.method].check_config(self)
        for method, override in self.per_method.items():
            if method not in METHODS:
                raise ValueError(f"per_method: unknown method {method!r}; choose from {', '.join(METHODS)}")
            fixed = {"method", "per_method"} & set(override)
            if fixed:
                raise ValueError(f"per_method.{method}: {', '.join(sorted(fixed))} cannot be set per method")
            self.for_method(method)  # a bad value fails when the config is read, not after teaching
        return self

    def for_method(self, method: str | None = None) -> UnlearnConfig:
        """The settings a run of ``method`` (default: ``self.method``) uses: these, with
        ``per_method[method]`` applied over them (invalid values raise ValueError naming the method).
        ``method_options`` carry over only to the same method (another method's would not fit)."""
        from pydantic import ValidationError

        method = method or self.method
        exclude = {"per_method"} if method == self.method else {"per_method", "method_options"}
        settings = {**self.model_dump(exclude=exclude), **self.per_method.get(method, {}), "method": method}
        try:
            return UnlearnConfig.model_validate(settings)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
            raise ValueError(f"per_method.{method}: {problems}") from None
