"""Attacks on the evaluated models, one module per attack (``quantization``, ``logit_lens``,
``relearning``): does the forgetting hold when someone quantizes the weights, reads the hidden
layers, or fine-tunes a few steps (the training is lent by ``flows/attacks.py``)?

An attack is a function registered with ``@attack(name)`` in ``registry.py``; it loads the base,
unlearned and retain models itself and returns ``eval_results`` rows whose metric names start with
``attack.<name>.``. ``evaluate.attacks`` in the config (``lune evaluate --attacks ...``) chooses
which run, after the metrics; ``docs/evaluation.md`` ("Does it hold") says what each measures.
"""
