"""Mixed precision of training steps (teach and unlearn): bfloat16 autocast over float32 weights.

The weights, their gradients and AdamW's state stay in float32 (small updates are not lost, see
``TeachConfig.dtype``); only the matrix products of the forward and backward pass run in bfloat16.
On a CPU with native bfloat16 instructions (AVX512-BF16 or AMX) that made a teaching step of the
tiny model 1.5x faster here (0.25 s -> 0.17 s, BENCHMARKS.md, Pipeline); without them bfloat16 is
emulated and slower, so ``auto`` leaves it off. Greedy answers at the checks and in evaluation are
never autocast: what is measured does not depend on this setting.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

Autocast = Literal["auto", "off", "bfloat16"]


def cpu_has_native_bf16() -> bool:
    """Does this CPU run bfloat16 matrix products natively (oneDNN's own check)?"""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN, or a private op that moved
        return False


def resolve_autocast(setting: Autocast, device: Any, weights_dtype: Any) -> Any:
    """The dtype to autocast to (``torch.bfloat16``), or None for none.

    ``auto``: bfloat16 on a CPU with native bfloat16 when the weights are float32; nothing on a GPU
    (its default weights are already bfloat16) or with half-precision weights.
    """
    import torch

    if setting == "off" or weights_dtype != torch.float32:
        return None
    if setting == "bfloat16":
        return torch.bfloat16
    return torch.bfloat16 if torch.device(device).type == "cpu" and cpu_has_native_bf16() else None


def autocast(device: Any, dtype: Any) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` on ``device`` to ``dtype``, or a no-op context when ``dtype`` is None."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
