"""The unlearning methods, one module each (``lune``, ``grad_ascent``, ``grad_diff``, ``npo``, ``idk``,
``full_ft``, ``simnpo``, ``rmu``).

A method is a subclass of ``unlearn.trainer.UnlearnTrainer`` with a ``name``; defining it registers
it. Importing this package imports every module in this folder, so ``METHODS`` holds them all:
adding a method is adding a file here, and the config (``unlearn.method``, ``unlearn.method_options``)
and ``lune unlearn --method`` know it from then on.
"""

from __future__ import annotations

from lune.unlearn.trainer import REGISTRY, UnlearnTrainer

DEFAULT_METHOD = "lune"

# LUNE first, the baselines after it in name order (the order of choices and of the documentation).
METHODS: dict[str, type[UnlearnTrainer]] = {
    name: cls for name, cls in sorted(REGISTRY.entries().items(), key=lambda kv: (kv[0] != DEFAULT_METHOD, kv[0]))
}
