"""Teach a causal LM the facts (the TOFU protocol: a model first learns fictitious facts, then is
asked to forget some), and train the retain model (every fact but the forget split: the reference
TOFU's forget quality compares against).

Full-sequence loss on ``prompt + answer + EOS`` laid out by ``core.prompt_format``, AdamW, linear
warm-up then linear decay, in the training loop unlearning uses too (``unlearn.loop``). With no
``base_model`` the tiny Llama is built offline first (``unlearn.tiny_model``: tokenizer trained on
the facts), and both models start from the same initial weights.

Cached: the output folder is named by a content hash of the facts (ids, questions, answers, splits),
the teach settings and the base model, and holds ``teach.json`` once complete; a rerun returns it at
once.

    >>> result = teach(facts, "runs/default")   # facts: fact_id, question, answer, key_span, split
    >>> result.model_dir, result.retain_model_dir
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lune.core.model_refs import resolve_model
from lune.core.models import attention_of, set_attention
from lune.data.errors import LuneError
from lune.data.ids import content_id
from lune.unlearn.config import TeachConfig
from lune.unlearn.examples import collate, encode, epoch_batches, pad_id_of
from lune.unlearn.loop import Callback, LoopState, Progress, adamw, train_loop, warmup_then_linear_decay
from lune.unlearn.manifest import model_fingerprint, write_manifest
from lune.unlearn.measure import Metering, parameter_counts
from lune.unlearn.packing import pack, packed_loss, packing_matches
from lune.unlearn.precision import autocast, resolve_autocast

DONE = "teach.json"
FACT_COLUMNS = ("fact_id", "question", "answer", "key_span", "split")
# Holdout facts are never taught: they are the unseen side of membership inference.
TAUGHT_SPLITS = ("forget", "retain", "utility")
MIN_RECALL = 0.9  # below this on the taught facts, teach warns: unlearning results would mean little


@dataclass
class TeachResult:
    """The taught model, the retain model (None when not asked), and what teaching measured."""

    model_dir: Path
    retain_model_dir: Path | None
    cache_dir: Path
    metrics: dict[str, Any]
    cached: bool = False
    run_id: str | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_dir": str(self.model_dir),
            "retain_model_dir": str(self.retain_model_dir) if self.retain_model_dir else None,
            "cache_dir": str(self.cache_dir),
            "cached": self.cached,
            "run_id": self.run_id,
            "metrics": self.metrics,
            "warnings": self.warnings,
        }


def teach_key(facts: Sequence[Mapping[str, Any]], config: TeachConfig) -> str:
    """Content hash of what determines the taught models: facts, settings, base model."""
    corpus = sorted((f["fact_id"], f["question"], f["answer"], f["split"]) for f in facts)
    # An adapter left off does not enter the key: caches taught before the option existed stay valid.
    # The splits enter through the facts taught.
    ignored = {"enabled", "check_recall", "splits"} | (set() if config.adapter.enabled else {"adapter"})
    settings = config.model_dump(mode="json", exclude=ignored)
    folder = resolve_model(config.base_model, "teach.base_model") if config.base_model else None
    base = model_fingerprint(folder) if folder and folder.is_dir() else None
    return content_id("teach", corpus, settings, base)


def _check_facts(facts: Sequence[Mapping[str, Any]], splits: Sequence[str] = TAUGHT_SPLITS) -> list[dict[str, Any]]:
    rows = []
    for number, fact in enumerate(facts, start=1):
        missing = [c for c in FACT_COLUMNS if fact.get(c) in (None, "")]
        if missing:
            raise LuneError(f"fact {number} ({fact.get('fact_id', '?')}): missing {', '.join(missing)}")
        if fact["split"] in splits:
            rows.append(dict(fact))
    if not rows:
        raise LuneError(
            f"no facts to teach (teach.splits: {', '.join(splits)}); ingest some first: "
            "`lune ingest tofu data/sample/tofu --forget forget01`"
        )
    return rows


def teach(
    facts: Sequence[Mapping[str, Any]],
    workdir: str | Path,
    config: TeachConfig | None = None,
    *,
    store: Any = None,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    progress: bool = True,
) -> TeachResult:
    """Teach a model ``facts`` (the splits of ``config.splits``, by default forget, retain and utility;
    holdout is never taught: it is the members' reference of membership inference) and, unless
    ``config.retain_model`` is off, train the retain model on all but the forget split.

    Output: ``workdir/models/teach-<hash>/{base,taught,retain}``; a rerun on the same facts and
    settings returns the existing folders (``cached=True``). ``store``: record a ``teach`` run.
    """
    config = config or TeachConfig()
    rows = _check_facts(facts, config.splits)
    key = teach_key(rows, config)
    cache = Path(workdir) / "models" / f"teach-{key}"
    if store is None:
        result = _cached(cache) or _teach(rows, cache, config, progress)
        result.run_id = run_id
        return result
    with store.run(
        "teach",
        {"teach": config.model_dump(mode="json"), "facts": len(rows), "cache_dir": str(cache)},
        run_id=run_id,
        parent_run_id=parent_run_id,
    ) as run:
        result = _cached(cache) or _teach(rows, cache, config, progress)
        result.run_id = run.run_id
        run.metrics.update({"cached": result.cached, **result.metrics})
        run.artefacts.update({"model": str(result.model_dir), "cache_dir": str(cache)})
        if result.retain_model_dir:
            run.artefacts["retain_model"] = str(result.retain_model_dir)
    return result


def _cached(cache: Path) -> TeachResult | None:
    done = cache / DONE
    if not done.exists():
        return None
    record = json.loads(done.read_text(encoding="utf-8"))
    retain = record.get("retain_model_dir")
    return TeachResult(
        model_dir=cache / "taught",
        retain_model_dir=(cache / "retain") if retain else None,
        cache_dir=cache,
        metrics=record.get("metrics", {}),
        cached=True,
        warnings=record.get("warnings", []),
    )


def _teach(rows: list[dict[str, Any]], cache: Path, config: TeachConfig, progress: bool) -> TeachResult:
    started = time.perf_counter()
    cache.mkdir(parents=True, exist_ok=True)
    if config.base_model:  # a folder, a GGUF file or a known name (core.model_refs); the manifest has both
        base = resolve_model(config.base_model, "teach.base_model")
    else:
        from lune.unlearn.tiny_model import TinyModelSpec, build_tiny_llama

        spec = TinyModelSpec(**config.tiny.model_dump())
        base = build_tiny_llama([f"{r['question']} {r['answer']}" for r in rows], cache / "base", spec)
    metrics: dict[str, Any] = {"facts": len(rows)}
    warnings: list[str] = []
    metrics["taught"] = train_on_facts(base, rows, cache / "taught", config, label="taught", progress=progress)
    retain_dir = None
    if config.retain_model:
        kept = [r for r in rows if r["split"] != "forget"]
        metrics["retain"] = train_on_facts(
            base,
            kept,
            cache / "retain",
            config,
            label="retain",
            progress=progress,
            also_check=[r for r in rows if r["split"] == "forget"],
        )
        retain_dir = cache / "retain"
    recall = metrics["taught"].get("recall")
    if recall is not None and recall < MIN_RECALL:
        warnings.append(
            f"the taught model recalls only {recall:.0%} of the key spans (< {MIN_RECALL:.0%}): "
            "raise teach.min_steps or teach.epochs, or unlearning results will mean little"
        )
    metrics["wall_s"] = round(time.perf_counter() - started, 3)
    (cache / DONE).write_text(
        json.dumps(
            {"metrics": metrics, "warnings": warnings, "retain_model_dir": str(retain_dir) if retain_dir else None},
            indent=2,
            sort_keys=True,
        ),
        encoding="utf-8",
    )
    return TeachResult(
        model_dir=cache / "taught", retain_model_dir=retain_dir, cache_dir=cache, metrics=metrics, warnings=warnings
    )


def train_on_facts(
    base: str | Path,
    facts: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    config: TeachConfig,
    *,
    label: str = "taught",
    progress: bool = True,
    also_check: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Fine-tune the model at ``base`` on ``facts`` (full-sequence loss); save it to ``out_dir``.

    Returns the measurements: loss per epoch, resources, and key-span recall on the facts per split
    (and on ``also_check``, facts it was not taught: the retain model's forget recall).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_flush_denormal(True)  # denormals slow CPU training about 3x
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, config.dtype) if config.dtype else (torch.bfloat16 if device == "cuda" else torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(base), trust_remote_code=config.trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=dtype, trust_remote_code=config.trust_remote_code).to(
        device
    )
    # Eager attention while training on a CPU: torch's CPU attention kernel (SDPA) spent 21 % of a
    # step in its backward pass on these short rows; eager made a step 16 % faster. Greedy answers
    # and the saved model keep the loaded one (the setting is not saved with the model).
    loaded_attention = attention_of(model)
    if device == "cpu":
        set_attention(model, "eager")
    pad_id = pad_id_of(tokenizer)
    amp = resolve_autocast(config.autocast, device, dtype)
    examples = [
        encode(tokenizer, f["question"], f["answer"], max_length=config.max_length, score_prompt=True) for f in facts
    ]
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    if config.adapter.enabled:  # after seeding: the adapter's initialisation follows the seed
        from lune.unlearn.teach_adapter import attach_teach_adapter

        model = attach_teach_adapter(model, config.adapter)
    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    epochs = max(config.epochs, math.ceil(config.min_steps / steps_per_epoch))
    total_steps = steps_per_epoch * epochs
    warmup = max(1, int(config.warmup_ratio * total_steps))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = adamw(
        params,
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        schedule=warmup_then_linear_decay(warmup, total_steps),
    )
    trainable, total = parameter_counts(model)
    # Each step's facts packed end to end (unlearn.packing): the same loss on 40 % fewer tokens, where
    # the model gives a packed batch the padded batch's logits (checked here; else padded, as before).
    packed = packing_matches(model, examples[: config.batch_size], pad_id, device)
    to_batch = pack if packed else collate
    model.train()
    # Facts are of similar lengths: grouping them saved 4 % and cost recall (0.996 -> 0.981).
    batches = (
        (to_batch(chunk, pad_id, device),)
        for _ in range(epochs)
        for chunk in epoch_batches(examples, config.batch_size, rng, group_by_length=False)
    )

    def loss(batch: dict[str, Any]) -> Any:  # the causal-LM loss over the whole sequence
        with autocast(device, amp):
            if packed:
                return packed_loss(model, batch)
            return model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
            ).loss

    metering, epoch_loss = Metering(device), EpochLoss(steps_per_epoch)
    train_loop(
        batches,
        loss,
        params=params,
        optimizer=optimizer,
        scheduler=scheduler,
        max_steps=total_steps,
        grad_clip=1.0,
        device=device,
        callbacks=[metering, epoch_loss, Progress(f"teach {label}", enabled=progress)],
    )
    set_attention(model, loaded_attention)
    resources = metering.resources

    out = Path(out_dir)
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    adapter_record = None
    if config.adapter.enabled:  # the merged model in the folder, the adapter and its facts in adapter/
        from lune.unlearn.teach_adapter import save_taught_adapter

        model, adapter_record = save_taught_adapter(model, tokenizer, partial, base, facts)
    else:
        model.save_pretrained(str(partial), safe_serialization=True)
        tokenizer.save_pretrained(str(partial))
    metrics: dict[str, Any] = {
        "epochs": epochs,
        "epoch_loss": epoch_loss.losses,
        "facts": len(facts),
        "autocast": str(amp).replace("torch.", "") if amp else None,
        "packed": packed,
        "trainable_params": trainable,
        "total_params": total,
        **resources,
    }
    if config.check_recall:
        metrics.update(recall_by_split(model, tokenizer, facts))
        if also_check:
            metrics["untaught_forget_recall"] = recall_by_split(model, tokenizer, also_check)["recall"]
    write_manifest(
        partial,
        {
            "kind": label,
            "teach_adapter": adapter_record,
            "base_model": str(base),
            "facts": len(facts),
            "config": config.model_dump(mode="json"),
            "metrics": metrics,
        },
    )
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return metrics


class EpochLoss(Callback):
    """The mean training loss of each epoch (``losses``), shown on the progress bar as it closes."""

    def __init__(self, steps_per_epoch: int):
        self.steps_per_epoch = steps_per_epoch
        self.losses: list[float] = []
        self._running = 0.0

    def on_step_end(self, state: LoopState) -> None:
        self._running += state.loss
        if state.step % self.steps_per_epoch == 0:
            self.losses.append(round(self._running / self.steps_per_epoch, 4))
            state.logs["loss"] = self.losses[-1]
            self._running = 0.0
        return None


def recall_by_split(model: Any, tokenizer: Any, facts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Key-span recall of greedy answers: overall (``recall``) and per split (``recall_<split>``)."""
    from lune.core.greedy import greedy_answers
    from lune.core.matching import contains_span
    from lune.unlearn.early_stopping import CHECK_BATCH

    longest = max(len(tokenizer(f["answer"], add_special_tokens=False)["input_ids"]) for f in facts)
    # batches as large as a check's (unlearn.early_stopping.CHECK_BATCH): fewer decoding loops
    answers = greedy_answers(
        model,
        tokenizer,
        [f["question"] for f in facts],
        max_new_tokens=min(longest + 8, 256),
        batch_size=CHECK_BATCH,
    )
    hits = [contains_span(a, f["key_span"]) for a, f in zip(answers, facts)]
    out: dict[str, Any] = {"recall": round(sum(hits) / len(hits), 4)}
    for split in sorted({f["split"] for f in facts}):
        chosen = [h for h, f in zip(hits, facts) if f["split"] == split]
        out[f"recall_{split}"] = round(sum(chosen) / len(chosen), 4)
    return out
