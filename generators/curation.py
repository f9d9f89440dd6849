"""Curation: a policy turns scored candidates into a named, versioned curated set.

    >>> with Store.open("lune.duckdb") as store:
    ...     result = curate(store, CurateConfig(name="tofu-forget10"), ScoreConfig())
    ...     result.set_id, result.version, result.counts["below_minimum"]

Steps (each decision is a ``candidate_verdicts`` row with a reason, docs/scoring.md):

1. gates and top-k per fact and kind, in SQL (``data.curation_queries.decide_verdicts``);
2. kept generated paraphrases and attacks are split into train (extra prompts for the negatives)
   and held-out eval under a leakage guard (:func:`split_prompts`): paraphrases each by a seeded
   hash, attacks by attack family, a held-out quota of facts per family (:func:`held_out_families`);
   dataset probes (TOFU paraphrased questions, RWKU level-3 attacks) are always eval;
3. facts with fewer than ``min_per_fact`` kept negatives / refusals are listed in the set's counts
   (and printed by ``lune curate``), never dropped silently;
4. the set is saved as version N+1 of its name, unless it keeps exactly what version N keeps under
   the same policy, in which case version N is returned (reruns write nothing new).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lune.data import curation_queries as q
from lune.data.errors import LuneError
from lune.data.ids import content_id
from lune.data.records import CANDIDATE_KINDS
from lune.data.store import Store
from lune.generators.config import CurateConfig, ScoreConfig
from lune.generators.scorers.contradiction import contradiction_status
from lune.generators.scorers.embedding import Embedder

PREVIEW_SET = "preview"


@dataclass
class CurationResult:
    set_id: str
    name: str
    version: int
    created: bool  # False: an identical earlier version was reused
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def below_minimum(self) -> list[dict[str, Any]]:
        return self.counts.get("below_minimum", [])


# Policy fields added after sets were stored: at these defaults they are left out of the stored
# policy, so a set curated before they existed keeps its fingerprint (a rerun reuses it).
LATER_POLICY_DEFAULTS: dict[str, Any] = {"max_quality": None, "prefer": "best"}


def policy_dict(config: CurateConfig) -> dict[str, Any]:
    """The resolved policy as stored on the set (the name is not part of it)."""
    policy = config.model_dump(exclude={"name"})
    for kind in CANDIDATE_KINDS:
        for key, default in LATER_POLICY_DEFAULTS.items():
            if policy[kind].get(key, default) == default:
                policy[kind].pop(key, None)
    return policy


def _prefers_eval(candidate_id: str, seed: int, fraction: float) -> bool:
    return int(content_id("split", seed, candidate_id)[:8], 16) / 0x100000000 < fraction


def held_out_families(items: list[dict[str, Any]], *, eval_fraction: float, seed: int) -> set[tuple[str, str]]:
    """The ``(fact_id, attack_type)`` pairs whose generated attacks are all held out: per attack
    family, ``max(1, round(eval_fraction * n))`` of the ``n`` facts with a generated item of that
    family (none when ``eval_fraction`` is 0), chosen by a seeded hash of fact and family.

    A quota per family, so that every family is measured on held-out probes: the families that wrap
    the fact's question nearly verbatim (role play, multiple choice, affirmative suffix) lie within
    the guard's threshold of the question, which is always a train prompt, and a per-item split
    would put every one of them in training."""
    facts: dict[str, set[str]] = defaultdict(set)
    for item in items:
        if item["role"] != "eval" and item.get("kind") == "attack" and item.get("attack_type"):
            facts[item["attack_type"]].add(item["fact_id"])
    chosen: set[tuple[str, str]] = set()
    if eval_fraction <= 0:
        return chosen
    for family, fact_ids in facts.items():
        ordered = sorted(fact_ids, key=lambda f: content_id("held-out-family", seed, family, f))
        chosen.update((f, family) for f in ordered[: max(1, round(eval_fraction * len(ordered)))])
    return chosen


def split_prompts(
    items: list[dict[str, Any]],
    vectors: np.ndarray,
    question_vectors: dict[str, np.ndarray],
    *,
    eval_fraction: float,
    threshold: float,
    seed: int,
) -> list[dict[str, Any]]:
    """Train / eval roles of kept paraphrases and attacks, with the leakage guard.

    ``items`` (with ``vectors[i]`` for ``items[i]``): kept prompt items of any facts; those with
    role 'eval' already are dataset probes and stay eval. Per fact, generated items are visited best
    first; each goes to the side it prefers, unless it lies within cosine ``threshold`` of a text
    already on one side (then it joins that side) or on both sides (then it is dropped, reason
    'leakage_guard'). A paraphrase prefers the side its seeded hash gives; an attack prefers eval
    when its (fact, family) pair is in the held-out quota (:func:`held_out_families`), else train.
    The fact's own question (in ``question_vectors``; empty when ``guard_question`` is off) counts
    as a train text for generated items, so a near-copy of the question is never held out. Hence no
    eval text is within ``threshold`` of any train text of its fact, with two exceptions: dataset
    probes are exempt from the comparison with the question (they are the benchmark's paraphrases
    of it), and so are the attacks of a held-out family, which are also left out of the comparisons
    of the fact's other items: what they hold out is the family's wrapping of a question the
    unlearning trains on (RWKU's setting), and they lie close to that question and to the fact's
    other prompts through it.

    Returns one decision per generated item: candidate_id, keep, reason, role.
    """
    held_out = held_out_families(items, eval_fraction=eval_fraction, seed=seed)
    by_fact: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        by_fact[item["fact_id"]].append(i)
    decisions = []
    for fact_id, members in by_fact.items():
        eval_vecs = [vectors[i] for i in members if items[i]["role"] == "eval"]
        train_vecs = [question_vectors[fact_id]] if fact_id in question_vectors else []
        for i in members:
            item = items[i]
            if item["role"] == "eval":
                continue
            if item.get("kind") == "attack" and (fact_id, item.get("attack_type")) in held_out:
                decisions.append({"candidate_id": item["candidate_id"], "keep": True, "reason": "kept", "role": "eval"})
                continue
            v = vectors[i]
            near_train = bool(train_vecs) and float(np.max(np.stack(train_vecs) @ v)) >= threshold
            near_eval = bool(eval_vecs) and float(np.max(np.stack(eval_vecs) @ v)) >= threshold
            if near_train and near_eval:
                decisions.append(
                    {"candidate_id": item["candidate_id"], "keep": False, "reason": "leakage_guard", "role": None}
                )
                continue
            if near_train:
                role = "train"
            elif near_eval:
                role = "eval"
            elif item.get("kind") == "attack" and item.get("attack_type"):
                role = "train"  # its family is held out for other facts (the quota above)
            else:
                role = "eval" if _prefers_eval(item["candidate_id"], seed, eval_fraction) else "train"
            (eval_vecs if role == "eval" else train_vecs).append(v)
            decisions.append({"candidate_id": item["candidate_id"], "keep": True, "reason": "kept", "role": role})
    return decisions


def decide(
    store: Store,
    set_id: str,
    config: CurateConfig,
    score_config: ScoreConfig | None = None,
    *,
    embedder: Embedder | None = None,
) -> dict[str, Any]:
    """Write the verdicts of ``config``'s policy under ``set_id``; return its counts."""
    score_config = score_config or ScoreConfig()
    policies = {kind: getattr(config, kind).model_dump() for kind in CANDIDATE_KINDS}
    q.decide_verdicts(store, set_id, policies, config.splits, span_answer_words=config.span_answer_words)

    items = q.prompt_items(store, set_id)
    if items:
        embedder = embedder or Embedder(store, score_config.embedding_model, batch_size=score_config.batch_size)
        vectors = embedder.embed([item["text"] for item in items])
        questions = {item["fact_id"]: item["question"] for item in items}
        question_vecs = (
            dict(zip(questions, embedder.embed(list(questions.values())), strict=True)) if config.guard_question else {}
        )
        decisions = split_prompts(
            items,
            vectors,
            question_vecs,
            eval_fraction=config.eval_fraction,
            threshold=config.leakage_cosine,
            seed=config.seed,
        )
        q.assign_roles(store, set_id, decisions)

    counts = q.verdict_counts(store, set_id)
    below = q.facts_below_minimum(store, set_id, config.splits, config.min_per_fact)
    counts.update(
        {
            "facts": q.scope_fact_count(store, config.splits),
            "below_minimum": below,
            "contradiction": contradiction_status(score_config),
            "fingerprint": content_id(policy_dict(config), q.items_fingerprint(store, set_id)),
        }
    )
    return counts


def preview(
    store: Store, config: CurateConfig, score_config: ScoreConfig | None = None, *, embedder: Embedder | None = None
) -> dict[str, Any]:
    """Verdicts of the configured policy under the set id 'preview' (what the views show after
    ``lune score``, before any set is saved)."""
    return decide(store, PREVIEW_SET, config, score_config, embedder=embedder)


def curate(
    store: Store,
    config: CurateConfig,
    score_config: ScoreConfig | None = None,
    *,
    run_id: str | None = None,
    embedder: Embedder | None = None,
) -> CurationResult:
    """Decide, then save the set as the next version of ``config.name`` (or reuse an identical one)."""
    latest = q.latest_set(store, config.name)
    version = (latest["version"] + 1) if latest else 1
    set_id = content_id("curated_set", config.name, version)
    with store.transaction():
        counts = decide(store, set_id, config, score_config, embedder=embedder)
        refuse_empty(counts, config)
        if latest is not None and (q.parse_json(latest["counts"]) or {}).get("fingerprint") == counts["fingerprint"]:
            q.delete_verdicts(store, set_id)
            q.touch_verdicts(store, latest["set_id"])
            return CurationResult(
                latest["set_id"], config.name, latest["version"], False, q.parse_json(latest["counts"]) or {}
            )
        q.save_set(
            store,
            set_id=set_id,
            name=config.name,
            version=version,
            policy=policy_dict(config),
            counts=counts,
            run_id=run_id,
        )
    return CurationResult(set_id, config.name, version, True, counts)


def refuse_empty(counts: dict[str, Any], config: CurateConfig) -> None:
    """A set without a negative or refusal to train on is refused (a later unlearning would train on
    nothing): raises LuneError saying why, before anything is saved."""
    targets = sum(n for key, n in counts.get("kept", {}).items() if key.split(":")[0] in ("negative", "refusal"))
    if targets:
        return
    dropped = ", ".join(f"{reason} {n}" for reason, n in counts.get("dropped", {}).items()) or "no candidates at all"
    raise LuneError(
        f"curate: set {config.name!r} would hold no negative or refusal to train on ({counts.get('facts', 0)} facts "
        f"of splits {', '.join(config.splits)}; dropped: {dropped}), so nothing was saved. Generate and score first "
        "(lune generate, lune score), or see why candidates were dropped with "
        'lune sql "SELECT reason, count(*) FROM v_candidate_quality GROUP BY ALL" and loosen the curate policy'
    )


def curate_stage(
    store: Store,
    config: CurateConfig,
    score_config: ScoreConfig | None = None,
    *,
    run_id: str | None = None,
    parent_run_id: str | None = None,
) -> CurationResult:
    """:func:`curate` as one recorded run (``runs`` row of kind 'curate')."""
    settings = {"curate": config.model_dump(), "score": (score_config or ScoreConfig()).model_dump()}
    with store.run("curate", settings, run_id=run_id, parent_run_id=parent_run_id) as run:
        result = curate(store, config, score_config, run_id=run.run_id)
        run.metrics.update(
            {
                "set_id": result.set_id,
                "name": result.name,
                "version": result.version,
                "created": result.created,
                "kept": result.counts.get("kept", {}),
                "dropped": result.counts.get("dropped", {}),
                "below_minimum": len(result.below_minimum),
            }
        )
    return result
