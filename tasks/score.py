"""Stage `score`: a 0-100 score, the top reasons and the model version on every lead.

The promoted "leads" model scores when its feature schema matches today's features, else the
documented heuristic prior (models/scoring.py). Also here: finding the stored leads that a
`lead_id,outcome` file names, for `leadflow train --outcomes`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from connectors.mongo import LeadStore, shared_store
from models.lead import Lead
from models.scoring import ModelRegistry, score_leads

STAGE = "score"


def score(leads: Sequence[Lead], registry: ModelRegistry | None = None) -> str:
    """Score the batch in place; returns the model version that scored it."""
    return score_leads(leads, registry)


@task(name="score", cache_policy=NO_CACHE, persist_result=False)
def score_task(leads: list[Lead], run_id: str) -> list[Lead]:
    model_version = score(leads)
    store = shared_store()
    store.record_stage(run_id, STAGE, {"scored": len(leads)})
    # Counts are integers; the version goes next to them on the run document.
    store.update_run(run_id, score_model_version=model_version)
    get_run_logger().info("scored %d leads with %s", len(leads), model_version)
    return leads


@dataclass
class LabelledLeads:
    leads: list[Lead]
    labels: list[int]
    not_found: list[str]  # requested ids with no stored lead (or a broken merge chain)
    via_merge: int  # requested ids that were merged into another lead, which was used instead


def labelled_leads(store: LeadStore, outcomes: Mapping[str, int]) -> LabelledLeads:
    """The live leads behind the outcome ids, following `merged_into` to each survivor.

    A survivor named by several ids (itself and leads merged into it) counts as converted when
    any of them converted.
    """
    redirect: dict[str, str] = {}  # tombstone id -> the lead it was merged into
    live: dict[str, Lead] = {}
    fetched: set[str] = set()
    to_fetch = set(outcomes)
    while to_fetch:  # one round trip per merge hop, not per lead
        fetched |= to_fetch
        for lead in store.leads_by_ids(sorted(to_fetch)):
            if lead.merged_into:
                redirect[str(lead.lead_id)] = lead.merged_into
            else:
                live[str(lead.lead_id)] = lead
        to_fetch = {target for target in redirect.values() if target not in fetched}

    labels: dict[str, int] = {}
    not_found: list[str] = []
    via_merge = 0
    for requested, outcome in outcomes.items():
        survivor = _survivor(requested, redirect)
        if survivor not in live:
            not_found.append(requested)
            continue
        via_merge += survivor != requested
        labels[survivor] = max(labels.get(survivor, 0), outcome)
    return LabelledLeads(
        leads=[live[lead_id] for lead_id in labels],
        labels=list(labels.values()),
        not_found=not_found,
        via_merge=via_merge,
    )


def _survivor(lead_id: str, redirect: Mapping[str, str]) -> str:
    visited: set[str] = set()
    while lead_id in redirect and lead_id not in visited:  # a cycle is corrupt data: stop
        visited.add(lead_id)
        lead_id = redirect[lead_id]
    return lead_id
