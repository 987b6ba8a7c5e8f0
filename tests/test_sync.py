"""CRM sync end to end: the engine (tasks/sync.py), its ledger in MongoDB and the real
connectors against the sandbox CRMs on the session's sandbox server, with seeded faults."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pymongo.database import Database
from typer.testing import CliRunner

from flows.crm_sync import dead_letter_report
from leadflow.cli import app
from leadflow.settings import Settings
from models.crm import load_mapping
from tasks.sync import LEDGER, CrmSync, Ledger, build_clients
from tests.conftest import RunningServices, leadflow_env
from tests.crm import control, make_leads, no_faults, truth

# Object kinds each sandbox counts, and the ledger's external-id key of each.
KINDS = {
    "salesforce": {"leads": "Lead"},
    "hubspot": {"contacts": "contact", "companies": "company"},
    "pipedrive": {
        "organizations": "organization",
        "persons": "person",
        "deals": "deal",
        "notes": "note",
    },
}
FAULTS_20 = {"error_share": 0.05, "throttle_share": 0.05, "timeout_share": 0.05,
             "lost_response_share": 0.05, "timeout_seconds": 0.6}  # fmt: skip
NO_FAULTS = no_faults(timeout_seconds=None)  # "timeouts" stay as the session set them
# Fast connectors: short time-outs and backoff (the sandbox holds "timeouts" 0.6 s).
FAST = {
    "LEADFLOW_SALESFORCE_TIMEOUT": "0.3", "LEADFLOW_SALESFORCE_BACKOFF": "0.05",
    "LEADFLOW_SALESFORCE_BACKOFF_MAX": "1", "LEADFLOW_HUBSPOT_TIMEOUT": "0.3",
    "LEADFLOW_HUBSPOT_BACKOFF": "0.05", "LEADFLOW_HUBSPOT_BACKOFF_MAX": "0.1",
    "LEADFLOW_PIPEDRIVE_TIMEOUT": "0.3", "LEADFLOW_PIPEDRIVE_BACKOFF": "0.05",
    "LEADFLOW_PIPEDRIVE_BACKOFF_MAX": "0.1",
    # Search for an unclear create only once the sandbox's held ("timeout") writes landed.
    "LEADFLOW_PIPEDRIVE_WRITE_SETTLE": "0.8",
}  # fmt: skip
# Each CRM's own rate limit, raised so the test measures faults, not waiting (the limits
# themselves are tested in tests/test_crm_<crm>.py).
ROOMY = {
    "hubspot": {"requests_per_ten_seconds": 100_000},
    "pipedrive": {"requests_per_two_seconds": 100_000},
}


@dataclass
class Crms:
    url: str
    destinations: list[str]

    def control(self, destination: str, **knobs: Any) -> None:
        control(f"{self.url}/{destination}", **knobs)

    def truth(self, destination: str) -> dict[str, Any]:
        return truth(f"{self.url}/{destination}")


@pytest.fixture
def crms(services: RunningServices) -> Iterator[Crms]:
    crms = Crms(services.sandbox_url, ["salesforce", "hubspot", "pipedrive"])
    for destination in crms.destinations:
        crms.control(destination, reset=True, **NO_FAULTS, **ROOMY.get(destination, {}))
    yield crms
    for destination in crms.destinations:
        crms.control(destination, **NO_FAULTS)


def engine(settings: Settings, db: Database, destinations: list[str], **options: Any) -> CrmSync:
    mapping = load_mapping(settings.crm_mapping)
    clients = build_clients(mapping, settings)
    ledger = Ledger(db[LEDGER])
    ledger.ensure_indexes()
    return CrmSync(mapping, {d: clients[d] for d in destinations}, ledger, **options)


def assert_exactly_once(crms: Crms, destination: str, lead_ids: set[str], db: Database) -> None:
    truth = crms.truth(destination)
    ledger = {d["lead_id"]: d for d in db[LEDGER].find({"destination": destination})}
    for kind, ledger_key in KINDS[destination].items():
        records = truth[kind]
        assert records["duplicates"] in ({}, []), (destination, kind, records["duplicates"])
        assert records["count"] == len(lead_ids), (destination, kind, records["count"])
        ids = {str(r.get("id") or r.get("Id")) for r in records["records"]}
        for lead_id in lead_ids:
            assert ledger[lead_id]["status"] == "synced", ledger[lead_id]
            assert str(ledger[lead_id]["external_ids"][ledger_key]) in ids


def test_faulty_crms_end_with_every_lead_exactly_once_and_replays_send_nothing(
    services: RunningServices, crms: Crms, mongo_db: Database
) -> None:
    leads = make_leads(200, "S")
    with leadflow_env(**FAST) as settings:
        sync = engine(settings, mongo_db, crms.destinations, retry_backoff=0, max_attempts=50)
        for destination in crms.destinations:
            crms.control(destination, **FAULTS_20)
        first = sync.sync(leads)
        rounds = 1
        by_id = {lead.lead_id: lead for lead in leads}
        while rounds < 40 and any(
            sync.ledger.due(d, sync.clock(), 1000) for d in crms.destinations
        ):
            sync.retry_due(lambda ids: [by_id[i] for i in ids])
            rounds += 1
        for destination in crms.destinations:
            crms.control(destination, **NO_FAULTS)
        # Held ("timeout") requests land late: let them, then count.
        time.sleep(0.8)
        lead_ids = {lead.lead_id for lead in leads if lead.lead_id}
        for destination in crms.destinations:
            assert_exactly_once(crms, destination, lead_ids, mongo_db)
            assert first[destination].considered == 200

        again = sync.sync(leads)
        assert all(c.sent == 0 and c.unchanged == 200 for c in again.values()), again

        changed = leads[5].model_copy(update={"phone": "+15125550000"})
        once = sync.sync([*leads[:5], changed, *leads[6:]])
        for destination, counts in once.items():
            assert (counts.sent, counts.updated, counts.created) == (1, 1, 0), (destination, counts)
        for destination in crms.destinations:
            assert_exactly_once(crms, destination, lead_ids, mongo_db)


def test_an_always_failing_crm_dead_letters_every_lead_with_the_reason(
    services: RunningServices, crms: Crms, mongo_db: Database
) -> None:
    destination = crms.destinations[0]
    leads = make_leads(5, "D")
    with leadflow_env(**FAST, LEADFLOW_SALESFORCE_MAX_RETRIES="0") as settings:
        sync = engine(settings, mongo_db, [destination], retry_backoff=0, max_attempts=3)
        crms.control(destination, error_share=1.0)
        for _ in range(3):
            sync.sync_destination(destination, leads)  # type: ignore[arg-type]
    dead = sync.ledger.dead(destination)
    assert sorted(d["lead_id"] for d in dead) == sorted(lead.lead_id for lead in leads)  # type: ignore[type-var]
    assert all(d["attempts"] == 3 and d["last_error"] for d in dead)
    report = dead_letter_report(dead)
    assert all(lead.lead_id in report for lead in leads if lead.lead_id)
    # Dead letters are not retried by later syncs...
    crms.control(destination, error_share=0)
    assert sync.sync_destination(destination, leads).sent == 0  # type: ignore[arg-type]
    # ...until `leadflow crm retry` puts them back; `leadflow crm dead` lists them with reasons.
    with leadflow_env(LEADFLOW_MONGODB_DB=mongo_db.name):
        listed = CliRunner().invoke(app, ["crm", "dead", "--crm", destination])
        assert listed.exit_code == 1 and all(lead.lead_id in listed.output for lead in leads)
        retried = CliRunner().invoke(app, ["crm", "retry", "--crm", destination])
        assert retried.exit_code == 0 and "5 dead letter(s) back to pending" in retried.output
        assert CliRunner().invoke(app, ["crm", "dead"]).exit_code == 0
        status = CliRunner().invoke(app, ["crm", "status"])
        assert status.exit_code == 0
        assert re.search(rf"{destination}\s*│\s*pending\s*│\s*5\s", status.output), status.output
    assert sync.sync_destination(destination, leads).sent == 5  # type: ignore[arg-type]


def test_merged_leads_merge_in_the_crms_that_can_and_are_marked_where_not(
    services: RunningServices, crms: Crms, mongo_db: Database
) -> None:
    survivor, tombstone = make_leads(2, "M")
    with leadflow_env(**FAST) as settings:
        sync = engine(settings, mongo_db, crms.destinations, retry_backoff=0)
        assert all(c.created == 2 for c in sync.sync([survivor, tombstone]).values())
        gone = tombstone.model_copy(update={"merged_into": survivor.lead_id})
        counts = sync.sync([survivor], [gone])
    assert all(c.merged == 1 for c in counts.values()), counts
    ledger = {d["destination"]: d for d in mongo_db[LEDGER].find({"lead_id": tombstone.lead_id})}
    assert {d: e["status"] for d, e in ledger.items()} == dict.fromkeys(crms.destinations, "merged")
    # HubSpot and Pipedrive merge the records: one contact / person is left.
    assert crms.truth("hubspot")["contacts"]["count"] == 1
    assert crms.truth("pipedrive")["persons"]["count"] == 1
    # Salesforce's API cannot merge leads: the tombstone's record says where it went.
    records = {r["Leadflow_Lead_Id__c"]: r for r in crms.truth("salesforce")["leads"]["records"]}
    assert records[tombstone.lead_id]["Leadflow_Merged_Into__c"] == survivor.lead_id
    # A replay of the same merge does nothing more.
    with leadflow_env(**FAST) as settings:
        again = engine(settings, mongo_db, crms.destinations).sync([survivor], [gone])
    assert all(c.merged == 0 and c.sent == 0 for c in again.values()), again
