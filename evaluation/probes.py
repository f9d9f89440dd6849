"""Probe sets: what the evaluate stage asks a model, read from the store.

| set | what | a success is |
|---|---|---|
| ``forget`` | the original questions of the forget facts (of the curated set, else all) | the key span is gone |
| ``paraphrase`` | held-out generated paraphrases of the curated set + dataset paraphrased questions | gone |
| ``attack`` | held-out generated attacks + RWKU level-3 adversarial queries, with attack type | gone |
| ``retain`` | retain facts (RWKU neighbors excluded) of the same corpora (see below) | still stated |
| ``neighbor`` | RWKU neighbor facts (retain split, group ``neighbor_level*``) | still stated |
| ``utility`` | TOFU world facts / real authors (split ``utility``) | still stated |

Retain probes: where some of a corpus's retain facts have perturbed answers (TOFU's
``retain_perturbed``, open-unlearning's retain ROUGE set), those facts only; ``retain_probes="all"``
takes every retain fact (lune's old variant).

Paraphrase and attack probes are held out: one whose text the curated set trains on (a dataset
paraphrased question used as a training prompt) is left out, and the notes count them.

Membership inference texts are chosen per corpus, so that members and non-members are texts of
one kind (a passage against a passage, an answer given its question against an answer given its
question):

1. where the dataset ships both, its ``mia_member`` texts (RWKU forget_mia: passages about the
   target) against its ``mia_nonmember`` texts (RWKU retain_mia), each scored as a whole;
2. otherwise the forget facts' answers against ``holdout`` facts' answers (never taught), each
   scored given its question in the prompt layout (only the answer tokens count: the questions of
   taught facts are memorised too, and would separate members from non-members by themselves).
   This is TOFU's protocol in open-unlearning (MIA and privleak on forget vs holdout); the TOFU
   loader makes the holdout split (``data/loaders/tofu.py``);
3. with no holdout facts, or with ``mia_nonmembers="perturbed"`` (lune's old variant), against the
   forget facts' dataset perturbed answers given the same questions, minus any text the
   unlearning set trained on: answers the model was never taught, in the same template.

A corpus with no non-member texts at all is left out of MIA (``ProbeSuite.notes`` says so, and
says which rule each corpus used).

TOFU truth-ratio items: every forget, retain and utility fact that has perturbed answers, with
its paraphrased answers (the answer itself where the dataset gives none, as TOFU does for
real authors and world facts).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lune.core.matching import normalize
from lune.data import evaluation_queries as q
from lune.data.records import normalize_attack_type
from lune.data.store import Store

FORGET_SETS: tuple[str, ...] = ("forget", "paraphrase", "attack")
RETAIN_SETS: tuple[str, ...] = ("retain", "neighbor", "utility")
PROBE_SETS: tuple[str, ...] = FORGET_SETS + RETAIN_SETS

_PARAPHRASE_KINDS = {"paraphrase", "paraphrased_question"}
_ATTACK_KINDS = {"attack", "adversarial"}


@dataclass(frozen=True)
class EvalProbe:
    """One question put to a model, with the key span its answer is judged on."""

    probe_set: str
    probe_id: str  # the fact id (original questions), probe id (dataset) or candidate id (generated)
    question: str
    answer: str
    key_span: str
    fact_id: str | None = None
    attack_type: str | None = None
    source: str = "fact"  # fact / dataset / generated
    subject: str | None = None
    group: str | None = None  # the fact's group (TOFU utility: world_facts / real_authors)


@dataclass(frozen=True)
class MiaText:
    """One text scored for membership inference: ``text`` alone (a passage), or ``text`` as the
    answer to ``question`` (a fact: only the answer's tokens are scored, given the question)."""

    text_id: str
    text: str
    member: bool
    source: str  # forget_fact / mia_member / mia_nonmember / holdout_fact / perturbed_answer
    fact_id: str | None = None
    question: str | None = None


@dataclass(frozen=True)
class TruthItem:
    """A question with its answer, paraphrased answers and perturbed (wrong) answers (TOFU)."""

    group: str  # forget / retain / a utility group (world_facts, real_authors) / utility
    fact_id: str
    question: str
    answer: str
    paraphrased: tuple[str, ...]
    perturbed: tuple[str, ...]


@dataclass
class ProbeSuite:
    """Everything one evaluation asks every model, identical across the models compared."""

    probes: dict[str, list[EvalProbe]]
    mia_members: list[MiaText] = field(default_factory=list)
    mia_nonmembers: list[MiaText] = field(default_factory=list)
    truth: dict[str, list[TruthItem]] = field(default_factory=dict)
    set_id: str | None = None
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {name: len(items) for name, items in self.probes.items()}
        out["mia_member"] = len(self.mia_members)
        out["mia_nonmember"] = len(self.mia_nonmembers)
        for group, items in self.truth.items():
            out[f"truth_{group}"] = len(items)
        return out

    def all_probes(self) -> list[EvalProbe]:
        return [p for name in PROBE_SETS for p in self.probes.get(name, [])]


def _cap(items: list[Any], limit: int | None, key: str) -> list[Any]:
    """The first ``limit`` items in order of their (hash) id: a fixed, pseudo-random subset."""
    ordered = sorted(items, key=lambda item: getattr(item, key))
    return ordered if limit is None or len(ordered) <= limit else ordered[:limit]


def _dedupe(probes: Iterable[EvalProbe]) -> list[EvalProbe]:
    """One probe per id and per (fact or subject, normalised question): a dataset probe that the
    curated set also holds as a ``dataset``-backend candidate is asked once."""
    seen_ids: set[str] = set()
    seen_texts: set[tuple[str | None, tuple[str, ...]]] = set()
    out = []
    for probe in probes:
        key = (probe.fact_id or probe.subject, tuple(normalize(probe.question)))
        if probe.probe_id in seen_ids or key in seen_texts:
            continue
        seen_ids.add(probe.probe_id)
        seen_texts.add(key)
        out.append(probe)
    return out


def _fact_probe(name: str, fact: dict[str, Any]) -> EvalProbe:
    return EvalProbe(
        name,
        fact["fact_id"],
        fact["question"],
        fact["answer"],
        fact["key_span"],
        fact_id=fact["fact_id"],
        source="fact",
        subject=fact.get("subject"),
        group=fact.get("group_name"),
    )


def load_probe_suite(
    store: Store,
    set_id: str | None = None,
    *,
    max_per_set: int | None = 500,
    include_dataset_probes: bool = True,
    mia: bool = True,
    tofu: bool = True,
    mia_nonmembers: str = "holdout",
    retain_probes: str = "retain_perturbed",
) -> ProbeSuite:
    """Build every probe set from the store (see the module docstring for what goes where).

    ``set_id``: a curated set name or id (its forget facts and held-out eval items, read through
    :func:`data.export.curated_rows`); None takes every forget fact and no generated probes.
    ``max_per_set`` caps each set (and each MIA side) to a fixed pseudo-random subset so that
    evaluation time stays bounded. ``mia_nonmembers`` (holdout / perturbed) and ``retain_probes``
    (retain_perturbed / all): ``EvaluateConfig``'s settings of the same names.
    """
    notes: list[str] = []
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "eval": [], "forget": []}
    if set_id:
        from lune.data.export import curated_rows

        rows = curated_rows(store, set_id)
    forget = q.facts_by_id(store, [f["fact_id"] for f in rows["forget"]]) if set_id else []
    if not forget:
        if set_id:
            notes.append("the curated set names no forget facts: every forget fact is probed")
        forget = q.facts_of_split(store, "forget")
    if not forget:
        notes.append("no forget facts in the store")
    forget_ids = [f["fact_id"] for f in forget]
    subjects = sorted({f["subject"] for f in forget if f.get("subject")})
    corpora = sorted({f["corpus"] for f in forget})

    def same_corpus(facts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [f for f in facts if not corpora or f["corpus"] in corpora]

    paraphrase: list[EvalProbe] = []
    attack: list[EvalProbe] = []
    eval_facts = {f["fact_id"]: f for f in q.facts_by_id(store, sorted({r["fact_id"] for r in rows["eval"]}))}
    for item in rows["eval"]:
        fact = eval_facts.get(item["fact_id"])
        if fact is None or not item.get("text"):
            continue
        if item["kind"] in _PARAPHRASE_KINDS:
            paraphrase.append(
                EvalProbe(
                    "paraphrase",
                    item["item_id"],
                    item["text"],
                    fact["answer"],
                    fact["key_span"],
                    fact_id=fact["fact_id"],
                    source=item["source"],
                    subject=fact["subject"],
                )
            )
        elif item["kind"] in _ATTACK_KINDS:
            attack.append(
                EvalProbe(
                    "attack",
                    item["item_id"],
                    item["text"],
                    fact["answer"],
                    fact["key_span"],
                    fact_id=fact["fact_id"],
                    attack_type=normalize_attack_type(item["attack_type"]),
                    source=item["source"],
                    subject=fact["subject"],
                )
            )
    if include_dataset_probes:
        for row in q.fact_probes(store, ["paraphrased_question", "adversarial"], forget_ids):
            if row["kind"] == "paraphrased_question":
                paraphrase.append(
                    EvalProbe(
                        "paraphrase",
                        row["probe_id"],
                        row["text"],
                        row["fact_answer"],
                        row["key_span"],
                        fact_id=row["fact_id"],
                        source="dataset",
                        subject=row["subject"],
                    )
                )
            else:
                attack.append(
                    EvalProbe(
                        "attack",
                        row["probe_id"],
                        row["text"],
                        row["answer"],
                        row["key_span"],
                        fact_id=row["fact_id"],
                        attack_type=normalize_attack_type(row["attack_type"]),
                        source="dataset",
                        subject=row["subject"],
                    )
                )
        for row in q.subject_probes(store, ["adversarial"], subjects, corpora):
            if row["answer"]:
                attack.append(
                    EvalProbe(
                        "attack",
                        row["probe_id"],
                        row["text"],
                        row["answer"],
                        row["answer"],
                        attack_type=normalize_attack_type(row["attack_type"]),
                        source="dataset",
                        subject=row["subject"],
                    )
                )
    # A prompt the unlearning trained on is not held out: leave it out of the robustness sets.
    trained_prompts = {tuple(normalize(r["prompt"])) for r in rows["train"]}
    held_out = {
        name: [p for p in _dedupe(items) if tuple(normalize(p.question)) not in trained_prompts]
        for name, items in (("paraphrase", paraphrase), ("attack", attack))
    }
    dropped = len(_dedupe(paraphrase)) + len(_dedupe(attack)) - sum(len(v) for v in held_out.values())
    if dropped:
        notes.append(f"{dropped} paraphrase / attack probes left out: the curated set trains on them")
    probes = {
        "forget": [_fact_probe("forget", f) for f in forget],
        "paraphrase": held_out["paraphrase"],
        "attack": [
            p if p.attack_type else EvalProbe(**{**p.__dict__, "attack_type": "unspecified"})
            for p in held_out["attack"]
        ],
        "retain": [
            _fact_probe("retain", f)
            for f in _retain_facts(store, same_corpus(q.facts_of_split(store, "retain", neighbor=False)), retain_probes)
        ],
        "neighbor": [_fact_probe("neighbor", f) for f in same_corpus(q.facts_of_split(store, "retain", neighbor=True))],
        "utility": [_fact_probe("utility", f) for f in q.facts_of_split(store, "utility")],
    }
    probes = {name: _cap(items, max_per_set, "probe_id") for name, items in probes.items()}
    suite = ProbeSuite(probes, set_id=set_id, notes=notes)
    if mia:
        trained = {r["target"] for r in rows["train"]} | {r["prompt"] for r in rows["train"]}
        suite.mia_members, suite.mia_nonmembers = _mia_texts(
            store, trained, forget, subjects, corpora, notes, holdout=mia_nonmembers == "holdout"
        )
        suite.mia_members = _cap(suite.mia_members, max_per_set, "text_id")
        suite.mia_nonmembers = _cap(suite.mia_nonmembers, max_per_set, "text_id")
    if tofu:
        suite.truth = _truth_items(store, forget, same_corpus, max_per_set)
    return suite


def _retain_facts(store: Store, facts: list[dict[str, Any]], which: str) -> list[dict[str, Any]]:
    """The retain probe set's facts: with ``which="retain_perturbed"``, per corpus, the facts that
    have perturbed answers when some do (TOFU's ``retain_perturbed``: open-unlearning's retain ROUGE
    set), else all; ``"all"``: every fact."""
    if which == "all" or not facts:
        return facts
    with_perturbed = {r["fact_id"] for r in q.fact_probes(store, ["perturbed_answer"], [f["fact_id"] for f in facts])}
    corpora_with = {f["corpus"] for f in facts if f["fact_id"] in with_perturbed}
    return [f for f in facts if f["corpus"] not in corpora_with or f["fact_id"] in with_perturbed]


def _mia_texts(
    store: Store,
    trained: set[str],
    forget: list[dict[str, Any]],
    subjects: Sequence[str],
    corpora: Sequence[str],
    notes: list[str],
    *,
    holdout: bool = True,
) -> tuple[list[MiaText], list[MiaText]]:
    """Members and non-members, chosen per corpus so that both sides are texts of one kind
    (``trained``: texts the unlearning set trained on, never non-members; ``holdout``: holdout facts
    as non-members where the corpus has them)."""
    members: list[MiaText] = []
    nonmembers: list[MiaText] = []
    for corpus in corpora:
        facts = [f for f in forget if f["corpus"] == corpus]
        fact_ids = [f["fact_id"] for f in facts]
        # 1. the dataset's own MIA texts (RWKU: forget_mia vs retain_mia passages)
        inside = [
            MiaText(r["probe_id"], r["text"], True, "mia_member", r["fact_id"])
            for r in q.subject_probes(store, ["mia_member"], subjects, [corpus])
            + q.fact_probes(store, ["mia_member"], fact_ids)
        ]
        outside = [
            MiaText(r["probe_id"], r["text"], False, "mia_nonmember", r["fact_id"])
            for r in q.corpus_probes(store, "mia_nonmember", [corpus])
        ]
        how = "the dataset's mia_member / mia_nonmember texts"
        if not (inside and outside):
            # 2. and 3.: the forget facts as taught, against never-taught texts in the same layout
            inside = [
                MiaText(f["fact_id"], f["answer"], True, "forget_fact", f["fact_id"], f["question"]) for f in facts
            ]
            outside = [
                MiaText(f["fact_id"], f["answer"], False, "holdout_fact", f["fact_id"], f["question"])
                for f in (q.facts_of_split(store, "holdout") if holdout else [])
                if f["corpus"] == corpus
            ]
            how = "forget facts' answers vs holdout facts' answers (never taught), each given its question"
            if not outside:
                questions = {f["fact_id"]: f["question"] for f in facts}
                outside = [
                    MiaText(r["probe_id"], r["text"], False, "perturbed_answer", r["fact_id"], questions[r["fact_id"]])
                    for r in q.fact_probes(store, ["perturbed_answer"], fact_ids)
                    if r["text"] not in trained
                ]
                how = (
                    "forget facts' answers vs their perturbed answers (never taught; any the unlearning set "
                    "trained on left out), each given the question"
                )
        if inside and outside:
            members += inside
            nonmembers += outside
            notes.append(f"MIA on {corpus}: {how}")
        else:
            notes.append(
                f"MIA on {corpus}: skipped, no non-member texts (no mia_nonmember probes, holdout facts "
                "or untrained perturbed answers)"
            )
    return list({t.text_id: t for t in members}.values()), list({t.text_id: t for t in nonmembers}.values())


def _truth_items(
    store: Store, forget: list[dict[str, Any]], same_corpus: Any, max_per_set: int | None
) -> dict[str, list[TruthItem]]:
    groups: dict[str, list[dict[str, Any]]] = {
        "forget": forget,
        "retain": same_corpus(q.facts_of_split(store, "retain", neighbor=False)),
    }
    for fact in q.facts_of_split(store, "utility"):
        groups.setdefault(fact.get("group_name") or "utility", []).append(fact)
    out: dict[str, list[TruthItem]] = {}
    for group, facts in groups.items():
        facts = sorted(facts, key=lambda f: f["fact_id"])
        probes = q.fact_probes(store, ["paraphrased_answer", "perturbed_answer"], [f["fact_id"] for f in facts])
        para: dict[str, list[str]] = defaultdict(list)
        pert: dict[str, list[str]] = defaultdict(list)
        for row in probes:
            (para if row["kind"] == "paraphrased_answer" else pert)[row["fact_id"]].append(row["text"])
        items = [
            TruthItem(
                group,
                f["fact_id"],
                f["question"],
                f["answer"],
                tuple(sorted(para[f["fact_id"]])) or (f["answer"],),
                tuple(sorted(pert[f["fact_id"]])),
            )
            for f in facts
            if pert.get(f["fact_id"])
        ]
        items = items if max_per_set is None else items[:max_per_set]
        if items:
            out[group] = items
    return out
