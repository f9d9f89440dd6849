"""core.threads: a stage's torch threads fit the cores it owns, the other lune workers and the
user's override, so that N workers on C cores never oversubscribe them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lune.core import threads as th


@pytest.mark.parametrize(
    ("cores", "workers", "busy", "override", "cap", "expected"),
    [
        (2, 1, 0.0, None, None, 2),  # alone on 2 cores: both
        (2, 2, 0.0, None, None, 1),  # two sweep workers on 2 cores: one each
        (2, 1, 0.97, None, None, 1),  # one CPU-bound competitor: stay off its core
        (2, 1, 0.4, None, None, 2),  # a light load rounds to no busy core
        (2, 1, 0.6, None, None, 2),  # nor does a transient of half a core (a server answering)
        (2, 1, 0.8, None, None, 1),  # most of a core is taken
        (16, 3, 1.2, None, None, 5),  # (16 - 1) // 3
        (2, 4, 0.0, None, None, 1),  # never under one thread
        (8, 1, 0.0, 3, None, 3),  # LUNE_THREADS wins
        (8, 1, 0.0, None, 2, 2),  # OMP_NUM_THREADS caps
    ],
)
def test_plan_threads(cores, workers, busy, override, cap, expected) -> None:
    assert th.plan_threads(cores, workers, busy, override=override, cap=cap) == expected


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(th.REGISTRY_ENV, str(tmp_path / "workers"))
    monkeypatch.delenv(th.OVERRIDE_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return tmp_path / "workers"


def test_override_sets_torch_threads_for_the_block_and_restores_them(
    registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    before = torch.get_num_threads()
    # A count other than the current one; below it where possible: after other tests have run
    # parallel regions in this process, torch could not raise the count above the first pool's (2).
    target = 1 if before > 1 else 2
    monkeypatch.setenv(th.OVERRIDE_ENV, str(target))
    with th.torch_threads() as n:
        assert n == target and torch.get_num_threads() == target
        assert th.live_workers() == [os.getpid()]  # registered while the stage runs
        with th.torch_threads(workers=8) as inner:  # a stage inside a sweep point keeps the point's
            assert inner == target
    assert torch.get_num_threads() == before and th.live_workers() == []
    monkeypatch.setenv(th.OVERRIDE_ENV, "many")
    with pytest.raises(Exception, match=r"\$LUNE_THREADS must be a whole number"):
        th.decide_threads()


def test_sizing_holds_after_vllm_replaced_torch_set_num_threads(
    registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM's CPU worker replaces ``torch.set_num_threads`` with a no-op for the rest of the process
    (the real one is patched in the same way here, as an in-process engine leaves it): a stage run
    after the generate stage must still get its count, and restore the one it found."""
    import torch

    before = torch.get_num_threads()
    target = 1 if before > 1 else 2
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    monkeypatch.setenv(th.OVERRIDE_ENV, str(target))
    with th.torch_threads() as n:
        assert n == target and torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with th.kept_torch_threads():
        th.set_torch_threads(target)
    assert torch.get_num_threads() == before


def test_other_live_workers_share_the_cores_and_dead_ones_are_forgotten(registry: Path) -> None:
    cores = len(th.usable_cores())
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        registry.mkdir(parents=True)
        (registry / f"{other.pid}.pid").write_text(f"{other.pid} {th._start_time(other.pid)}")
        (registry / "999999999.pid").write_text("999999999 1")  # a killed worker's file
        assert th.live_workers() == [other.pid]
        assert not (registry / "999999999.pid").exists()
        assert th.decide_threads(sample_seconds=0) == max(1, cores // 2)
        assert th.decide_threads(workers=cores * 2, sample_seconds=0) == 1
    finally:
        other.kill()
        other.wait()
    assert th.live_workers() == []  # the pid file of the stopped worker is stale now


def test_the_affinity_mask_bounds_the_threads(registry: Path) -> None:
    """A process limited to one CPU (taskset, a cpuset) gets one thread, whatever the machine has."""
    first = min(th.usable_cores())
    code = (
        f"import os; os.sched_setaffinity(0, {{{first}}}); from lune.core import threads as th; "
        "print(th.usable_cores(), th.decide_threads(sample_seconds=0))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [f"{{{first}}}", "1"]


def test_a_cpu_bound_competitor_is_seen_as_a_busy_core(registry: Path) -> None:
    """Load from another process on the same CPU counts; this process's own work does not."""
    cpu = min(th.usable_cores())
    spin = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
    try:
        time.sleep(0.3)
        busy = th.external_busy({cpu}, [os.getpid()], seconds=0.5)
        mine = th.external_busy({cpu}, [os.getpid(), spin.pid], seconds=0.5)
    finally:
        spin.kill()
        spin.wait()
    assert busy > 0.5  # the spinner's core (other helpers' load can only add)
    assert mine <= busy + 0.05  # counted as one of ours, the spinner is not a competitor
