"""The training behind the relearning attack: unlearn's training loop lent to the evaluate stage.

Evaluation does not import the unlearn stage (tests/test_layers.py), so the relearning attack
(``evaluation/attacks/relearning.py``) takes its fine-tuning as a function; this is it, and
``flows/evaluate.py`` hands it over. It is wiring only: examples, batches, LoRA, AdamW and the loop
are unlearn's (``unlearn.examples``, ``unlearn.lora``, ``unlearn.loop``).

    >>> relearn(merged_model, tokenizer, [("Who wrote X?", "Y wrote X.")], settings, measure)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lune.evaluation.attacks.relearning import Measure
from lune.evaluation.config import RelearningAttackSettings
from lune.unlearn.loop import Callback, LoopState

MAX_LENGTH = 256  # tokens per question + answer, as unlearning's default


class Checkpoints(Callback):
    """Calls ``measure(model, step)`` after each step count of ``steps``."""

    def __init__(self, model: Any, steps: Sequence[int], measure: Measure):
        self.model, self.steps, self.measure = model, set(steps), measure

    def on_step_end(self, state: LoopState) -> None:
        if state.step in self.steps:
            self.measure(self.model, state.step)
        return None


def relearn(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    settings: RelearningAttackSettings,
    measure: Measure,
) -> None:
    """Fine-tune ``model`` (a plain model the caller may change: the attack passes a merged copy) on
    ``pairs`` (question, answer; the answer and EOS scored) for ``max(settings.steps)`` steps of
    ``settings.batch_size`` rows, with a fresh LoRA adapter (``mode: lora``) or every weight
    (``full``); ``measure(model, s)`` before the first step (s = 0) and after each of ``settings.steps``."""
    import torch

    from lune.unlearn.config import LoraSettings
    from lune.unlearn.examples import collate, encode, endless_batches, pad_id_of
    from lune.unlearn.loop import adamw, train_loop, warmup_then_constant
    from lune.unlearn.lora import attach_lora

    if not pairs:
        raise ValueError("relearn: no (question, answer) pairs to fine-tune on")
    torch.manual_seed(settings.seed)
    if settings.mode == "lora":
        lora = LoraSettings(rank=settings.lora_rank, alpha=settings.lora_alpha, dropout=0.0)
        model = attach_lora(model, lora, seed=settings.seed)
    else:
        for param in model.parameters():
            param.requires_grad_(True)
    device = next(model.parameters()).device
    pad_id = pad_id_of(tokenizer)
    examples = [encode(tokenizer, q, a, max_length=MAX_LENGTH, index=i) for i, (q, a) in enumerate(pairs)]
    batches = (
        (collate(chunk, pad_id, device),) for chunk in endless_batches(examples, settings.batch_size, settings.seed)
    )

    def loss(batch: dict[str, Any]) -> Any:  # the causal-LM loss on the answer tokens
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = adamw(params, lr=settings.learning_rate, weight_decay=0.0, schedule=warmup_then_constant(0))
    measure(model, 0)
    model.train()
    try:
        train_loop(
            batches,
            loss,
            params=params,
            optimizer=optimizer,
            scheduler=scheduler,
            max_steps=max(settings.steps),
            grad_clip=1.0,
            device=device,
            callbacks=[Checkpoints(model, settings.steps, measure)],
        )
    finally:
        model.eval()
