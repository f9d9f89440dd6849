"""`duplicate`: near-duplicates among one fact's candidates of the same kind.

Within each (fact, kind) group, candidates are visited best first (quality, then similarity, then
id); one whose cosine with an already kept candidate is at least ``score.duplicate_threshold``
(0.95 by default) is marked: value 1, ``detail.of`` names the kept candidate it repeats. Others get
value 0. Candidates scored by an earlier run keep their verdict and count as kept when they were,
so a rerun after new generations only judges the new ones (against everything).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from lune.data.scoring_queries import fact_groups
from lune.generators.config import ScoreConfig
from lune.generators.scorers.base import Score, Scorer
from lune.generators.scorers.embedding import model_key


def _order(row: dict) -> tuple:
    quality = row.get("quality")
    sim = row.get("similarity")
    return (-(quality if quality is not None else -1.0), -(sim if sim is not None else -2.0), row["candidate_id"])


def mark_group(rows: list[dict], vectors: np.ndarray, threshold: float) -> dict[str, tuple[float, str | None, float]]:
    """Decide the unscored rows of one group: {candidate_id: (value, kept id it repeats, cosine)}.

    ``rows[i]`` has ``duplicate`` (None when not decided yet) and its vector in ``vectors[i]``.
    """
    kept: list[int] = [i for i, r in enumerate(rows) if r.get("duplicate") is not None and r["duplicate"] < 0.5]
    decided: dict[str, tuple[float, str | None, float]] = {}
    for i in sorted((i for i, r in enumerate(rows) if r.get("duplicate") is None), key=lambda i: _order(rows[i])):
        closest = 0.0
        if kept:
            sims = vectors[kept] @ vectors[i]
            best = int(np.argmax(sims))
            closest = float(sims[best])
            if closest >= threshold:
                decided[rows[i]["candidate_id"]] = (1.0, rows[kept[best]]["candidate_id"], closest)
                continue
        kept.append(i)
        decided[rows[i]["candidate_id"]] = (0.0, None, closest)
    return decided


class Duplicate(Scorer):
    name = "duplicate"

    @classmethod
    def version(cls, config: ScoreConfig) -> str:
        return f"1:{model_key(config.embedding_model)}:{config.duplicate_threshold}"

    def score(self, rows: list[dict[str, Any]]) -> list[Score]:
        keys = sorted({(r["fact_id"], r["kind"]) for r in rows})
        members = fact_groups(self.context.store, keys, duplicate_version=self.version(self.config))
        # Every undecided member of a touched group is decided now (best first across the whole
        # group), also those whose id falls in a later batch.
        groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for row in members:
            groups[(row["fact_id"], row["kind"])].append(row)
        texts = [row["text"] for group in groups.values() for row in group]
        vectors = self.context.embedder.embed(texts) if texts else np.zeros((0, 0), dtype=np.float32)
        scores, offset = [], 0
        for group in groups.values():
            decided = mark_group(group, vectors[offset : offset + len(group)], self.config.duplicate_threshold)
            offset += len(group)
            for cid, (value, of, cosine) in decided.items():
                detail = {"of": of, "cosine": round(cosine, 4)} if of else {"max_cosine": round(cosine, 4)}
                scores.append(Score(cid, value, detail))
        return scores
