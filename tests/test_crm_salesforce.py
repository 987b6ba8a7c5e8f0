"""connectors/salesforce.py against the Salesforce sandbox served over real HTTP (uvicorn in a
thread), through simple-salesforce and the sandbox session.

The sandbox is mounted at `/salesforce` as the sandbox server mounts it, behind a small ASGI
layer that records every API request (so a test can say "no further call") and can answer
the next composite upserts itself (429 with Retry-After, which Salesforce's own stand-in never
sends). Leads are mapped with the default mapping, deployments/crm_mapping.yaml.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from connectors.salesforce import (
    SalesforceClient,
    SandboxAdapter,
    TimeoutSession,
    salesforce_session,
)
from leadflow.settings import PROJECT_DIR, Settings
from models.crm import CrmError, MappedLead, SyncOutcome, load_mapping, map_lead, payload_hash
from models.lead import Address, Lead, Score
from sandbox.salesforce import DEFAULT_CUSTOM_FIELDS, SalesforceSandbox, SalesforceSandboxConfig
from sandbox.salesforce import salesforce_app as build_salesforce_app
from tests.crm import control, no_faults, truth
from tests.servers import serve_in_thread

SF = SalesforceSandboxConfig()
EXT = SF.external_id_field
MAPPING = load_mapping(PROJECT_DIR / "deployments" / "crm_mapping.yaml")
SF_MAPPING = MAPPING.destinations["salesforce"]
TIMEOUT = 0.4  # the client's; the sandbox holds "timeout" faults longer (HELD)
HELD = 0.8
NO_FAULTS = no_faults(timeout_seconds=HELD)
TIMESTAMPS = ("LastModifiedDate", "SystemModstamp")


@dataclass
class Traffic:
    """Every API request the sandbox got, and canned answers for the next composite calls."""

    requests: list[str] = field(default_factory=list)  # "METHOD /path"
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and "/__sandbox/" not in scope["path"]:
                self.requests.append(f"{scope['method']} {scope['path']}")
                if self.script and "/composite/" in scope["path"]:
                    status, headers = self.script.pop(0)
                    body = [{"message": "Too many requests", "errorCode": "TOO_MANY_REQUESTS"}]
                    await JSONResponse(body, status, headers)(scope, receive, send)
                    return
            await app(scope, receive, send)

        return asgi

    def count(self, part: str) -> int:
        return sum(part in r for r in self.requests)


@dataclass
class Crm:
    base: str  # the sandbox server's root; Salesforce is at <base>/salesforce
    traffic: Traffic

    @property
    def url(self) -> str:
        return f"{self.base}/salesforce"

    def control(self, **knobs: Any) -> dict[str, Any]:
        return control(self.url, **knobs)

    def leads(self) -> dict[str, Any]:
        return truth(self.url, "leads")

    def by_lead_id(self) -> dict[str, dict[str, Any]]:
        return {r[EXT]: r for r in self.leads()["records"]}


@pytest.fixture(scope="module")
def private_key() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.fixture(scope="module")
def server(private_key: tuple[str, bytes]) -> Iterator[Crm]:
    # The default mapping sends Leadflow_Score_Reasons__c, which the sandbox org lacks by default.
    config = SalesforceSandboxConfig(
        jwt_public_key_pem=private_key[1],
        custom_fields=DEFAULT_CUSTOM_FIELDS + ",Leadflow_Score_Reasons__c",
    )
    traffic = Traffic()
    app = Starlette(routes=[Mount("/salesforce", build_salesforce_app(SalesforceSandbox(config)))])
    with serve_in_thread(traffic.wrap(app)) as base:
        yield Crm(base, traffic)


@pytest.fixture
def crm(server: Crm) -> Crm:
    server.control(
        reset=True, token_ttl=7200, api_requests_per_day=100_000, bulk_processing_seconds=0,
        **NO_FAULTS,
    )  # fmt: skip
    server.traffic.requests.clear()
    server.traffic.script.clear()
    return server


def client(crm: Crm, **options: Any) -> SalesforceClient:
    settings: dict[str, Any] = {
        "username": SF.username,
        "consumer_key": SF.consumer_key,
        "password": SecretStr(SF.password),
        "consumer_secret": SecretStr(SF.consumer_secret),
        "session": salesforce_session(crm.url, session=TimeoutSession(TIMEOUT)),
        "timeout": TIMEOUT,
        "backoff": 0.01,
        "backoff_max": 1.0,
        "bulk_poll_interval": 0.01,
    }
    return SalesforceClient(**(settings | options))


def mapped(i: int, **changes: Any) -> MappedLead:
    lead = Lead(
        lead_id=f"L-{i:03d}",
        name=f"Acme Plumbing {i}",
        category="plumber",
        address=Address(street=f"{i} Main St", city="Austin", state="TX", country="US"),
        phone="+15125550100",
        website=f"https://acme{i}.test",
        best_email=f"info@acme{i}.test",
        score=Score(
            value=40 + i % 60, reasons=["verified email", "4.8 rating"], model_version="h1"
        ),
    )
    return map_lead(lead.model_copy(update=changes), SF_MAPPING)


def with_fields(record: MappedLead, **fields: Any) -> MappedLead:
    """The record with some Lead fields replaced (values the Lead model would not allow)."""
    objects = {"Lead": {**record.objects["Lead"], **fields}}
    return replace(record, objects=objects, payload_hash=payload_hash(objects))


def without_timestamps(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: {f: v for f, v in r.items() if f not in TIMESTAMPS} for k, r in records.items()}


def assert_all_ok(outcomes: list[SyncOutcome]) -> None:
    assert [o.error for o in outcomes if not o.ok] == []


# --- upserts ------------------------------------------------------------------------------------


def test_upsert_creates_then_repeats_create_nothing_and_a_change_updates_one(crm: Crm) -> None:
    sf = client(crm)
    records = [mapped(i) for i in range(5)]
    first = sf.upsert(records, {})
    assert_all_ok(first)
    assert [o.lead_id for o in first] == [r.lead_id for r in records]
    assert all(o.created for o in first)
    assert crm.traffic.count("PATCH /salesforce/services/data/v59.0/composite/sobjects/Lead/") == 1

    stored = crm.by_lead_id()
    assert sorted(stored) == [r.lead_id for r in records]
    for record, outcome in zip(records, first, strict=True):
        lead = stored[record.lead_id]
        assert outcome.external_ids == {"Lead": lead["Id"]}
        sent = record.objects["Lead"]
        assert {f: lead[f] for f in sent} == sent
    assert stored["L-003"]["Company"] == stored["L-003"]["LastName"] == "Acme Plumbing 3"
    assert (stored["L-003"]["Industry"], stored["L-003"]["Rating"]) == ("Plumber", "Warm")
    assert stored["L-003"]["Leadflow_Score__c"] == 43
    assert stored["L-003"]["Leadflow_Score_Reasons__c"] == "verified email, 4.8 rating"

    again = sf.upsert(records, {o.lead_id: o.external_ids for o in first})
    assert_all_ok(again)
    assert not any(o.created for o in again)
    assert [o.external_ids for o in again] == [o.external_ids for o in first]
    assert without_timestamps(crm.by_lead_id()) == without_timestamps(stored)

    moved = mapped(2, address=Address(street="9 Elm St", city="Dallas", state="TX", country="US"))
    changed = sf.upsert([*records[:2], moved, *records[3:]], {})
    assert_all_ok(changed)
    assert not any(o.created for o in changed)
    after = without_timestamps(crm.by_lead_id())
    before = without_timestamps(stored)
    assert [k for k in after if after[k] != before[k]] == ["L-002"]
    assert (after["L-002"]["City"], after["L-002"]["Street"]) == ("Dallas", "9 Elm St")
    assert crm.leads()["count"] == 5


def test_refused_records_are_not_retryable_and_carry_salesforces_message(crm: Crm) -> None:
    sf = client(crm)
    records = [
        mapped(0),
        with_fields(mapped(1), Company=None),
        with_fields(mapped(2), Email="not-an-email"),
        mapped(3),
    ]
    outcomes = sf.upsert(records, {})
    assert [o.ok for o in outcomes] == [True, False, False, True]
    assert [o.retryable for o in outcomes[1:3]] == [False, False]
    assert outcomes[1].error == (
        "REQUIRED_FIELD_MISSING: Required fields are missing: [Company] (Company)"
    )
    assert outcomes[2].error == (
        "INVALID_EMAIL_ADDRESS: Email: invalid email address: not-an-email (Email)"
    )
    assert crm.traffic.count("/composite/") == 1  # a refused record is not retried
    assert sorted(crm.by_lead_id()) == ["L-000", "L-003"]


def test_one_lead_twice_in_a_batch_is_sent_once(crm: Crm) -> None:
    old, new = mapped(1), mapped(1, phone="+15125550199")
    outcomes = client(crm).upsert([old, mapped(2), new], {})
    assert_all_ok(outcomes)
    assert outcomes[0].external_ids == outcomes[2].external_ids
    assert crm.leads()["count"] == 2 and crm.by_lead_id()["L-001"]["Phone"] == "+15125550199"


def test_request_limit_exceeded_stops_the_batch_with_no_further_call(crm: Crm) -> None:
    sf = client(crm, batch_size=2)
    assert_all_ok(sf.upsert([mapped(99)], {}))  # logged in
    crm.control(throttle_share=1)  # Salesforce's 403 REQUEST_LIMIT_EXCEEDED
    crm.traffic.requests.clear()
    outcomes = sf.upsert([mapped(i) for i in range(5)], {})
    assert all(o.throttled and not o.ok for o in outcomes)
    assert all("REQUEST_LIMIT_EXCEEDED" in (o.error or "") for o in outcomes)
    assert crm.traffic.requests == [
        "PATCH /salesforce/services/data/v59.0/composite/sobjects/Lead/Leadflow_Lead_Id__c"
    ]
    assert crm.leads()["count"] == 1


def test_a_spent_api_budget_in_sforce_limit_info_stops_before_the_next_call(crm: Crm) -> None:
    sf = client(crm, batch_size=2)
    crm.control(api_requests_per_day=1)
    outcomes = sf.upsert([mapped(i) for i in range(5)], {})
    assert [o.ok for o in outcomes] == [True, True, False, False, False]
    assert all(o.throttled for o in outcomes[2:])
    assert "(1/1)" in (outcomes[2].error or "")
    assert crm.traffic.count("/composite/") == 1
    assert "403" not in crm.control()["answers"]  # stopped before Salesforce had to refuse


def test_429_is_retried_after_retry_after_and_stops_the_batch_when_it_persists(crm: Crm) -> None:
    sf = client(crm, batch_size=2, max_retries=2, backoff=5.0, backoff_max=1.0)
    crm.traffic.script[:] = [(429, {"Retry-After": "0.3"})] * 2
    started = time.monotonic()
    assert_all_ok(sf.upsert([mapped(1)], {}))
    # Retry-After (0.3 s) was waited, not the backoff (5 s, over backoff_max: a stop).
    assert 0.55 < time.monotonic() - started < 3
    assert crm.traffic.count("/composite/") == 3

    crm.traffic.requests.clear()
    crm.traffic.script[:] = [(429, {"Retry-After": "0"})] * 3
    outcomes = sf.upsert([mapped(i) for i in range(2, 7)], {})
    assert all(o.throttled and not o.ok for o in outcomes)
    assert "HTTP 429" in (outcomes[0].error or "")
    assert crm.traffic.count("/composite/") == 3  # the first chunk, retried twice; no other

    crm.traffic.requests.clear()
    crm.traffic.script[:] = [(429, {"Retry-After": "120"})]  # longer than backoff_max
    assert all(o.throttled for o in sf.upsert([mapped(8)], {}))
    assert crm.traffic.count("/composite/") == 1
    assert sorted(crm.by_lead_id()) == ["L-001"]


def test_an_expired_session_logs_in_again_once(crm: Crm) -> None:
    sf = client(crm)
    assert_all_ok(sf.upsert([mapped(1)], {}))
    assert crm.traffic.count("/oauth2/token") == 1
    crm.control(expire_tokens=True)
    assert_all_ok(sf.upsert([mapped(2)], {}))
    assert crm.traffic.count("/oauth2/token") == 2

    crm.control(expire_tokens=True, token_ttl=0)  # every new token is born expired
    crm.traffic.requests.clear()
    with pytest.raises(CrmError, match="INVALID_SESSION_ID"):
        sf.upsert([mapped(3)], {})
    assert crm.traffic.count("/oauth2/token") == 1 and crm.traffic.count("/composite/") == 2

    crm.traffic.requests.clear()
    with pytest.raises(CrmError, match="invalid_grant: authentication failure"):
        client(crm, password=SecretStr("wrong")).upsert([mapped(4)], {})
    assert crm.traffic.requests == ["POST /salesforce/services/oauth2/token"]  # not retried


def test_jwt_bearer_login(crm: Crm, private_key: tuple[str, bytes], tmp_path: Path) -> None:
    key_file = tmp_path / "salesforce.key"
    key_file.write_text(private_key[0])
    sf = client(crm, password=None, consumer_secret=None, private_key_file=key_file)
    assert_all_ok(sf.upsert([mapped(1)], {}))
    assert crm.leads()["count"] == 1

    # With the org's URL the assertion goes to its My Domain: a session that reaches the
    # sandbox only through the instance host (not login.salesforce.com) is enough.
    only_instance = TimeoutSession(TIMEOUT)
    only_instance.mount(f"{SF.instance_url}/", SandboxAdapter(crm.url))
    my_domain = client(
        crm, password=None, consumer_secret=None, private_key_file=key_file,
        instance_url=SF.instance_url, session=only_instance,
    )  # fmt: skip
    assert_all_ok(my_domain.upsert([mapped(2)], {}))
    assert crm.leads()["count"] == 2
    with pytest.raises(ValueError, match="private key file"):
        client(crm, password=None)


def test_large_batches_go_through_bulk_api_2(crm: Crm) -> None:
    sf = client(crm, bulk_threshold=5)
    records = [mapped(i) for i in range(7)] + [with_fields(mapped(7), Company=None)]
    outcomes = sf.upsert(records, {})
    assert [o.lead_id for o in outcomes] == [r.lead_id for r in records]
    assert_all_ok(outcomes[:7])
    assert all(o.created for o in outcomes[:7])
    assert (outcomes[7].ok, outcomes[7].retryable) == (False, False)
    assert (outcomes[7].error or "").startswith(
        "REQUIRED_FIELD_MISSING: Required fields are missing"
    )
    assert crm.traffic.count("/jobs/ingest") >= 4 and crm.traffic.count("/composite/") == 0
    stored = crm.by_lead_id()
    assert {o.lead_id: o.external_ids["Lead"] for o in outcomes[:7]} == {
        k: v["Id"] for k, v in stored.items()
    }
    assert stored["L-004"]["Leadflow_Score__c"] == 44 and stored["L-004"]["City"] == "Austin"

    # Again, with one email gone: updates only, and the empty value clears the field (#N/A).
    records[3] = mapped(3, best_email=None)
    again = sf.upsert(records[:7], {})
    assert_all_ok(again)
    assert not any(o.created for o in again)
    assert crm.leads()["count"] == 7 and crm.by_lead_id()["L-003"]["Email"] is None


def test_injected_faults_end_with_each_lead_exactly_once(crm: Crm) -> None:
    crm.control(error_share=0.05, throttle_share=0.05, timeout_share=0.05, lost_response_share=0.05)
    sf = client(crm, batch_size=5)
    records = [mapped(i) for i in range(200)]
    done: dict[str, SyncOutcome] = {}
    for _ in range(40):  # as the sync engine does, run after run: what is not ok yet
        pending = [r for r in records if r.lead_id not in done]
        if not pending:
            break
        try:
            outcomes = sf.upsert(pending, {})
        except CrmError:
            continue
        assert not [o for o in outcomes if not o.ok and not o.retryable]
        done.update({o.lead_id: o for o in outcomes if o.ok})
    assert len(done) == 200
    injected = crm.control()["faults"]["injected"]
    assert all(injected[kind] > 0 for kind in ("error", "throttle", "timeout", "lost_response"))

    time.sleep(HELD + 0.2)  # requests still held by "timeout" faults land now: as updates
    truth = crm.leads()
    assert (truth["count"], truth["duplicates"]) == (200, {})
    stored = crm.by_lead_id()
    assert {k: o.external_ids["Lead"] for k, o in done.items()} == {
        k: r["Id"] for k, r in stored.items()
    }
    assert all(stored[r.lead_id]["Company"] == r.objects["Lead"]["Company"] for r in records)


# --- merges and forgetting ----------------------------------------------------------------------


def test_merge_is_a_mark_and_clear_email_nulls_the_email(crm: Crm) -> None:
    sf = client(crm)
    survivor, tombstone = sf.upsert([mapped(1), mapped(2)], {})
    assert sf.merge(survivor.external_ids, tombstone.external_ids) is False
    for _ in range(2):  # repeating either changes nothing
        sf.mark_merged(tombstone.external_ids, "L-001")
        sf.clear_email(survivor.external_ids)
    stored = crm.by_lead_id()
    assert stored["L-002"]["Leadflow_Merged_Into__c"] == "L-001"
    assert stored["L-001"]["Leadflow_Merged_Into__c"] is None
    assert (stored["L-001"]["Email"], stored["L-002"]["Email"]) == (None, "info@acme2.test")

    sf.clear_email({"Lead": "00Q5g0000000GoneAAA"})  # gone from Salesforce: nothing to clear
    sf.clear_email({})
    crm.control(error_share=1)
    with pytest.raises(CrmError, match="UNKNOWN_EXCEPTION"):
        sf.mark_merged(tombstone.external_ids, "L-001")
    assert crm.leads()["count"] == 2


# --- settings -----------------------------------------------------------------------------------


def test_from_settings_reaches_the_sandbox_in_sandbox_mode(crm: Crm) -> None:
    port = int(crm.base.rsplit(":", 1)[1])
    settings = Settings(
        sandbox=True, host="127.0.0.1", sandbox_port=port, salesforce_timeout=TIMEOUT,
        salesforce_batch_size=3,
    )  # fmt: skip
    sf = SalesforceClient.from_settings(settings, SF_MAPPING)
    assert_all_ok(sf.upsert([mapped(i) for i in range(4)], {}))
    assert crm.leads()["count"] == 4 and crm.traffic.count("/composite/") == 2

    hand_mapped = SF_MAPPING.model_copy(deep=True)
    hand_mapped.objects["Lead"].fields["leadflow_lead_id__c"] = hand_mapped.objects["Lead"].fields[
        "Phone"
    ]
    with pytest.raises(ValueError, match="Leadflow_Lead_Id__c"):
        SalesforceClient.from_settings(settings, hand_mapped)
    with pytest.raises(ValueError, match="LEADFLOW_SALESFORCE_USERNAME"):
        SalesforceClient.from_settings(Settings(sandbox=False))

    org = Settings(
        sandbox=True, salesforce_instance_url="https://acme.my.salesforce.com",
        salesforce_username="api@acme.test", salesforce_consumer_key="key",
        salesforce_private_key_file=PROJECT_DIR / "salesforce.key",
    )  # fmt: skip
    assert org.salesforce_sandbox_url is None and org.salesforce_login_password is None
    jwt_client = SalesforceClient.from_settings(org)
    assert (jwt_client.domain, jwt_client.my_domain) == ("login", "acme.my")
    assert jwt_client.session.get_adapter("https://login.salesforce.com/").__class__.__name__ == (
        "HTTPAdapter"  # a real org: no sandbox routing
    )
