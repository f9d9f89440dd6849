"""What a training run costs: parameters, peak memory, step time, tokens per second, wall time.

Peak memory: on a GPU, ``torch.cuda.max_memory_allocated`` (reset at the start). On the CPU, the
process's resident set size sampled every 20 ms by a background thread, reported as the peak and as
the rise above the RSS at the start (what the run itself needed: a test process that already holds
other models would otherwise report them too). tracemalloc does not see torch's allocator, and
``ru_maxrss`` is the peak of the whole process life, useless for two runs side by side.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from lune.unlearn.loop import Callback, LoopState


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts of ``model``."""
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


@dataclass
class RunMeter:
    """Times steps and samples memory between ``start()`` and ``stop()``.

    >>> meter = RunMeter(device="cpu").start(); ...; meter.step(seconds, tokens); metrics = meter.stop()
    """

    device: str = "cpu"
    interval_s: float = 0.02
    step_times: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    tokens: int = 0
    _rss_start: int = 0
    _rss_peak: int = 0
    _started: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RunMeter:
        import psutil

        self._process = psutil.Process()
        self._rss_start = self._rss_peak = self._process.memory_info().rss
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._cuda_start = torch.cuda.memory_allocated()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="lune-rss-sampler", daemon=True)
        self._thread.start()
        self._started = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            rss = self._process.memory_info().rss
            if rss > self._rss_peak:
                self._rss_peak = rss

    def step(self, seconds: float, tokens: int, cpu_seconds: float = 0.0) -> None:
        """Record one optimiser step: its duration, the tokens it processed, the process CPU time it took."""
        self.step_times.append(seconds)
        self.cpu_s += cpu_seconds
        self.tokens += tokens

    def stop(self) -> dict[str, Any]:
        """Stop sampling; return the measurements (times in seconds, memory in MiB)."""
        wall = time.perf_counter() - self._started
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._rss_peak = max(self._rss_peak, self._process.memory_info().rss)
        train_time = sum(self.step_times)
        steps = len(self.step_times)
        out: dict[str, Any] = {
            "wall_s": round(wall, 3),
            "steps": steps,
            "train_s": round(train_time, 3),
            "step_s_mean": round(train_time / steps, 5) if steps else None,
            # the median resists the first steps' set-up and a busy shared machine
            "step_s_median": round(sorted(self.step_times)[steps // 2], 5) if steps else None,
            # CPU time of the steps (all threads): on a shared machine wall time also measures the others
            "train_cpu_s": round(self.cpu_s, 3),
            "tokens": self.tokens,
            "tokens_per_s": round(self.tokens / train_time, 1) if train_time > 0 else None,
            "peak_rss_mib": round(self._rss_peak / 2**20, 1),
            "peak_rss_rise_mib": round((self._rss_peak - self._rss_start) / 2**20, 1),
        }
        if self.device.startswith("cuda"):
            import torch

            out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            out["peak_gpu_rise_mib"] = round((torch.cuda.max_memory_allocated() - self._cuda_start) / 2**20, 1)
        return out


class Metering(Callback):
    """The loop's :class:`RunMeter`: started before the first step, fed every step; ``resources``
    holds its measurements once training ends."""

    def __init__(self, device: str):
        self.meter = RunMeter(device=device)
        self.resources: dict[str, Any] = {}

    def on_train_begin(self, state: LoopState) -> None:
        self.meter.start()

    def on_step_end(self, state: LoopState) -> None:
        self.meter.step(state.seconds, state.tokens, state.cpu_seconds)
        return None

    def on_train_end(self, state: LoopState) -> None:
        self.resources = self.meter.stop()
