"""The lead pipeline end to end: real crawls of the sandbox directory over HTTP, the real
Prefect server, the real MongoDB-wire server over TCP."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from connectors.mongo import LeadStore, count
from leadflow.settings import SANDBOX_HUNTER_KEY, get_settings
from models.search import SearchSpec
from tests.conftest import RunningServices, leadflow_env


@dataclass
class PipelineEnv:
    store: LeadStore
    truth: dict[str, str | None]

    def run(self, spec: SearchSpec) -> tuple[Any, dict[str, Any] | None]:
        from flows.lead_pipeline import lead_pipeline

        state = lead_pipeline(spec, return_state=True)
        run_id = str(state.state_details.flow_run_id)
        return state, self.store.get_run(run_id)

    def live_leads(self) -> list[dict[str, Any]]:
        return list(self.store.leads.find({"merged_into": None}, {"_id": 0}))


@pytest.fixture(scope="module")
def pipeline_env(services: RunningServices) -> Iterator[PipelineEnv]:
    """Runs in their own database; task retries without delay so failures are quick."""
    with leadflow_env(
        LEADFLOW_MONGODB_DB=f"pipeline_{os.getpid()}",
        LEADFLOW_TASK_RETRIES="1",
        LEADFLOW_TASK_RETRY_DELAY="0",
    ) as settings:
        store = LeadStore.from_settings(settings)
        truth_path = settings.home_dir / "sandbox" / "ground_truth.json"
        truth = json.loads(truth_path.read_text(encoding="utf-8"))
        yield PipelineEnv(store=store, truth=truth)
        store.client.drop_database(settings.mongodb_db)
        store.close()


@pytest.fixture
def env_override() -> Iterator[dict[str, str]]:
    """Set LEADFLOW_* variables for one test (the crawl subprocess inherits them)."""
    changes: dict[str, str] = {}
    saved = dict(os.environ)
    yield changes
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()


def apply(changes: dict[str, str], **values: str) -> None:
    changes.update(values)
    os.environ.update(values)
    get_settings.cache_clear()


def slack_messages() -> list[dict[str, Any]]:
    """What the sandbox's Slack incoming webhook received."""
    from sandbox.slack import DEFAULT_HOOK

    url = f"{get_settings().sandbox_url}/slack/__sandbox/messages"
    return list(httpx.get(url, timeout=10).json().get(DEFAULT_HOOK, []))


def listing_ids(lead: dict[str, Any]) -> list[str]:
    return [s["source_id"] for s in lead["sources"] if s["source"] == "directory"]


@pytest.fixture(scope="module")
def demo_run(pipeline_env: PipelineEnv) -> tuple[Any, dict[str, Any]]:
    state, run = pipeline_env.run(SearchSpec(limit=5000))
    assert state.is_completed(), state.message
    assert run is not None
    return state, run


def test_demo_run_merges_every_seeded_duplicate_and_no_distinct_businesses(
    pipeline_env: PipelineEnv, demo_run: tuple[Any, dict[str, Any]]
) -> None:
    _, run = demo_run
    leads = pipeline_env.live_leads()
    entity_of = pipeline_env.truth
    listings_by_entity: dict[str, set[str]] = defaultdict(set)
    for listing, entity in entity_of.items():
        if entity is not None:
            listings_by_entity[entity].add(listing)

    lead_by_listing = {listing: lead for lead in leads for listing in listing_ids(lead)}
    for lead in leads:
        entities = {entity_of[listing] for listing in listing_ids(lead)}
        assert len(entities) == 1, f"{lead['name']} merges distinct businesses: {listing_ids(lead)}"

    duplicates = {e: ls for e, ls in listings_by_entity.items() if len(ls) > 1}
    assert duplicates, "the demo directory seeds duplicate listings"
    for entity, listings in duplicates.items():
        holders = {
            lead_by_listing[listing]["lead_id"]
            for listing in listings
            if listing in lead_by_listing
        }
        assert len(holders) == 1, (
            f"entity {entity}: listings {sorted(listings)} ended in {len(holders)} leads"
        )
        (holder,) = holders
        lead = next(lead for lead in leads if lead["lead_id"] == holder)
        assert set(listing_ids(lead)) >= {x for x in listings if x in lead_by_listing}

    assert run["state"] == "COMPLETED"
    summary = run["summary"]
    website_emails = [e for lead in leads for e in lead["emails"] if e["source"] == "website"]
    assert website_emails, "the contacts stage found no email on the demo websites"
    assert summary["leads_with_email"] >= len({e["value"] for e in website_emails}) > 0
    assert summary["inserted"] == len(leads)
    assert summary["scraped"] == summary["normalized"] + summary["quarantined"]


def hunter_usage(services: RunningServices) -> dict[str, int]:
    """Searches and verifications used, as the Hunter sandbox itself counts them."""
    data = httpx.get(
        f"{services.sandbox_url}/hunter/v2/account", params={"api_key": SANDBOX_HUNTER_KEY}
    ).json()["data"]["requests"]
    return {kind: data[kind]["used"] for kind in ("searches", "verifications")}


def test_every_stored_lead_is_enriched_scored_and_validated(
    pipeline_env: PipelineEnv, demo_run: tuple[Any, dict[str, Any]]
) -> None:
    _, run = demo_run
    summary = run["summary"]
    leads = pipeline_env.live_leads()
    assert summary["score_model"]
    for lead in leads:
        score = lead["score"]
        assert score is not None and 0 <= score["value"] <= 100, lead["name"]
        assert score["reasons"] and score["model_version"] == summary["score_model"]
        assert lead["enrichment"]["status"] in ("done", "pending", "skipped")
    emails = [e for lead in leads for e in lead["emails"]]
    assert any(e["source"] == "hunter" for e in emails), "Hunter found nothing"
    assert any(e["status"] not in ("unverified",) for e in emails), "nothing was verified"
    assert any(lead["enrichment"].get("company_facts") for lead in leads)
    assert summary["enrich_searches_paid"] > 0 and summary["enrich_verifications_paid"] > 0
    # Waterfall: no lead whose website showed an address got Hunter addresses too.
    for lead in leads:
        sources = {e["source"] for e in lead["emails"]}
        assert not {"website", "hunter"} <= sources, lead["name"]
    # Ranked by score in the top-leads artifact's order.
    values = sorted((lead["score"]["value"] for lead in leads), reverse=True)
    assert values[0] >= values[-1]


def test_non_leads_and_broken_pages_are_quarantined_with_reasons(
    pipeline_env: PipelineEnv, demo_run: tuple[Any, dict[str, Any]]
) -> None:
    _, run = demo_run
    quarantined = pipeline_env.store.quarantined_for_run(run["run_id"])
    assert len(quarantined) == run["summary"]["quarantined"] > 0
    assert all(q["reasons"] and q["stage"] == "normalize" for q in quarantined)
    reasons = " | ".join(r for q in quarantined for r in q["reasons"])
    assert "missing name" in reasons or "nothing identifies" in reasons
    non_leads = {listing for listing, entity in pipeline_env.truth.items() if entity is None}
    quarantined_ids = {q["payload"].get("source_id") for q in quarantined}
    stored_ids = {listing for lead in pipeline_env.live_leads() for listing in listing_ids(lead)}
    assert not (non_leads & stored_ids), "a non-lead row was stored as a lead"
    # nothing lost: every scraped record is a lead's source record or a quarantined row
    feed = get_settings().runs_dir / run["run_id"] / "directory.jsonl"
    scraped_ids = {
        json.loads(line)["source_id"] for line in feed.read_text(encoding="utf-8").splitlines()
    }
    assert scraped_ids == stored_ids | quarantined_ids


def test_summary_and_top_leads_artifacts_are_on_the_flow_run(
    demo_run: tuple[Any, dict[str, Any]],
) -> None:
    state, _ = demo_run
    flow_run_id = state.state_details.flow_run_id

    async def read() -> list[Any]:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                )
            )

    import asyncio

    artifacts = {a.key: a for a in asyncio.run(read())}
    assert {"run-summary", "top-leads"} <= set(artifacts)
    assert "inserted" in str(artifacts["run-summary"].data)
    table = artifacts["top-leads"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert rows and rows[0]["lead_id"]
    completed = [m for m in slack_messages() if "completed" in m["text"]]
    assert completed and "inserted" in json.dumps(completed[0]["blocks"])


def test_second_run_is_idempotent_keeps_ids_and_updates_last_seen(
    services: RunningServices, pipeline_env: PipelineEnv, demo_run: tuple[Any, dict[str, Any]]
) -> None:
    before = {lead["lead_id"]: lead for lead in pipeline_env.live_leads()}
    paid_before = hunter_usage(services)
    state, run = pipeline_env.run(SearchSpec(limit=5000))
    assert state.is_completed(), state.message
    after = {lead["lead_id"]: lead for lead in pipeline_env.live_leads()}
    assert set(after) == set(before)
    assert run is not None and run["summary"]["inserted"] == 0
    # The same domains are not paid for twice: the sandbox's own /account did not move.
    assert hunter_usage(services) == paid_before
    assert run["summary"]["enrich_searches_paid"] == 0
    assert run["summary"]["enrich_cache_hits"] > 0
    # What the first run left pending (company lookups the provider was still gathering,
    # answered 202) is finished by this one.
    pending_before = [i for i, lead in before.items() if lead["enrichment"]["status"] == "pending"]
    assert all(after[i]["enrichment"]["status"] == "done" for i in pending_before)
    for lead_id, lead in after.items():
        assert lead["first_seen"] == before[lead_id]["first_seen"]
        assert lead["last_seen"] > before[lead_id]["last_seen"]
        assert run["run_id"] in lead["run_ids"] and len(lead["run_ids"]) == 2
    assert count(pipeline_env.store.leads, {}) == len(before) + count(
        pipeline_env.store.leads, {"merged_into": {"$ne": None}}
    )


def test_category_and_location_filter(pipeline_env: PipelineEnv) -> None:
    state, run = pipeline_env.run(SearchSpec(category="dentist", location="Austin, TX", limit=50))
    assert state.is_completed(), state.message
    assert run is not None
    leads = pipeline_env.store.leads_of_run(run["run_id"])
    assert leads
    assert all(lead.address.city == "Austin" and lead.category == "dentist" for lead in leads)


def test_crawl_where_every_request_fails_fails_the_run_clearly_and_loses_nothing(
    pipeline_env: PipelineEnv, demo_run: tuple[Any, dict[str, Any]], env_override: dict[str, str]
) -> None:
    before = count(pipeline_env.store.leads, {})
    apply(env_override, LEADFLOW_DIRECTORY_URL="http://no-such-directory.test")
    state, run = pipeline_env.run(SearchSpec(limit=10))
    assert state.is_failed()
    assert "produced no items" in (state.message or "")
    assert run is not None and run["state"] == "FAILED"
    assert "produced no items" in run["state_message"]
    assert count(pipeline_env.store.leads, {}) == before
    # The failure reached Slack (the sandbox's incoming webhook) with its reason.
    assert any(
        "failed" in m["text"] and "produced no items" in json.dumps(m["blocks"])
        for m in slack_messages()
    )


def test_crawl_past_its_time_limit_is_stopped_and_the_run_fails_saying_so(
    pipeline_env: PipelineEnv, env_override: dict[str, str]
) -> None:
    apply(
        env_override,
        LEADFLOW_CRAWL_TIMEOUT="3",
        LEADFLOW_CRAWL_DOWNLOAD_DELAY="2",
        LEADFLOW_TASK_RETRIES="0",
    )
    state, run = pipeline_env.run(SearchSpec(limit=500))
    assert state.is_failed()
    assert "exceeded its time limit of 3s" in (state.message or "")
    assert run is not None and run["state"] == "FAILED"


def test_raw_items_are_kept_per_run(demo_run: tuple[Any, dict[str, Any]]) -> None:
    _, run = demo_run
    run_dir: Path = get_settings().runs_dir / run["run_id"]
    lines = (run_dir / "directory.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == run["summary"]["scraped"]
    assert json.loads((run_dir / "directory.stats.json").read_text())["item_scraped_count"] == len(
        lines
    )


@pytest.mark.parametrize("mode", ["fast", "browser"])
def test_both_sources_in_one_run_merge_cross_source_duplicates(
    pipeline_env: PipelineEnv, env_override: dict[str, str], mode: str
) -> None:
    apply(env_override, LEADFLOW_GOOGLE_MAPS_MODE=mode)
    spec = SearchSpec(
        category="dentist", location="Austin, TX", sources=["directory", "google_maps"], limit=200
    )
    state, run = pipeline_env.run(spec)
    assert state.is_completed(), state.message
    assert run is not None
    summary = run["summary"]
    assert summary["scraped_google_maps"] > 0 and summary["scraped_directory"] > 0
    leads = pipeline_env.store.leads_of_run(run["run_id"])
    from_maps = [lead for lead in leads if any(s.source == "google_maps" for s in lead.sources)]
    assert len(from_maps) == summary["scraped_google_maps"]  # one lead per place
    both = [lead for lead in from_maps if any(s.source == "directory" for s in lead.sources)]
    # Every maps place is a demo business, so nearly all meet their directory listing.
    assert len(both) >= 0.9 * len(from_maps)
    for lead in leads:
        entities = {
            pipeline_env.truth[s.source_id] for s in lead.sources if s.source == "directory"
        }
        assert len(entities) <= 1, f"{lead.name} merges distinct businesses"
        assert lead.category == "dentist" and lead.address.city == "Austin"
    maps_lead = both[0]
    assert maps_lead.details and maps_lead.details.get("timezone") == "America/Chicago"


def test_google_maps_past_the_120_cap_through_the_grid(
    pipeline_env: PipelineEnv, env_override: dict[str, str]
) -> None:
    """A box over the US sandbox cities holds more places than one result list (120)."""
    from models.search import BoundingBox
    from sandbox.directory.generate import generate

    apply(env_override, LEADFLOW_GOOGLE_MAPS_MODE="fast")
    box = BoundingBox(south=25, west=-125, north=50, east=-65)
    world = generate(get_settings().sandbox_seed, get_settings().sandbox_businesses)
    expected = {
        b.entity_id
        for b in world.businesses
        if b.name
        and b.latitude is not None
        and b.longitude is not None
        and box.south <= b.latitude <= box.north
        and box.west <= b.longitude <= box.east
    }
    assert len(expected) > 120
    state, run = pipeline_env.run(SearchSpec(sources=["google_maps"], bbox=box, limit=1000))
    assert state.is_completed(), state.message
    assert run is not None
    assert run["summary"]["scraped_google_maps"] == len(expected)
    leads = pipeline_env.store.leads_of_run(run["run_id"])
    place_ids = [s.place_id for lead in leads for s in lead.sources if s.source == "google_maps"]
    assert len(place_ids) == len(set(place_ids)) == len(expected)
