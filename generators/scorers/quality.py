"""`quality`: one number in [0, 1] per candidate, from the other scores (formula: docs/scoring.md).

    quality = (1 - answer_leak) * (w_t * topic + w_f * fluency + w_c * contradiction) / (sum of the used w)

``topic`` depends on the kind. A negative should sit on the answer's topic without restating it:
a trapezoid of its similarity to the answer, 0 at or under ``negative_floor`` (off-topic), rising to
1 over the ``negative_peak`` band, back to 0 at ``negative_ceiling`` (a restatement). A paraphrase or
an attack should keep the question's meaning: ``(similarity - floor) / (1 - floor)`` clipped to
[0, 1]. A refusal has no topic term. Terms whose score is missing (contradiction off, fluency not
run) drop out of the weighted mean; ``contradiction`` is used for negatives only.

The version is a hash of the formula's settings and of the input scorers' versions, so changing a
weight or an input model rescores everything, and nothing else does.
"""

from __future__ import annotations

from typing import Any

from lune.data.ids import content_id
from lune.data.scoring_queries import scores_of
from lune.generators.config import QualityConfig, ScoreConfig
from lune.generators.scorers.answer_leak import AnswerLeak
from lune.generators.scorers.base import Score, Scorer
from lune.generators.scorers.contradiction import Contradiction
from lune.generators.scorers.fluency import Fluency
from lune.generators.scorers.similarity import Similarity

FORMULA_VERSION = "1"


def input_versions(config: ScoreConfig) -> dict[str, str]:
    """The scorer versions quality reads under this config (scorers that are off are absent)."""
    versions = {"similarity": Similarity.version(config), "answer_leak": AnswerLeak.version(config)}
    if "fluency" in config.scorers:
        versions["fluency"] = Fluency.version(config)
    contra = Contradiction.version(config)
    if contra is not None and "contradiction" in config.scorers:
        versions["contradiction"] = contra
    return versions


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def topic(kind: str, sim: float, q: QualityConfig) -> float | None:
    """The kind's topicality term (None for refusals)."""
    if kind == "negative":
        low, high = q.negative_peak
        if sim <= q.negative_floor or sim >= q.negative_ceiling:
            return 0.0
        if sim < low:
            return _clip((sim - q.negative_floor) / max(low - q.negative_floor, 1e-9))
        if sim > high:
            return _clip((q.negative_ceiling - sim) / max(q.negative_ceiling - high, 1e-9))
        return 1.0
    if kind == "paraphrase":
        return _clip((sim - q.paraphrase_floor) / (1.0 - q.paraphrase_floor))
    if kind == "attack":
        return _clip((sim - q.attack_floor) / (1.0 - q.attack_floor))
    return None


def quality(kind: str, values: dict[str, Any], q: QualityConfig) -> tuple[float | None, dict[str, Any]]:
    """(quality, its terms); None when a required input (answer_leak, and similarity except for
    refusals) is missing."""
    leak = values.get("answer_leak")
    sim = values.get("similarity")
    if leak is None or (sim is None and kind != "refusal"):
        return None, {"missing": [n for n in ("answer_leak", "similarity") if values.get(n) is None]}
    terms: dict[str, float] = {}
    weights: dict[str, float] = {}
    t = topic(kind, sim, q) if sim is not None else None
    if t is not None:
        terms["topic"], weights["topic"] = t, q.topic_weight
    if values.get("fluency") is not None:
        terms["fluency"], weights["fluency"] = float(values["fluency"]), q.fluency_weight
    if kind == "negative" and values.get("contradiction") is not None:
        terms["contradiction"], weights["contradiction"] = float(values["contradiction"]), q.contradiction_weight
    total = sum(weights.values())
    base = sum(terms[k] * weights[k] for k in terms) / total if total > 0 else 1.0
    value = _clip(1.0 - float(leak)) * base
    return value, {k: round(v, 4) for k, v in terms.items()}


class Quality(Scorer):
    name = "quality"

    @classmethod
    def version(cls, config: ScoreConfig) -> str:
        return f"{FORMULA_VERSION}:{content_id(config.quality.model_dump(), input_versions(config))[:12]}"

    def score(self, rows: list[dict[str, Any]]) -> list[Score]:
        values = scores_of(self.context.store, [r["candidate_id"] for r in rows], input_versions(self.config))
        scores = []
        for r in rows:
            value, detail = quality(r["kind"], values.get(r["candidate_id"], {}), self.config.quality)
            if value is not None:  # else its inputs are not scored yet: left pending for a later run
                scores.append(Score(r["candidate_id"], value, detail))
        return scores
