"""The select step as a Prefect flow: ``facts kept <- facts, knowledge probe, caps``.

Runs between ingest and generate when the config has ``probe.enabled`` or ``select.max_facts``:

1. the facts of the pipeline's corpora, with any a previous selection set aside restored
   (``data.fact_selection.selectable_facts``);
2. the knowledge probe (``evaluation.knowledge_probe``) on the facts of ``probe.splits``: the ones
   the model does not answer are set aside (reason ``unknown``; ``key_in_question`` when the question
   itself states the answer's key span, so that an echo cannot pass for knowing it);
3. the caps of ``select.max_facts`` on what is left (reason ``over_cap``);
4. one ``fact_selection`` row per fact, and split ``set_aside`` for the facts not kept, in one
   transaction.

Wiring only. Passes paths and ids, never models:

    select_facts("lune.duckdb", ["rwku-smollm2"], select={}, probe={"enabled": True, "model": "smollm2-135m-instruct"})
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from prefect import flow

from lune.data.errors import LuneError
from lune.data.fact_selection import Decision, cap_facts, record_selection, selectable_facts
from lune.data.records import SPLITS
from lune.data.store import Store
from lune.evaluation.knowledge_probe import ProbeConfig, ProbeVerdict, probe_model
from lune.flows.select_config import SelectConfig


def decide(
    facts: Sequence[Mapping[str, Any]],
    verdicts: Mapping[str, ProbeVerdict],
    max_facts: Mapping[str, int],
    model: str | None,
) -> list[Decision]:
    """One decision per fact: ``unknown`` (or ``key_in_question``) when probed and not known, then
    ``over_cap`` beyond its split's cap among the facts still kept, else ``kept``."""
    known = [f for f in facts if f["fact_id"] not in verdicts or verdicts[f["fact_id"]].known]
    over = cap_facts(known, max_facts)
    out = []
    for fact in facts:
        verdict = verdicts.get(fact["fact_id"])
        if verdict is not None and not verdict.known:
            reason = verdict.reason or "unknown"
        elif fact["fact_id"] in over:
            reason = "over_cap"
        else:
            reason = "kept"
        out.append(
            Decision(
                fact["fact_id"],
                fact["split"],
                reason == "kept",
                reason,
                model if verdict is not None else None,
                verdict.answers if verdict is not None else (),
                verdict.score if verdict is not None else None,
            )
        )
    return out


@flow(name="select", log_prints=True, validate_parameters=False)
def select_facts(
    db: str,
    corpora: Sequence[str],
    *,
    select: SelectConfig | Mapping[str, Any] | None = None,
    probe: ProbeConfig | Mapping[str, Any] | None = None,
    model: str | None = None,
    run_id: str | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """Select the facts of ``corpora`` that the pipeline works on; return the counts per split and
    reason, the probe's recall per split and the wall time. ``model``: the pipeline's model, probed
    when ``probe.model`` is not set."""
    caps = select if isinstance(select, SelectConfig) else SelectConfig.model_validate(select or {})
    probing = probe if isinstance(probe, ProbeConfig) else ProbeConfig.model_validate(probe or {})
    probe_ref = probing.model or model
    if probing.enabled and not probe_ref:
        raise LuneError("probe.enabled needs a model: set probe.model or the config's `model`")
    started = time.perf_counter()
    with (
        Store.open(db) as store,
        store.run(
            "select",
            {
                "corpora": list(corpora),
                "select": caps.model_dump(mode="json"),
                "probe": probing.model_dump(mode="json"),
            },
            run_id=run_id,
            parent_run_id=parent_run_id,
        ) as run,
    ):
        facts = selectable_facts(store, corpora, SPLITS)
        verdicts: dict[str, ProbeVerdict] = {}
        if probing.enabled:
            asked = [
                f
                for f in facts
                if f["split"] in probing.splits and (probing.corpora is None or f["corpus"] in probing.corpora)
            ]
            paraphrases: dict[str, list[str]] = {}
            if probing.paraphrases:
                from lune.data.evaluation_queries import fact_probes

                for row in fact_probes(store, ["paraphrased_question"], [f["fact_id"] for f in asked]):
                    paraphrases.setdefault(row["fact_id"], []).append(row["text"])
            print(f"select: probing {probe_ref} on {len(asked)} facts ({', '.join(probing.splits)})")
            verdicts = {v.fact_id: v for v in probe_model(str(probe_ref), asked, probing, paraphrases)}
            run.artefacts["probe_model"] = str(probe_ref)
        decisions = decide(facts, verdicts, caps.max_facts, str(probe_ref) if probing.enabled else None)
        counts = record_selection(store, run.run_id, decisions)
        recall = {}
        for split in probing.splits if probing.enabled else ():
            probed = [verdicts[f["fact_id"]] for f in facts if f["split"] == split and f["fact_id"] in verdicts]
            if probed:
                recall[split] = round(sum(v.known for v in probed) / len(probed), 4)
        summary = {
            "run_id": run.run_id,
            "facts": len(facts),
            "kept": sum(d.keep for d in decisions),
            "counts": counts,
            "known_share": recall,
            "seconds": round(time.perf_counter() - started, 3),
        }
        run.metrics.update(summary)
    print(f"select: kept {summary['kept']} of {summary['facts']} facts ({counts}); known share {recall}")
    if facts and not any(d.keep and d.split == "forget" for d in decisions):
        raise LuneError(
            f"select: no forget fact of {', '.join(corpora)} is kept (known share {recall}); lower "
            "probe.threshold, add facts the model knows, or raise select.max_facts.forget"
        )
    return summary
