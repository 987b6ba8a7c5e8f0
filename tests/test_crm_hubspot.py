"""connectors/hubspot.py against the HubSpot sandbox served in a uvicorn thread.

The sandbox runs on a fake clock (its rate windows move only when a test says so) and is reset
before each test with generous limits and no faults; the client gets tiny back-offs and a short
time-out so retries and time-outs cost milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from connectors.hubspot import ID_PROPERTY, HubSpotClient, rate_limit_wait
from leadflow.settings import PROJECT_DIR, Settings
from models.crm import (
    CrmError,
    CrmMappingError,
    DestinationMapping,
    MappedLead,
    SyncOutcome,
    load_mapping,
    map_lead,
)
from models.lead import Address, CompanyFacts, Enrichment, Lead, Score
from sandbox.hubspot import HubSpotSandbox, hubspot_app
from tests.clock import FakeClock
from tests.crm import control, no_faults, truth
from tests.servers import serve_in_thread

TOKEN = "sandbox-hubspot-token"
MAPPING = load_mapping(PROJECT_DIR / "deployments" / "crm_mapping.yaml").destinations["hubspot"]
RETRIES = 3
NO_FAULTS = no_faults()


@dataclass
class Crm:
    base: str
    clock: FakeClock

    def control(self, **knobs: Any) -> dict[str, Any]:
        return control(self.base, **knobs)

    def truth(self, kind: str) -> Any:
        return truth(self.base, kind)

    def records(self, kind: str) -> dict[str, dict[str, Any]]:
        """The sandbox's records of a kind by lead_id."""
        return {r["properties"][ID_PROPERTY]: r for r in self.truth(kind)["records"]}

    def api(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.fixture(scope="module")
def server() -> Iterator[Crm]:
    clock = FakeClock()
    with serve_in_thread(hubspot_app(HubSpotSandbox(clock=clock))) as base:
        yield Crm(base, clock)


@pytest.fixture
def crm(server: Crm) -> Crm:
    server.control(
        reset=True, requests_per_ten_seconds=10_000, requests_per_day=1_000_000,
        list_ids=["1"], **NO_FAULTS,
    )  # fmt: skip
    return server


def client(
    crm: Crm,
    *,
    token: str = TOKEN,
    mapping: DestinationMapping = MAPPING,
    retries: int = RETRIES,
) -> HubSpotClient:
    return HubSpotClient(
        token, crm.base, mapping, timeout=0.3, retries=retries, backoff=0.001, backoff_max=0.01
    )


def lead(i: int, **changes: Any) -> Lead:
    fields: dict[str, Any] = {
        "lead_id": f"01HSTEST{i:018d}",
        "name": f"Business {i}",
        "category": "plumber",
        "phone": f"+1555010{i:04d}",
        "website": f"https://biz{i}.test",
        "domain": f"biz{i}.test",
        "best_email": f"info@biz{i}.test",
        "address": Address(city="Springfield", state="IL", country="US"),
        "score": Score(value=40 + i % 60 + 0.5, model_version="heuristic-1"),
        "enrichment": Enrichment(company_facts=CompanyFacts(provider="test", industry="Plumbing")),
    }
    return Lead(**(fields | changes))


def mapped(leads: list[Lead]) -> list[MappedLead]:
    return [map_lead(one, MAPPING) for one in leads]


def known_from(outcomes: list[SyncOutcome]) -> dict[str, dict[str, str]]:
    return {o.lead_id: o.external_ids for o in outcomes if o.external_ids}


def assert_each_lead_once(crm: Crm, records: list[MappedLead]) -> None:
    for kind in ("contacts", "companies"):
        truth = crm.truth(kind)
        assert truth["duplicates"] == {} and truth["count"] == len(records), kind


# --- upsert ----------------------------------------------------------------------------------


def test_first_upsert_creates_every_record_with_the_mapped_fields(crm: Crm) -> None:
    records = mapped([lead(i) for i in range(150)])  # two chunks: 100 + 50
    outcomes = client(crm).upsert(records, {})

    assert [o.lead_id for o in outcomes] == [r.lead_id for r in records]
    assert all(
        o.ok and o.created and set(o.external_ids) == {"company", "contact"} for o in outcomes
    )
    assert_each_lead_once(crm, records)
    contacts, companies = crm.records("contacts"), crm.records("companies")
    for record, outcome in zip(records, outcomes, strict=True):
        contact, company = contacts[record.lead_id], companies[record.lead_id]
        assert (contact["id"], company["id"]) == (
            outcome.external_ids["contact"],
            outcome.external_ids["company"],
        )
        want = record.objects["contact"]
        assert {k: contact["properties"].get(k) for k in want} == {
            k: str(v) for k, v in want.items()
        }
        assert {k: company["properties"].get(k) for k in record.objects["company"]} == {
            k: str(v) for k, v in record.objects["company"].items()
        }
    assert sorted(
        (a["contact"], a["company"]) for a in crm.truth("associations")["records"]
    ) == sorted((o.external_ids["contact"], o.external_ids["company"]) for o in outcomes)
    assert sorted(crm.truth("lists")["1"]) == sorted(o.external_ids["contact"] for o in outcomes)

    # The properties the mapping needed were created: the unique lead-id on both objects, the
    # custom contact ones typed after their lead fields.
    for kind in ("contacts", "companies"):
        assert crm.api(f"/crm/v3/properties/{kind}/{ID_PROPERTY}").json()["hasUniqueValue"]
    score = crm.api("/crm/v3/properties/contacts/leadflow_score").json()
    category = crm.api("/crm/v3/properties/contacts/leadflow_category").json()
    assert (score["type"], category["type"]) == ("number", "string")


def test_a_repeat_creates_nothing_and_a_change_updates_that_record_only(crm: Crm) -> None:
    records = mapped([lead(i) for i in range(20)])
    first = client(crm).upsert(records, {})

    again = client(crm).upsert(records, known_from(first))
    assert all(o.ok and not o.created for o in again)
    assert [o.external_ids for o in again] == [o.external_ids for o in first]
    assert_each_lead_once(crm, records)

    before = crm.records("contacts")
    changed = map_lead(lead(7, phone="+15559990000"), MAPPING)
    assert changed.payload_hash != records[7].payload_hash
    (outcome,) = client(crm).upsert([changed], known_from(first))
    assert outcome.ok and not outcome.created and outcome.external_ids == first[7].external_ids
    after = crm.records("contacts")
    assert after[changed.lead_id]["properties"]["phone"] == "+15559990000"
    touched = {k for k in after if after[k]["updatedAt"] != before[k]["updatedAt"]}
    assert touched == {changed.lead_id}
    assert crm.records("companies")[changed.lead_id]["properties"]["phone"] == "+15559990000"
    assert_each_lead_once(crm, records)


def test_records_hubspot_refuses_fail_alone_and_are_not_retryable(crm: Crm) -> None:
    records = mapped([lead(i) for i in range(8)])
    bad_email = map_lead(lead(3, best_email="not-an-email"), MAPPING)
    records[3] = bad_email

    outcomes = client(crm).upsert(records, {})

    refused = {o.lead_id: o for o in outcomes if not o.ok}
    assert set(refused) == {bad_email.lead_id}
    assert all(not o.retryable and not o.throttled for o in refused.values())
    invalid = refused[bad_email.lead_id].error or ""
    assert "INVALID_EMAIL" in invalid and "Email address not-an-email is invalid" in invalid
    # The company was written before the contact was refused: its id is kept for the retry.
    assert set(refused[bad_email.lead_id].external_ids) == {"company"}
    assert crm.truth("contacts")["count"] == 7 and crm.truth("companies")["count"] == 8


def test_a_lead_sharing_another_contacts_email_gets_its_own_contact_without_it(crm: Crm) -> None:
    """Branches of a chain share one email, and HubSpot holds one contact per email."""
    records = mapped([lead(i) for i in range(4)])
    branch = map_lead(lead(3, best_email="info@biz1.test"), MAPPING)  # lead 1's address
    records[3] = branch
    hub = client(crm)

    outcomes = hub.upsert(records, {})

    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    contacts = crm.records("contacts")
    assert len(contacts) == 4 and crm.truth("contacts")["duplicates"] == {}
    assert contacts[records[1].lead_id]["properties"]["email"] == "info@biz1.test"
    assert "email" not in contacts[branch.lead_id]["properties"]
    assert contacts[branch.lead_id]["properties"]["company"] == "Business 3"
    # A repeat finds the same contacts by lead_id and creates none.
    again = hub.upsert(records, known_from(outcomes))
    assert all(o.ok and not o.created for o in again)
    assert crm.truth("contacts")["count"] == 4


def test_a_persistent_429_throttles_the_rest_with_no_further_call(crm: Crm) -> None:
    hub = client(crm)
    hub.upsert(mapped([lead(0)]), {})  # properties checked: the next call starts with an upsert
    answered = crm.control()["answers"]
    crm.control(throttle_share=1)

    outcomes = hub.upsert(mapped([lead(i) for i in range(1, 6)]), {})

    assert all(o.throttled and not o.ok and o.retryable for o in outcomes)
    assert "TEN_SECONDLY_ROLLING" in (outcomes[0].error or "")
    state = crm.control(throttle_share=0)
    assert state["faults"]["injected"]["throttle"] == RETRIES + 1  # first try and retries only
    assert state["answers"] == answered  # nothing else reached the API
    assert crm.truth("contacts")["count"] == 1


def test_the_rate_window_mid_batch_keeps_the_ids_and_the_next_run_finishes(crm: Crm) -> None:
    hub = client(crm)
    hub.upsert(mapped([lead(0)]), {})
    records = mapped([lead(i) for i in range(1, 11)])
    # Room for the company and contact upserts, not for the association.
    crm.control(requests_per_ten_seconds=crm.control()["usage"]["ten_seconds"] + 2)

    outcomes = hub.upsert(records, {})

    assert all(o.throttled and set(o.external_ids) == {"company", "contact"} for o in outcomes)
    assert crm.control()["answers"]["429"] == RETRIES + 1
    crm.clock.advance(10)  # the window has passed
    done = hub.upsert(records, known_from(outcomes))
    assert all(o.ok for o in done)
    assert [o.external_ids for o in done] == [o.external_ids for o in outcomes]
    assert crm.truth("associations")["count"] == 11 and len(crm.truth("lists")["1"]) == 11


def test_the_daily_limit_throttles_at_once(crm: Crm) -> None:
    hub = client(crm)
    hub.upsert(mapped([lead(0)]), {})
    crm.control(requests_per_day=crm.control()["usage"]["day"])

    outcomes = hub.upsert(mapped([lead(1), lead(2)]), {})

    assert all(o.throttled for o in outcomes) and "DAILY" in (outcomes[0].error or "")
    assert crm.control()["answers"]["429"] == 1  # waiting cannot help: no retry


def test_rate_limit_wait_honours_retry_after_then_the_window() -> None:
    assert rate_limit_wait({"Retry-After": "3"}, {}, 60) == 3
    window = {"X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}
    assert rate_limit_wait(window, {"policyName": "TEN_SECONDLY_ROLLING"}, 60) == 10
    assert rate_limit_wait(window, {}, 2.5) == 2.5  # capped by backoff_max
    assert rate_limit_wait({}, {"policyName": "SECONDLY"}, 60) == 1
    assert rate_limit_wait(window, {"policyName": "DAILY"}, 60) is None


@pytest.mark.parametrize("retries", [0, RETRIES])
def test_faults_then_repeated_upserts_leave_each_lead_once(crm: Crm, retries: int) -> None:
    """Without retries every fault reaches the outcomes and only later rounds finish the
    records (replays across calls); with them, most faults are absorbed within a call."""
    records = mapped([lead(i) for i in range(200)])
    crm.control(
        error_share=0.05, throttle_share=0.05, timeout_share=0.05, lost_response_share=0.05,
        timeout_seconds=0.6,
    )  # fmt: skip
    known: dict[str, dict[str, str]] = {}
    pending = records
    rounds = 0
    while pending and rounds < 30:
        rounds += 1
        # A new client per round, as each sync run builds one (its property checks and
        # creations meet the faults too); batches of 25 as a small LEADFLOW_CRM_BATCH_SIZE.
        hub = client(crm, retries=retries)
        failed: list[MappedLead] = []
        for start in range(0, len(pending), 25):
            batch = pending[start : start + 25]
            try:
                outcomes = hub.upsert(batch, known)
            except CrmError:
                failed += batch
                continue
            assert all(o.ok or o.retryable for o in outcomes), [o.error for o in outcomes]
            for r, o in zip(batch, outcomes, strict=True):
                known[o.lead_id] = {**known.get(o.lead_id, {}), **o.external_ids}
                if not o.ok:
                    failed.append(r)
            if any(o.throttled for o in outcomes):  # the engine stops the run there
                failed += pending[start + 25 :]
                break
        pending = failed
    assert pending == [] and (rounds > 1 or retries > 0)
    time.sleep(0.8)  # requests held by a time-out fault land after their client gave up
    injected = crm.control(**NO_FAULTS)["faults"]["injected"]
    assert all(injected[kind] > 0 for kind in ("error", "throttle", "timeout", "lost_response"))

    assert_each_lead_once(crm, records)
    contacts, companies = crm.records("contacts"), crm.records("companies")
    for r in records:
        ids = known[r.lead_id]
        assert (ids["contact"], ids["company"]) == (
            contacts[r.lead_id]["id"],
            companies[r.lead_id]["id"],
        )
    assert crm.truth("associations")["count"] == 200
    assert sorted(crm.truth("lists")["1"]) == sorted(c["id"] for c in contacts.values())


# --- merge and clear_email -------------------------------------------------------------------


def test_merge_folds_the_tombstone_in_and_a_repeat_is_harmless(crm: Crm) -> None:
    hub = client(crm)
    survivor, tombstone, other = hub.upsert(mapped([lead(1), lead(2), lead(3)]), {})

    assert hub.merge(survivor.external_ids, tombstone.external_ids) is True
    contacts, companies = crm.records("contacts"), crm.records("companies")
    assert set(contacts) == set(companies) == {survivor.lead_id, other.lead_id}
    kept = contacts[survivor.lead_id]
    assert kept["id"] == survivor.external_ids["contact"]
    assert tombstone.external_ids["contact"] in kept["properties"]["hs_merged_object_ids"]
    assert {"contact": kept["id"], "company": survivor.external_ids["company"]} in crm.truth(
        "associations"
    )["records"]
    assert tombstone.external_ids["contact"] not in crm.truth("lists")["1"]

    # The answer to the first merge was lost, say: the replay finds the work done.
    assert hub.merge(survivor.external_ids, tombstone.external_ids) is True
    assert crm.truth("contacts")["count"] == 2 and crm.truth("companies")["count"] == 2
    # A merge HubSpot refuses for another reason still fails.
    with pytest.raises(CrmError, match="404"):
        hub.merge({"contact": "999999"}, other.external_ids)
    assert crm.truth("contacts")["count"] == 2


def test_clear_email_empties_the_contacts_email_and_is_idempotent(crm: Crm) -> None:
    hub = client(crm)
    forgotten, kept = hub.upsert(mapped([lead(1), lead(2)]), {})

    for _ in range(2):
        hub.clear_email(forgotten.external_ids)
    contacts = crm.records("contacts")
    assert "email" not in contacts[forgotten.lead_id]["properties"]
    assert contacts[forgotten.lead_id]["properties"]["phone"] == "+15550100001"
    assert contacts[kept.lead_id]["properties"]["email"] == "info@biz2.test"
    hub.clear_email({"contact": "999999"})  # a record that is gone has nothing to clear


# --- errors and configuration ----------------------------------------------------------------


def test_a_wrong_token_raises_crm_error_without_the_token(crm: Crm) -> None:
    with pytest.raises(CrmError, match="401") as exc:
        client(crm, token="wrong-token-123").upsert(mapped([lead(1)]), {})
    assert "wrong-token-123" not in str(exc.value)
    assert crm.truth("contacts")["count"] == 0


def test_settings_point_at_the_sandbox_and_options_are_checked(crm: Crm) -> None:
    sandboxed = Settings(sandbox=True, sandbox_port=8123, hubspot_host=None)
    assert sandboxed.hubspot_base_url == f"{sandboxed.sandbox_url}/hubspot"
    token = sandboxed.hubspot_token
    assert token is not None and token.get_secret_value() == TOKEN
    real = Settings(sandbox=False, hubspot_host=None, hubspot_access_token=None)
    assert (real.hubspot_base_url, real.hubspot_token) == ("https://api.hubapi.com", None)
    with pytest.raises(CrmError, match="LEADFLOW_HUBSPOT_ACCESS_TOKEN"):
        HubSpotClient.from_settings(real, MAPPING)

    settings = Settings(
        sandbox=False, hubspot_host=crm.base, hubspot_access_token=TOKEN, hubspot_retries=1
    )
    built = HubSpotClient.from_settings(settings, MAPPING)
    assert (built.retries, built.list_id) == (1, "1")
    assert built.upsert(mapped([lead(1)]), {})[0].ok

    for options, message in (
        ({"workflow_id": "7"}, "workflow"),
        ({"list_idd": "1"}, "unknown list_idd"),
    ):
        with pytest.raises(CrmMappingError, match=message):
            client(crm, mapping=MAPPING.model_copy(update={"options": options}))


def test_a_missing_list_is_the_mappings_to_fix(crm: Crm) -> None:
    outcomes = client(
        crm, mapping=MAPPING.model_copy(update={"options": {"list_id": "42"}})
    ).upsert(mapped([lead(1)]), {})
    assert not outcomes[0].ok and not outcomes[0].retryable
    assert "42" in (outcomes[0].error or "") and set(outcomes[0].external_ids) == {
        "company",
        "contact",
    }
