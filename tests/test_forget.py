"""`leadflow forget`: an email found by a real pipeline run is erased from every MongoDB
collection, every file under LEADFLOW_HOME and the Prefect artifacts, and a later run of the
same search does not bring it back."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client
from typer.testing import CliRunner

from connectors.mongo import LeadStore
from leadflow.cli import app
from leadflow.settings import Settings
from models.search import SearchSpec
from models.suppression import suppression_hash
from tests.conftest import RunningServices, leadflow_env

SPEC = SearchSpec(sources=["directory"], limit=40)


@pytest.fixture
def own_home_and_db(services: RunningServices, tmp_path: Path) -> Iterator[Settings]:
    """This test's own database and LEADFLOW_HOME (run files), on the session's services."""
    with leadflow_env(
        LEADFLOW_MONGODB_DB=f"forget_{os.getpid()}",
        LEADFLOW_HOME=str(tmp_path / "home"),
        LEADFLOW_TASK_RETRIES="0",
    ) as settings:
        yield settings
        LeadStore.from_settings(settings).client.drop_database(settings.mongodb_db)


def places_holding(value: str, store: LeadStore, home: Path) -> list[str]:
    """Every MongoDB document, file under `home` and Prefect artifact that mentions `value`."""
    needle = value.lower()
    found = [
        f"mongodb {name}: {doc.get('_id')}"
        for name in store.db.list_collection_names()
        for doc in store.db[name].find({})
        if needle in json.dumps(doc, default=str).lower()
    ]
    found += [
        f"file {path}"
        for path in home.rglob("*")
        if path.is_file() and needle.encode() in path.read_bytes().lower()
    ]
    with get_client(sync_client=True) as client:
        offset = 0
        while page := client.read_artifacts(limit=200, offset=offset):
            found += [
                f"artifact {a.key or a.id}"
                for a in page
                if needle in json.dumps(a.data, default=str).lower()
            ]
            offset += len(page)
    return found


def crm_records_holding(
    value: str, lead_id: str, store: LeadStore, settings: Settings
) -> list[str]:
    """The CRM records (by the sync ledger's ids for this lead) in the sandbox CRMs whose
    content mentions `value`."""
    found = []
    for entry in store.db["crm_sync"].find({"lead_id": lead_id}):
        truth = httpx.get(
            f"{settings.sandbox_url}/{entry['destination']}/__sandbox/truth", timeout=30
        )
        ids = {str(v) for v in entry.get("external_ids", {}).values()}
        for kind, records in truth.json().items():
            for record in records.get("records", []):
                if str(record.get("id") or record.get("Id")) in ids and value in json.dumps(record):
                    found.append(
                        f"{entry['destination']} {kind} {record.get('id') or record.get('Id')}"
                    )
    return found


def test_forget_an_email_everywhere_and_a_later_run_does_not_bring_it_back(
    own_home_and_db: Settings,
) -> None:
    from flows.lead_pipeline import lead_pipeline

    settings = own_home_and_db
    store = LeadStore.from_settings(settings)
    assert lead_pipeline(SPEC, return_state=True).is_completed()
    lead = store.leads.find_one({"best_email": {"$ne": None}, "merged_into": None})
    assert lead is not None, "the demo run found no email to forget"
    email = lead["best_email"]
    before = places_holding(email, store, settings.home_dir)
    assert any(p.startswith("mongodb leads") for p in before)
    assert any(p.startswith("file") for p in before)  # the website crawl's raw output

    # The run synced the lead to the three CRMs, email included.
    synced = store.db["crm_sync"].count_documents({"lead_id": lead["lead_id"], "status": "synced"})
    assert synced == 3
    assert crm_records_holding(email, lead["lead_id"], store, settings)

    result = CliRunner().invoke(app, ["forget", email])
    assert result.exit_code == 0, result.output
    assert "email forgotten" in result.output

    assert places_holding(email, store, settings.home_dir) == []
    assert crm_records_holding(email, lead["lead_id"], store, settings) == []
    # Only a hash is kept, so the list itself holds nothing personal.
    assert store.suppression.find_one({"_id": suppression_hash("email", email)}) is not None

    # The site still shows the address: the next run crawls it again and keeps none of it.
    assert lead_pipeline(SPEC, return_state=True).is_completed()
    assert places_holding(email, store, settings.home_dir) == []
    survivor = store.leads.find_one({"lead_id": lead["lead_id"]})
    assert survivor is not None and survivor["best_email"] != email
