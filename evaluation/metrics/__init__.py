"""The evaluate stage's metrics, one module per metric family (USR / recall, APR, GUR, MIA, TOFU,
ROUGE-L recall, word n-gram entropy).

Each module holds the family's pure functions (plain values in, a
:class:`~lune.evaluation.metrics.result.MetricResult` out, the formula in the docstring; no model,
no store, no I/O) and one function registered with ``@metric(name)`` that turns every model's
outputs into ``eval_results`` / ``eval_items`` rows. ``registry.py`` finds them and runs them all;
``docs/evaluation.md`` gives every formula with its source.
"""
