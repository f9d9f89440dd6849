"""Early stopping of unlearning on forget and retain recall (LUNE's protocol).

Every k steps the model answers the forget questions and a fixed set of retain questions greedily
(``core.greedy``); recall is the share of answers that still state the key span
(``core.matching.contains_span`` by default). From them:

- ``USR = 1 - forget recall`` (unlearning success rate);
- ``GUR = retain recall now / retain recall before training`` (general utility retention; 1.0 when
  nothing was recalled before, since then there is nothing to lose).

Rules, checked in this order at each check:

1. a check with ``GUR >= 1 - tolerance`` at least as good as the best so far (higher USR, then
   higher GUR; a tie goes to the later check, which trained longer) becomes the best; the trainer
   keeps a copy of its weights;
2. ``GUR < 1 - tolerance``: stop, and go back to the best check (never past the tolerance);
3. ``USR >= target``: stop here (it is the best: rule 1 just took it);
4. otherwise train on; at the step limit, go back to the best check.

The state before training (step 0) is the first best, so a run that cannot unlearn within the
tolerance ends with an unchanged model and says so (``stop_reason``), instead of a damaged one.

:class:`EarlyStopping` holds the rules (pure bookkeeping); :class:`RecallChecks` is the training
loop's callback that measures at the checks, keeps the best check's weights and puts them back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lune.core.greedy import greedy_answers
from lune.core.matching import contains_span
from lune.unlearn.loop import Callback, LoopState
from lune.unlearn.lora import restore_state, trainable_state

Matcher = Callable[[str, str], bool]
# Questions answered in one batch at a check. Decoding a token of a small model costs about the same
# for 32, 64 or 128 short prompts, so a check asks its forget and retain questions together, in as
# few batches as it can: batches of 32 -> 64 made a check of 104 questions 25 % faster, one pass of
# 104 instead of two (40 + 64) another 13 % (same answers; RecallChecks.measure).
CHECK_BATCH = 128


@dataclass(frozen=True)
class Check:
    """Recall measured at one step (step 0: before training)."""

    step: int
    forget_recall: float
    retain_recall: float | None
    usr: float
    gur: float
    loss: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class Probe:
    """Questions with their key spans, answered greedily to measure recall."""

    questions: list[str]
    key_spans: list[str]
    fact_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.questions)

    def recall(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_new_tokens: int,
        match: Matcher = contains_span,
        batch_size: int = CHECK_BATCH,
    ) -> float | None:
        """Share of questions whose greedy answer states the key span (None with no questions)."""
        if not self.questions:
            return None
        answers = greedy_answers(model, tokenizer, self.questions, max_new_tokens=max_new_tokens, batch_size=batch_size)
        return self.share(answers, match)

    def share(self, answers: Sequence[str], match: Matcher = contains_span) -> float | None:
        """Share of ``answers`` (one per question, in order) that state their key span; None with no questions."""
        if not self.questions:
            return None
        return sum(match(a, k) for a, k in zip(answers, self.key_spans, strict=True)) / len(self.questions)


def coarse_monitor_warning(gur_tolerance: float, monitored_retain: int) -> str | None:
    """A warning when one lost retain fact already exceeds the tolerance, else None.

    One of ``n`` monitored retain facts moves GUR by ``1/n``; with ``gur_tolerance < 1/n`` the run
    stops at the first monitored fact it loses, and keeps a check from before it (on SmolLM2 TOFU,
    10 monitored facts at the default 0.05 stopped two of three sweep points early).

    >>> coarse_monitor_warning(0.05, 10) is not None, coarse_monitor_warning(0.05, 40)
    (True, None)
    """
    if monitored_retain <= 0 or gur_tolerance >= 1.0 / monitored_retain - 1e-9:
        return None
    return (
        f"gur_tolerance {gur_tolerance:g} is under one of the {monitored_retain} monitored retain facts "
        f"(1/{monitored_retain} = {1 / monitored_retain:.3g}): the run stops at the first monitored retain "
        "fact it loses; monitor more retain facts (monitor_retain) or raise gur_tolerance to allow that"
    )


class EarlyStopping:
    """The stopping rules of the module docstring; ``update`` returns why to stop, or None."""

    USR_TARGET = "usr_target"
    GUR_TOLERANCE = "gur_tolerance"
    MAX_STEPS = "max_steps"

    def __init__(self, usr_target: float, gur_tolerance: float):
        self.usr_target = usr_target
        self.gur_tolerance = gur_tolerance
        self.history: list[Check] = []
        self.best: Check | None = None
        self.improved = False  # did the last update take a new best? (the trainer then keeps its weights)
        self._retain_before: float | None = None

    def start(self, forget_recall: float, retain_recall: float | None) -> Check:
        """Record the state before training (step 0)."""
        self._retain_before = retain_recall
        check = self._check(0, forget_recall, retain_recall, None)
        self.history.append(check)
        self.best = check
        self.improved = True
        return check

    def gur(self, retain_recall: float | None) -> float:
        if retain_recall is None or not self._retain_before:
            return 1.0
        return retain_recall / self._retain_before

    def _check(self, step: int, forget_recall: float, retain_recall: float | None, loss: float | None) -> Check:
        return Check(step, forget_recall, retain_recall, 1.0 - forget_recall, self.gur(retain_recall), loss)

    def within_tolerance(self, check: Check) -> bool:
        return check.gur >= 1.0 - self.gur_tolerance - 1e-9

    def update(
        self, step: int, forget_recall: float, retain_recall: float | None, loss: float | None = None
    ) -> str | None:
        if self.best is None:
            raise RuntimeError("EarlyStopping.start must record the state before training first")
        check = self._check(step, forget_recall, retain_recall, loss)
        self.history.append(check)
        self.improved = self.within_tolerance(check) and (check.usr, check.gur) >= (self.best.usr, self.best.gur)
        if self.improved:
            self.best = check
        if not self.within_tolerance(check):
            return self.GUR_TOLERANCE
        if check.usr >= self.usr_target:
            return self.USR_TARGET
        return None

    @property
    def latest(self) -> Check | None:
        return self.history[-1] if self.history else None

    def summary(self) -> list[dict[str, Any]]:
        return [c.as_dict() for c in self.history]


class RecallChecks(Callback):
    """Early stopping as a loop callback: the state before training, then a check every
    ``eval_every`` steps and at the last step; the best check's trainable weights are copied and
    put back at the end when a later check was worse. ``time_to_target``: when USR first reached
    the target (step, training and wall time, GUR), else None."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        forget: Probe,
        retain: Probe,
        *,
        usr_target: float,
        gur_tolerance: float,
        eval_every: int,
        max_new_tokens: int,
    ):
        self.model, self.tokenizer, self.forget, self.retain = model, tokenizer, forget, retain
        self.rules = EarlyStopping(usr_target, gur_tolerance)
        self.eval_every, self.max_new_tokens = eval_every, max_new_tokens
        self.best_state: dict[str, Any] = {}
        self.time_to_target: dict[str, Any] | None = None
        self.answered = 0  # questions answered greedily over all checks (the checks' cost)

    def measure(self) -> tuple[float, float | None]:
        """(forget recall, retain recall) of the model now: both probes' questions answered in one
        greedy pass (one decoding loop per batch, not one per probe)."""
        questions = self.forget.questions + self.retain.questions
        answers = greedy_answers(
            self.model, self.tokenizer, questions, max_new_tokens=self.max_new_tokens, batch_size=CHECK_BATCH
        )
        self.answered += len(questions)
        f = self.forget.share(answers[: len(self.forget)])
        r = self.retain.share(answers[len(self.forget) :])
        return float(f if f is not None else 0.0), r

    def on_train_begin(self, state: LoopState) -> None:
        self.rules.start(*self.measure())
        self.best_state = trainable_state(self.model)

    def on_step_end(self, state: LoopState) -> str | None:
        reason = None
        if state.step % self.eval_every == 0 or state.step == state.max_steps:
            reason = self.rules.update(state.step, *self.measure(), loss=state.loss)
            if self.rules.improved:
                self.best_state = trainable_state(self.model)
            latest = self.rules.latest
            if self.time_to_target is None and latest.usr >= self.rules.usr_target:
                self.time_to_target = {
                    "step": state.step,
                    "train_s": round(state.train_s, 3),
                    "train_cpu_s": round(state.train_cpu_s, 3),
                    "wall_s": round(time.perf_counter() - state.started, 3),
                    "gur": round(latest.gur, 6),
                }
        state.logs.update(loss=state.loss, USR=self.rules.latest.usr, GUR=self.rules.latest.gur)
        return reason

    def on_train_end(self, state: LoopState) -> None:
        if self.rules.best is not self.rules.latest:
            restore_state(self.model, self.best_state)


def pick_monitor(items: Sequence[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """A fixed, order-independent subset of at most ``limit`` facts (by fact id hash): the same
    facts are checked at every step and in every run on the same data."""
    from lune.data.ids import content_id

    ranked = sorted(items, key=lambda f: content_id("monitor", f["fact_id"]))
    return ranked[:limit]
