"""The training loop teach and unlearn share (unlearn/loop.py): steps, callbacks, schedules."""

from __future__ import annotations

import pytest
import torch

from lune.unlearn.loop import Callback, LoopState, adamw, train_loop, warmup_then_constant, warmup_then_linear_decay


class Recorder(Callback):
    """Writes down what it saw; stops at ``stop_at``."""

    def __init__(self, stop_at: int | None = None):
        self.stop_at, self.events = stop_at, []

    def on_train_begin(self, state: LoopState) -> None:
        self.events.append("begin")

    def on_step_end(self, state: LoopState) -> str | None:
        self.events.append(state.step)
        return "enough" if state.step == self.stop_at else None

    def on_train_end(self, state: LoopState) -> None:
        self.events.append("end")


def regression(steps: int, *callbacks: Callback, schedule=lambda s: 1.0, failing_step: int | None = None):
    """y = 2x fitted by one weight, lr 0.1: the loop on something small enough to check by hand."""
    weight = torch.nn.Parameter(torch.zeros(1))
    x = torch.tensor([[1.0], [2.0]])
    batch = {"x": x, "attention_mask": torch.ones(2, 3, dtype=torch.long)}
    optimizer, scheduler = adamw([weight], lr=0.1, weight_decay=0.0, schedule=schedule)
    seen = []

    def loss(b):
        seen.append(len(seen) + 1)
        if len(seen) == failing_step:
            raise RuntimeError("broken batch")
        return ((b["x"] * weight - 2 * b["x"]) ** 2).mean()

    state = train_loop(
        iter([(batch,)] * steps),
        loss,
        params=[weight],
        optimizer=optimizer,
        scheduler=scheduler,
        max_steps=steps,
        grad_clip=1.0,
        device="cpu",
        callbacks=callbacks,
    )
    return state, weight, optimizer


def test_the_loop_steps_counts_and_calls_back_in_order() -> None:
    recorder = Recorder()
    state, weight, _ = regression(5, recorder)
    assert recorder.events == ["begin", 1, 2, 3, 4, 5, "end"]
    assert state.step == 5 and state.stop_reason is None and state.tokens == 6  # attention-mask sum
    assert 0 < weight.item() < 2 and state.loss < 10.0  # moved towards 2 from 0 (initial loss 10)
    assert state.train_s >= state.seconds > 0


def test_a_callback_stops_the_loop_and_every_callback_still_ends() -> None:
    first, second = Recorder(stop_at=2), Recorder()
    state, _, _ = regression(10, first, second)
    assert state.step == 2 and state.stop_reason == "enough"
    assert second.events == ["begin", 1, 2, "end"]  # the other callbacks saw the stopping step too


def test_callbacks_end_when_a_step_raises() -> None:
    recorder = Recorder()
    with pytest.raises(RuntimeError, match="broken batch"):
        regression(5, recorder, failing_step=3)
    assert recorder.events == ["begin", 1, 2, "end"]


def test_unlearning_schedule_warms_up_then_stays() -> None:
    assert [warmup_then_constant(0)(s) for s in range(3)] == [1.0, 1.0, 1.0]
    assert [warmup_then_constant(3)(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_teaching_schedule_warms_up_then_decays_linearly() -> None:
    # w = 4, T = 10: (s + 1) / 4 up to step 3, then (10 - s) / 6
    values = [warmup_then_linear_decay(4, 10)(s) for s in range(11)]
    assert values == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0.0])


def test_the_scheduler_applies_the_factor_from_the_first_step() -> None:
    _, _, optimizer = regression(2, schedule=warmup_then_constant(3))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.75)  # after two steps: factor at step 2
