"""MongoDB store over the wire (the embedded MongoDB-wire server): upserts, tombstones, runs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from connectors.mongo import CommandCounter, LeadStore, count
from models.lead import Lead, Quarantined, Review, SourceRecord, new_lead_id, utcnow
from tests.conftest import RunningServices


@pytest.fixture
def counter() -> CommandCounter:
    return CommandCounter()


@pytest.fixture
def store(
    services: RunningServices, mongo_db: Database, counter: CommandCounter
) -> Iterator[LeadStore]:
    client: MongoClient = MongoClient(services.mongo_url, tz_aware=True, event_listeners=[counter])
    store = LeadStore(client, mongo_db.name, batch_size=50)
    store.create_indexes()
    yield store
    client.close()


def make_lead(i: int, run_id: str = "run-1") -> Lead:
    now = utcnow()
    return Lead(
        lead_id=new_lead_id(),
        name=f"Business {i}",
        phone=f"+1512555{i:04d}",
        sources=[SourceRecord(source="directory", source_id=str(i), run_id=run_id)],
        first_seen=now,
        last_seen=now,
        run_ids=[run_id],
        blocking_keys=[f"ph:+1512555{i:04d}", f"nm:business {i}"],
    )


def test_bulk_upsert_one_round_trip_per_batch(store: LeadStore, counter: CommandCounter) -> None:
    leads = [make_lead(i) for i in range(120)]
    counter.reset()
    counts = store.upsert_leads(leads)
    assert (counts.inserted, counts.updated, counts.round_trips) == (120, 0, 3)
    assert counter.commands == {"update": 3}


def test_rerun_updates_and_keeps_first_seen_and_adds_run_ids(store: LeadStore) -> None:
    leads = [make_lead(i) for i in range(10)]
    first_seen = leads[0].first_seen
    store.upsert_leads(leads)
    stored_before = store.leads.find_one({"lead_id": leads[0].lead_id})
    assert stored_before is not None
    later = utcnow() + timedelta(seconds=5)
    for lead in leads:
        lead.first_seen = later  # a buggy caller: $setOnInsert must still keep the original
        lead.last_seen = later
        lead.run_ids = ["run-2"]
    counts = store.upsert_leads(leads)
    assert (counts.inserted, counts.updated) == (0, 10)
    doc = store.leads.find_one({"lead_id": leads[0].lead_id})
    assert doc is not None
    assert abs((doc["first_seen"] - first_seen).total_seconds()) < 0.01
    # last_seen is the store's clock (`$currentDate`), and stays a date, not a string
    assert isinstance(doc["last_seen"], datetime) and doc["last_seen"] > stored_before["last_seen"]
    assert sorted(doc["run_ids"]) == ["run-1", "run-2"]
    assert count(store.leads, {}) == 10


def test_pipeline_never_overwrites_the_analysts_review(store: LeadStore) -> None:
    lead = make_lead(1)
    store.upsert_leads([lead])
    store.leads.update_one(
        {"lead_id": lead.lead_id},
        {
            "$set": {
                "review": {
                    "status": "qualified",
                    "tags": ["hot"],
                    "notes": "call Monday",
                    "owner": "ana",
                }
            }
        },
    )
    lead.review = Review()  # whatever the pipeline holds, it is not written
    store.upsert_leads([lead])
    stored = store.get_lead(lead.lead_id or "")
    assert stored is not None and stored.review is not None
    assert (stored.review.status, stored.review.tags) == ("qualified", ["hot"])


def test_tombstones_are_left_out_of_candidates_and_counts(store: LeadStore) -> None:
    survivor, younger = make_lead(1), make_lead(2)
    younger.blocking_keys.append("ph:+15125550001")
    store.upsert_leads([survivor, younger])
    assert {c.lead_id for c in store.find_candidates(["ph:+15125550001"])} == {
        survivor.lead_id,
        younger.lead_id,
    }
    tombstone = younger.model_copy(update={"merged_into": survivor.lead_id})
    counts = store.upsert_leads([survivor], [tombstone])
    assert counts.tombstoned == 1
    assert [c.lead_id for c in store.find_candidates(["ph:+15125550001"])] == [survivor.lead_id]
    assert store.count_live_leads() == 1
    assert store.get_lead(younger.lead_id or "").merged_into == survivor.lead_id  # type: ignore[union-attr]


def test_lead_without_id_is_refused_with_a_clear_error(store: LeadStore) -> None:
    with pytest.raises(ValueError, match="no lead_id"):
        store.upsert_leads([Lead(name="No id")])


def test_quarantine_and_runs(store: LeadStore) -> None:
    store.quarantine(
        [
            Quarantined(
                run_id="r1", stage="normalize", reasons=["missing name"], payload={"phone": "1"}
            )
        ]
    )
    assert store.quarantined_for_run("r1")[0]["reasons"] == ["missing name"]
    store.create_run("r1", {"limit": 5}, state="SCHEDULED")
    store.create_run("r1", {"limit": 999}, state="RUNNING")  # the flow starting: spec kept
    store.record_stage("r1", "normalize", {"normalized": 4, "quarantined": 1})
    store.finish_run("r1", "FAILED", message="crawl produced no items")
    run = store.get_run("r1")
    assert run is not None
    assert (run["spec"], run["state"], run["state_message"]) == (
        {"limit": 5},
        "FAILED",
        "crawl produced no items",
    )
    assert run["counts"]["normalize"] == {"normalized": 4, "quarantined": 1}
