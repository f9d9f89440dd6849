"""Round-to-nearest (RTN) fake quantization of a weight matrix, per group of input channels: the
quantizer of the quantization attack (``quantization.py``), pure tensor code, no model.

Every row of ``W`` (one output channel) is cut into groups of ``g`` consecutive inputs; each group
gets its own step ``s`` (and zero point ``z``), its weights are rounded to the nearest of ``2^b``
levels and turned back into floats ("fake" quantization: same dtype, values on the grid).

- symmetric absmax (default): ``qmax = 2^(b-1) - 1``, ``s = max|w| / qmax``,
  ``q = clamp(round(w / s), -qmax, qmax)``, ``w' = q * s`` (the level ``-qmax - 1`` is unused, as in
  most symmetric int4 / int8 kernels);
- asymmetric (zero point): ``s = (max w - min w) / (2^b - 1)``, ``z = round(-min w / s)``,
  ``q = clamp(round(w / s) + z, 0, 2^b - 1)``, ``w' = (q - z) * s``.

Either way ``|w - w'| <= s / 2`` (half a step) for every weight, and quantizing ``w'`` again gives
``w'`` (idempotent: ``w'`` is on its group's grid and keeps the group's extremes). An update
``delta`` of a weight that is on the grid vanishes when ``|delta| < s / 2`` and the group's scale
does not move; for a weight anywhere in its cell it survives with probability about
``2 |delta| / s`` (a rounding boundary must lie between ``w`` and ``w + delta``): the flip rate the
attack measures.

A row whose length is not a multiple of ``g``: the last group is shorter (the remaining inputs)
and has its own step, computed from its own weights only (internally it is padded by repeating its
last weight, which changes neither its absmax nor its min and max, and the padding is cut off).

    >>> w = torch.tensor([[0.1, -0.7, 0.35, 0.0]])
    >>> fake_quantize(w, bits=4, group_size=2)  # steps 0.1 and 0.05
    tensor([[ 0.1000, -0.7000,  0.3500,  0.0000]])
"""

from __future__ import annotations

from typing import Any


def _grouped(weight: Any, group_size: int) -> tuple[Any, int]:
    """``weight`` as float32 ``[rows, n_groups, group_size]`` (last group padded by repeating its
    last weight) and the row length before padding."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    import torch

    rows = weight.detach().reshape(-1, weight.shape[-1]).float()
    width = rows.shape[1]
    pad = -width % group_size
    if pad:
        rows = torch.cat([rows, rows[:, -1:].expand(-1, pad)], dim=1)
    return rows.reshape(rows.shape[0], -1, group_size), width


def _ungrouped(groups: Any, width: int, like: Any) -> Any:
    return groups.reshape(groups.shape[0], -1)[:, :width].reshape(like.shape).to(like.dtype)


def _scale_and_zero(groups: Any, bits: int, zero_point: bool) -> tuple[Any, Any]:
    """The step ``s`` and zero point ``z`` of every group (``[rows, n_groups, 1]``). Groups with no
    range keep their value: an all-zero group gets ``s = 1``; a constant group ``c`` (asymmetric)
    ``s = |c|`` and ``z = -sign(c)``, so that its one code, 0, means ``c``."""
    import torch

    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be between 2 and 16, got {bits}")
    if zero_point:
        low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        flat = torch.where(low != 0, low.abs(), torch.ones_like(low))
        scale = torch.where(high > low, (high - low) / (2**bits - 1), flat)
        return scale, torch.round(-low / scale)
    scale = groups.abs().amax(-1, keepdim=True) / (2 ** (bits - 1) - 1)
    return torch.where(scale > 0, scale, torch.ones_like(scale)), torch.zeros_like(scale)


def fake_quantize(weight: Any, bits: int, group_size: int, *, zero_point: bool = False) -> Any:
    """``weight`` (any shape; groups run along the last dimension) rounded to ``bits``-bit levels
    per group of ``group_size`` inputs and returned in its own dtype (module docstring)."""
    import torch

    groups, width = _grouped(weight, group_size)
    scale, zero = _scale_and_zero(groups, bits, zero_point)
    if zero_point:
        codes = torch.clamp(torch.round(groups / scale) + zero, 0, 2**bits - 1)
    else:
        qmax = 2 ** (bits - 1) - 1
        codes = torch.clamp(torch.round(groups / scale), -qmax, qmax)
    return _ungrouped((codes - zero) * scale, width, weight)


def quantization_step(weight: Any, bits: int, group_size: int, *, zero_point: bool = False) -> Any:
    """The step ``s`` of the group of every weight, shaped like ``weight`` (the error bound of
    :func:`fake_quantize` is half of it)."""
    groups, width = _grouped(weight, group_size)
    scale, _ = _scale_and_zero(groups, bits, zero_point)
    return _ungrouped(scale.expand_as(groups), width, weight)
