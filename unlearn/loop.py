"""The training loop teach and unlearn share: batches in, optimiser steps out, callbacks around it.

Per step: the next batch (a tuple of collated batches: teach's facts; unlearn's training rows and,
when the run needs them, retain facts), the caller's loss on it, backward, gradient-norm clipping,
the optimiser step, the learning-rate schedule; then every callback's ``on_step_end``, any of which
may stop the run by returning a reason. The loop knows no method and no stopping rule: early stopping
(``unlearn.early_stopping.RecallChecks``), metering (``unlearn.measure.Metering``) and the
progress bar (:class:`Progress`) are callbacks.

    >>> state = train_loop(batches, loss_fn, params=params, optimizer=opt, scheduler=sched, max_steps=300,
    ...                    grad_clip=1.0, device=device, callbacks=[Metering("cpu"), Progress("teach")])
    >>> state.step, state.stop_reason

Mixed precision is the loss function's: it runs each model forward under ``precision.autocast``,
one forward per autocast block. Not the whole loss in one block: autocast keeps the bfloat16 copy
of a trainable weight for the length of a block, so two forwards in one (a method's batch and the
retain anchor's) share it and add their gradients up in bfloat16; measured, that changed the
trained adapters.

Learning-rate schedules are ``torch.optim.lr_scheduler.LambdaLR`` over the pure functions below.
``transformers.get_scheduler`` was checked and not used: its warm-up starts at 0 (step 0 takes no
step at all), lune's at ``1 / warmup``; the same numbers are what keeps trained models, and the
results table of ``make demo``, unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

Batch = tuple[dict[str, Any], ...]


@dataclass
class LoopState:
    """What the loop has done so far. Callbacks read it; what they want shown goes into ``logs``."""

    max_steps: int
    step: int = 0
    loss: float | None = None  # of the last step
    tokens: int = 0  # of the last step (attention-mask sum over its batches)
    seconds: float = 0.0  # wall time of the last step, batch building included
    cpu_seconds: float = 0.0  # process CPU time of the last step (all threads)
    train_s: float = 0.0  # sums over the steps so far
    train_cpu_s: float = 0.0
    started: float = 0.0  # time.perf_counter() when the first step began
    stop_reason: str | None = None  # the first reason a callback gave; None: ran all max_steps
    logs: dict[str, float] = field(default_factory=dict)


class Callback:
    """Hooks around :func:`train_loop`; each default does nothing."""

    def on_train_begin(self, state: LoopState) -> None:
        """Before the first step."""

    def on_step_end(self, state: LoopState) -> str | None:
        """After each optimiser step: a reason to stop, or None to go on."""
        return None

    def on_train_end(self, state: LoopState) -> None:
        """After the last step, also when a step raised."""


class Progress(Callback):
    """A tqdm bar over the steps, showing the callbacks' ``logs`` (loss, USR, ...)."""

    def __init__(self, description: str, *, enabled: bool = True):
        self.description, self.enabled = description, enabled
        self.bar: Any = None

    def on_train_begin(self, state: LoopState) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, desc=self.description, disable=not self.enabled, leave=False)

    def on_step_end(self, state: LoopState) -> None:
        self.bar.update(1)
        if state.logs:
            self.bar.set_postfix({k: f"{v:.3f}" if k == "loss" else f"{v:.2f}" for k, v in state.logs.items()})
        return None

    def on_train_end(self, state: LoopState) -> None:
        if self.bar is not None:
            self.bar.close()


def tokens_of(batch: Batch) -> int:
    """Tokens a step processed: the attention-mask sum over its batches."""
    return sum(int(b["attention_mask"].sum()) for b in batch)


def train_loop(
    batches: Iterator[Batch],
    loss_fn: Callable[..., Any],
    *,
    params: Sequence[Any],
    optimizer: Any,
    scheduler: Any,
    max_steps: int,
    grad_clip: float,
    device: Any,
    callbacks: Sequence[Callback] = (),
) -> LoopState:
    """Run up to ``max_steps`` optimiser steps of ``loss_fn(*next(batches))`` over ``params``.

    Callbacks run in the order given. Returns the final :class:`LoopState`.
    """
    state = LoopState(max_steps=max_steps)
    for callback in callbacks:
        callback.on_train_begin(state)
    state.started = time.perf_counter()
    try:
        for step in range(1, max_steps + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            batch = next(batches)
            loss = optimizer_step(
                loss_fn,
                batch,
                params=params,
                optimizer=optimizer,
                scheduler=scheduler,
                grad_clip=grad_clip,
                device=device,
            )
            state.step, state.loss, state.tokens = step, float(loss.detach()), tokens_of(batch)
            state.seconds, state.cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
            state.train_s += state.seconds
            state.train_cpu_s += state.cpu_seconds
            reasons = [callback.on_step_end(state) for callback in callbacks]
            state.stop_reason = next((r for r in reasons if r), None)
            if state.stop_reason:
                break
    finally:
        for callback in callbacks:
            callback.on_train_end(state)
    return state


def optimizer_step(
    loss_fn: Callable[..., Any],
    batch: Batch,
    *,
    params: Sequence[Any],
    optimizer: Any,
    scheduler: Any,
    grad_clip: float,
    device: Any,
) -> Any:
    """One step: ``loss_fn(*batch)``, backward, gradient-norm clipping, optimiser and schedule. -> the loss."""
    import torch

    loss = loss_fn(*batch)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()  # step times must include the GPU work
    return loss


def warmup_then_constant(warmup_steps: int) -> Callable[[int], float]:
    """Unlearning's learning-rate factor at (0-based) step ``s``: ``min(1, (s + 1) / (warmup_steps + 1))``.

    No warm-up (0) is the full rate from the first step; with ``w`` steps it rises as 1/(w+1), 2/(w+1), ...
    """
    return lambda s: min(1.0, (s + 1) / (warmup_steps + 1))


def warmup_then_linear_decay(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Teaching's learning-rate factor at (0-based) step ``s``:
    ``min((s + 1) / w, max(0, (T - s) / max(1, T - w)))`` with ``w = warmup_steps >= 1``, ``T = total_steps``:
    a linear rise to 1 at step ``w - 1``, then a linear decay that would reach 0 at step ``T``."""
    return lambda s: min((s + 1) / warmup_steps, max(0.0, (total_steps - s) / max(1, total_steps - warmup_steps)))


def adamw(
    params: Sequence[Any], *, lr: float, weight_decay: float, schedule: Callable[[int], float]
) -> tuple[Any, Any]:
    """AdamW over ``params`` and a LambdaLR scheduler applying ``schedule`` to its learning rate."""
    import torch

    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
