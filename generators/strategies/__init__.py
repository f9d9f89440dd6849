"""Strategies: each owns a prompt and its parser (see ``base.Strategy``).

counterfactual -> negative     paraphrase -> paraphrase
attack (one per RWKU family) -> attack     refusal -> refusal
"""

from __future__ import annotations

from collections.abc import Sequence

from lune.data.records import ATTACK_TYPES, CANDIDATE_KINDS
from lune.generators.strategies.attack import attack_strategy
from lune.generators.strategies.base import Strategy
from lune.generators.strategies.counterfactual import COUNTERFACTUAL
from lune.generators.strategies.paraphrase import PARAPHRASE
from lune.generators.strategies.refusal import REFUSAL

STRATEGY_BY_KIND: dict[str, Strategy] = {"negative": COUNTERFACTUAL, "paraphrase": PARAPHRASE, "refusal": REFUSAL}


def strategies_for(kinds: Sequence[str], attack_types: Sequence[str] = ATTACK_TYPES) -> list[Strategy]:
    """The strategies that make ``kinds``: one per kind, and one per attack type for ``attack``."""
    out: list[Strategy] = []
    for kind in kinds:
        if kind == "attack":
            out.extend(attack_strategy(t) for t in attack_types)
        elif kind in STRATEGY_BY_KIND:
            out.append(STRATEGY_BY_KIND[kind])
        else:
            raise ValueError(f"unknown candidate kind {kind!r}; known: {', '.join(CANDIDATE_KINDS)}")
    return out


__all__ = ["STRATEGY_BY_KIND", "Strategy", "attack_strategy", "strategies_for"]
