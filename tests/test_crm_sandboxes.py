"""The sandbox CRMs over real HTTP, driven by the real clients: simple-salesforce (through
`connectors.salesforce.salesforce_session`), hubspot-api-client, and httpx for Pipedrive.

Each CRM runs in its own uvicorn thread on a free port and a fake clock, so token expiry and
rate windows move only when a test says so; before each test its control route resets it with
generous limits and no faults. The last test serves all three mounted in the whole sandbox
app, as `leadflow up` runs them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import hubspot
import pytest
import requests
import urllib3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hubspot.crm.associations.v4 import (
    BatchInputPublicDefaultAssociationMultiPost,
    PublicDefaultAssociationMultiPost,
    PublicObjectId,
)
from hubspot.crm.companies import BatchInputSimplePublicObjectBatchInputUpsert as CompanyUpsertBatch
from hubspot.crm.companies import SimplePublicObjectBatchInputUpsert as CompanyUpsert
from hubspot.crm.contacts import (
    ApiException,
    BatchInputSimplePublicObjectBatchInputUpsert,
    PublicMergeInput,
    PublicObjectSearchRequest,
    SimplePublicObjectBatchInputUpsert,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.properties import ApiException as PropertiesApiException
from hubspot.crm.properties import PropertyCreate
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceRefusedRequest,
)
from starlette.responses import Response

from connectors.salesforce import salesforce_session
from leadflow.settings import get_settings
from sandbox.crm_faults import FaultConfig, Faults
from sandbox.directory.generate import generate
from sandbox.hubspot import HubSpotSandbox, hubspot_app
from sandbox.pipedrive import PipedriveSandbox, pipedrive_app
from sandbox.salesforce import SalesforceSandbox, SalesforceSandboxConfig, salesforce_app
from sandbox.server import SandboxConfig, build_app
from tests.clock import FakeClock
from tests.crm import control, no_faults, truth
from tests.servers import serve_in_thread

SF = SalesforceSandboxConfig()  # the credentials and names the sandbox starts with
EXT = SF.external_id_field
INSTANCE = "https://leadflow-sandbox.my.salesforce.com"
HUBSPOT_TOKEN = "sandbox-hubspot-token"
PIPEDRIVE_TOKEN = "sandbox-pipedrive-token"
ID_PROPERTY = "leadflow_lead_id"
NO_FAULTS = no_faults()


@dataclass
class Crm:
    """A running CRM sandbox: its base URL, clock and control routes."""

    base: str
    clock: FakeClock

    def control(self, **knobs: Any) -> dict[str, Any]:
        return control(self.base, **knobs)

    def truth(self, kind: str) -> dict[str, Any]:
        return truth(self.base, kind)


def _rsa_pair() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.fixture(scope="module")
def rsa_key_pair() -> tuple[str, bytes]:
    """The connected app's key: the private PEM signs assertions, the sandbox holds the public."""
    return _rsa_pair()


@pytest.fixture(scope="module")
def rsa_private_key(rsa_key_pair: tuple[str, bytes]) -> str:
    return rsa_key_pair[0]


@pytest.fixture(scope="module")
def salesforce_server(rsa_key_pair: tuple[str, bytes]) -> Iterator[Crm]:
    clock = FakeClock()
    config = SalesforceSandboxConfig(jwt_public_key_pem=rsa_key_pair[1])
    with serve_in_thread(salesforce_app(SalesforceSandbox(config, clock=clock))) as base:
        yield Crm(base, clock)


@pytest.fixture(scope="module")
def hubspot_server() -> Iterator[Crm]:
    clock = FakeClock()
    with serve_in_thread(hubspot_app(HubSpotSandbox(clock=clock))) as base:
        yield Crm(base, clock)


@pytest.fixture(scope="module")
def pipedrive_server() -> Iterator[Crm]:
    clock = FakeClock()
    with serve_in_thread(pipedrive_app(PipedriveSandbox(clock=clock))) as base:
        yield Crm(base, clock)


@pytest.fixture
def salesforce(salesforce_server: Crm) -> Crm:
    salesforce_server.control(
        reset=True, token_ttl=7200, api_requests_per_day=100_000, bulk_processing_seconds=0,
        external_id_unique=True, **NO_FAULTS,
    )  # fmt: skip
    return salesforce_server


@pytest.fixture
def hubspot_crm(hubspot_server: Crm) -> Crm:
    hubspot_server.control(
        reset=True, requests_per_ten_seconds=10_000, requests_per_day=1_000_000,
        search_requests_per_second=1_000, list_ids=["1"], **NO_FAULTS,
    )  # fmt: skip
    return hubspot_server


@pytest.fixture
def pipedrive(pipedrive_server: Crm) -> Crm:
    pipedrive_server.control(reset=True, requests_per_two_seconds=10_000, **NO_FAULTS)
    return pipedrive_server


# --- helpers ---------------------------------------------------------------------------------


def sf_login(crm: Crm) -> Salesforce:
    """simple-salesforce's own OAuth username-password login, through the sandbox session."""
    return Salesforce(
        username=SF.username, password=SF.password, consumer_key=SF.consumer_key,
        consumer_secret=SF.consumer_secret, session=salesforce_session(crm.base),
    )  # fmt: skip


def sf_token(crm: Crm) -> dict[str, Any]:
    form = {
        "grant_type": "password", "client_id": SF.consumer_key, "client_secret": SF.consumer_secret,
        "username": SF.username, "password": SF.password,
    }  # fmt: skip
    answer = httpx.post(f"{crm.base}/services/oauth2/token", data=form)
    assert answer.status_code == 200, answer.text
    return answer.json()


def lead(ext: str, **fields: Any) -> dict[str, Any]:
    """A composite-collection record."""
    return {"attributes": {"type": "Lead"}, EXT: ext, "LastName": "Ng", "Company": "Acme", **fields}


def hs_client(crm: Crm, token: str = HUBSPOT_TOKEN) -> Any:
    return hubspot.Client.create(access_token=token, host=crm.base)


def unique_property(client: Any, unique: bool = True) -> None:
    client.crm.properties.core_api.create(
        "contacts",
        PropertyCreate(
            name=ID_PROPERTY, label="Leadflow lead id", type="string", field_type="text",
            group_name="contactinformation", has_unique_value=unique,
        ),
    )  # fmt: skip


def upsert_inputs(
    values: list[str], **properties: str
) -> BatchInputSimplePublicObjectBatchInputUpsert:
    return BatchInputSimplePublicObjectBatchInputUpsert(
        inputs=[
            SimplePublicObjectBatchInputUpsert(
                id=v, id_property=ID_PROPERTY, properties=dict(properties)
            )
            for v in values
        ]
    )


def pd(crm: Crm) -> httpx.Client:
    return httpx.Client(base_url=crm.base, headers={"x-api-token": PIPEDRIVE_TOKEN})


def pd_lead_key(client: httpx.Client, fields: str) -> str:
    listed = client.get(f"/api/v1/{fields}").json()["data"]
    return next(f["key"] for f in listed if f["name"] == "Leadflow lead id")


# --- Salesforce --------------------------------------------------------------------------------


def test_salesforce_oauth_flows_through_simple_salesforce(
    salesforce: Crm, rsa_private_key: str
) -> None:
    sf = sf_login(salesforce)
    assert sf.sf_instance == "leadflow-sandbox.my.salesforce.com"
    assert sf.Lead.create({"LastName": "Ng", "Company": "Acme"})["success"] is True

    jwt_client = Salesforce(
        username=SF.username, consumer_key=SF.consumer_key, privatekey=rsa_private_key,
        session=salesforce_session(salesforce.base),
    )  # fmt: skip
    assert jwt_client.query("SELECT COUNT() FROM Lead")["totalSize"] == 1

    stranger_key, _ = _rsa_pair()
    with pytest.raises(SalesforceAuthenticationFailed, match="invalid assertion"):
        Salesforce(
            username=SF.username, consumer_key=SF.consumer_key, privatekey=stranger_key,
            session=salesforce_session(salesforce.base),
        )  # fmt: skip
    with pytest.raises(SalesforceAuthenticationFailed, match="authentication failure"):
        Salesforce(
            username=SF.username, password="wrong", consumer_key=SF.consumer_key,
            consumer_secret=SF.consumer_secret, session=salesforce_session(salesforce.base),
        )  # fmt: skip


def test_salesforce_token_answer_and_a_session_id_client(salesforce: Crm) -> None:
    answer = sf_token(salesforce)
    assert answer["instance_url"] == INSTANCE and answer["token_type"] == "Bearer"
    expected = hmac.new(
        SF.consumer_secret.encode(), (answer["id"] + answer["issued_at"]).encode(), hashlib.sha256
    )
    assert answer["signature"] == base64.b64encode(expected.digest()).decode()

    sf = Salesforce(
        session_id=answer["access_token"],
        instance_url=answer["instance_url"],
        session=salesforce_session(salesforce.base),
    )
    assert sf.Lead.upsert(f"{EXT}/L-1", {"LastName": "Ng", "Company": "Acme"}) == 201

    refused = httpx.post(
        f"{salesforce.base}/services/oauth2/token", data={"grant_type": "authorization_code"}
    )
    assert refused.status_code == 400 and refused.json()["error"] == "unsupported_grant_type"

    stranger = Salesforce(
        session_id="not-a-token", instance_url=INSTANCE, session=salesforce_session(salesforce.base)
    )
    with pytest.raises(SalesforceExpiredSession) as exc:
        stranger.Lead.get_by_custom_id(EXT, "L-1")
    assert exc.value.content == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]


def test_salesforce_tokens_expire_and_a_logged_in_client_logs_in_again(salesforce: Crm) -> None:
    salesforce.control(token_ttl=60)
    direct = Salesforce(
        session_id=sf_token(salesforce)["access_token"],
        instance_url=INSTANCE,
        session=salesforce_session(salesforce.base),
    )
    logged_in = sf_login(salesforce)
    lead_id = direct.Lead.create({"LastName": "Ng", "Company": "Acme"})["id"]
    salesforce.clock.advance(61)

    with pytest.raises(SalesforceExpiredSession):
        direct.Lead.get(lead_id)
    old_token = logged_in.session_id
    assert logged_in.Lead.get(lead_id)["LastName"] == "Ng"  # re-login on INVALID_SESSION_ID
    assert logged_in.session_id != old_token


def test_salesforce_upsert_create_and_field_checks(salesforce: Crm) -> None:
    sf = sf_login(salesforce)
    assert sf.Lead.upsert(f"{EXT}/L-1", {"LastName": "Ng", "Company": "Acme"}) == 201
    assert sf.Lead.upsert(f"{EXT}/L-1", {"Company": "Acme Ltd"}) == 200  # v59: 200 with a body
    before_v46 = Salesforce(
        session_id=sf.session_id,
        instance_url=INSTANCE,
        version="45.0",
        session=salesforce_session(salesforce.base),
    )
    assert before_v46.Lead.upsert(f"{EXT}/L-1", {"City": "Austin"}) == 204
    stored = sf.Lead.get_by_custom_id(EXT, "L-1")
    assert (stored["LastName"], stored["Company"], stored["City"]) == ("Ng", "Acme Ltd", "Austin")

    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.upsert(f"{EXT}/L-2", {"FirstName": "Ann"})
    assert exc.value.content == [
        {
            "message": "Required fields are missing: [LastName, Company]",
            "errorCode": "REQUIRED_FIELD_MISSING",
            "fields": ["LastName", "Company"],
        }
    ]
    for body, code in (
        ({"LastName": "Ng", "Company": "Acme", "Nope__c": 1}, "INVALID_FIELD"),
        (
            {"LastName": "Ng", "Company": "Acme", "CreatedDate": "2024-01-01"},
            "INVALID_FIELD_FOR_INSERT_UPDATE",
        ),
        ({"LastName": "Ng", "Company": "Acme", "Email": "not-an-email"}, "INVALID_EMAIL_ADDRESS"),
        (
            {"LastName": "Ng", "Company": "Acme", "Status": "Hot"},
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        ),
        ({"LastName": "Ng", "Company": "Acme", "NumberOfEmployees": "12"}, "JSON_PARSER_ERROR"),
        ({"LastName": "Ng", "Company": "A" * 256}, "STRING_TOO_LONG"),
        (
            {"LastName": "Ng", "Company": "Acme", EXT: "L-1"},
            "DUPLICATE_VALUE",
        ),  # the field is unique
    ):
        with pytest.raises(SalesforceMalformedRequest) as exc:
            sf.Lead.create(body)
        assert exc.value.content[0]["errorCode"] == code

    # POST always creates: two identical leads without an external id are two leads.
    sf.Lead.create({"LastName": "Ng", "Company": "Acme"})
    sf.Lead.create({"LastName": "Ng", "Company": "Acme"})
    truth = salesforce.truth("leads")
    assert truth["count"] == 3 and truth["duplicates"] == {}

    # A non-unique external id lets POSTs create duplicates; an upsert on one answers 300.
    salesforce.control(external_id_unique=False)
    sf.Lead.create({"LastName": "Ng", "Company": "Acme", EXT: "L-1"})
    assert salesforce.truth("leads")["duplicates"] == {"L-1": 2}
    with pytest.raises(SalesforceMoreThanOneRecord):
        sf.Lead.upsert(f"{EXT}/L-1", {"City": "Boston"})


def test_salesforce_composite_upsert_and_soql_pages(salesforce: Crm) -> None:
    sf = sf_login(salesforce)
    sf.Lead.upsert(f"{EXT}/L-0", {"LastName": "Ng", "Company": "Old"})
    path = f"composite/sobjects/Lead/{EXT}"
    missing_company = {"attributes": {"type": "Lead"}, EXT: "L-2", "LastName": "Li"}
    results = sf.restful(
        path,
        method="PATCH",
        json={
            "allOrNone": False,
            "records": [lead("L-0", Company="New"), lead("L-1"), missing_company],
        },
    )
    assert [r["success"] for r in results] == [True, True, False]
    assert [r["created"] for r in results[:2]] == [False, True]
    assert results[2]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert sf.Lead.get_by_custom_id(EXT, "L-0")["Company"] == "New"

    results = sf.restful(
        path, method="PATCH", json={"allOrNone": True, "records": [lead("L-3"), missing_company]}
    )
    assert [r["errors"][0]["statusCode"] for r in results] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "REQUIRED_FIELD_MISSING",
    ]
    assert salesforce.truth("leads")["count"] == 2
    results = sf.restful(path, method="PATCH", json={"records": [lead("L-4"), lead("L-4")]})
    assert [r["errors"][0]["statusCode"] for r in results] == ["DUPLICATE_EXTERNAL_ID"] * 2
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful(path, method="PATCH", json={"records": [lead(f"X-{i}") for i in range(201)]})
    assert exc.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"

    for start in (2, 202):
        records = [lead(f"L-{i}") for i in range(start, min(start + 200, 250))]
        assert all(
            r["success"] for r in sf.restful(path, method="PATCH", json={"records": records})
        )
    found = sf.query(f"SELECT Id, {EXT} FROM Lead WHERE {EXT} IN ('L-0', 'L-1', 'nope')")
    assert sorted(r[EXT] for r in found["records"]) == ["L-0", "L-1"]
    assert sf.query(f"SELECT Id FROM Lead WHERE {EXT} = 'L-7'")["totalSize"] == 1

    small_pages = {"Sforce-Query-Options": "batchSize=200"}
    first = sf.query("SELECT Id FROM Lead", headers=small_pages)
    assert (first["totalSize"], len(first["records"]), first["done"]) == (250, 200, False)
    everything = sf.query_all(f"SELECT Id, {EXT} FROM Lead ORDER BY {EXT}", headers=small_pages)
    assert len({r["Id"] for r in everything["records"]}) == 250

    for soql, code in (
        ("SELECT Nope FROM Lead", "INVALID_FIELD"),
        ("DELETE FROM Lead", "MALFORMED_QUERY"),
    ):
        with pytest.raises(SalesforceMalformedRequest) as exc:
            sf.query(soql)
        assert exc.value.content[0]["errorCode"] == code


def test_salesforce_bulk2_upsert(salesforce: Crm) -> None:
    sf = sf_login(salesforce)
    sf.Lead.upsert(f"{EXT}/B-0", {"LastName": "Ng", "Company": "Old"})
    records = [
        {EXT: "B-0", "LastName": "Ng", "Company": "New"},
        {EXT: "B-1", "LastName": "Li", "Company": "Acme"},
        {EXT: "B-2", "LastName": "Kim", "Company": ""},  # an empty cell leaves the field as it is
    ]
    (summary,) = sf.bulk2.Lead.upsert(records=records, external_id_field=EXT, wait=0.01)
    assert (summary["numberRecordsProcessed"], summary["numberRecordsFailed"]) == (3, 1)
    results = sf.bulk2.Lead.get_all_ingest_records(summary["job_id"])
    assert {r[EXT]: r["sf__Created"] for r in results["successfulRecords"]} == {
        "B-0": "false",
        "B-1": "true",
    }
    assert results["failedRecords"][0]["sf__Error"].startswith("REQUIRED_FIELD_MISSING:")
    assert sf.Lead.get_by_custom_id(EXT, "B-0")["Company"] == "New"

    # The raw job: InProgress until the processing time has passed; a column Lead lacks fails it.
    salesforce.control(bulk_processing_seconds=30)
    http = salesforce_session(salesforce.base)
    auth = {"Authorization": f"Bearer {sf.session_id}"}
    jobs = f"{INSTANCE}/services/data/v59.0/jobs/ingest"
    for csv_text, final_state in (
        (f"{EXT},LastName,Company\nB-9,Ng,Acme\n", "JobComplete"),
        (f"{EXT},Nope__c\nB-8,x\n", "Failed"),
    ):
        job = http.post(
            jobs,
            json={
                "object": "Lead",
                "operation": "upsert",
                "externalIdFieldName": EXT,
                "contentType": "CSV",
            },
            headers=auth,
        ).json()
        assert job["state"] == "Open"
        uploaded = http.put(
            f"{jobs}/{job['id']}/batches",
            data=csv_text.encode(),
            headers={**auth, "Content-Type": "text/csv"},
        )
        assert uploaded.status_code == 201
        assert (
            http.patch(
                f"{jobs}/{job['id']}", json={"state": "UploadComplete"}, headers=auth
            ).json()["state"]
            == "UploadComplete"
        )
        assert http.get(f"{jobs}/{job['id']}", headers=auth).json()["state"] == "InProgress"
        salesforce.clock.advance(31)
        info = http.get(f"{jobs}/{job['id']}", headers=auth).json()
        assert info["state"] == final_state
    assert "Nope__c" in info["errorMessage"]
    assert (
        http.get(f"{jobs}/{job['id']}/unprocessedrecords", headers=auth).text.splitlines()[1]
        == '"B-8","x"'
    )
    assert salesforce.truth("leads")["count"] == 3  # B-0, B-1, B-9


def test_salesforce_org_api_budget(salesforce: Crm) -> None:
    leads = sf_login(salesforce).Lead  # one SFType keeps the api_usage it parsed
    salesforce.control(api_requests_per_day=50, api_requests_used=48)
    leads.create({"LastName": "Ng", "Company": "Acme"})
    assert leads.api_usage["api-usage"].used == 49 and leads.api_usage["api-usage"].total == 50
    leads.create({"LastName": "Li", "Company": "Acme"})
    with pytest.raises(SalesforceRefusedRequest) as exc:
        leads.create({"LastName": "Kim", "Company": "Acme"})
    assert exc.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert salesforce.truth("leads")["count"] == 2


# --- HubSpot ---------------------------------------------------------------------------------


def test_hubspot_refuses_an_unknown_token(hubspot_crm: Crm) -> None:
    with pytest.raises(ApiException) as exc:
        hs_client(hubspot_crm, token="wrong").crm.contacts.basic_api.create(
            SimplePublicObjectInputForCreate(properties={"firstname": "Ann"})
        )
    assert exc.value.status == 401
    body = httpx.Response(401, content=exc.value.body).json()
    assert body["category"] == "INVALID_AUTHENTICATION" and body["message"].startswith(
        "Authentication credentials not found"
    )
    assert hubspot_crm.truth("contacts")["count"] == 0


def test_hubspot_unique_property_and_batch_upsert(hubspot_crm: Crm) -> None:
    client = hs_client(hubspot_crm)
    with pytest.raises(PropertiesApiException) as missing:
        client.crm.properties.core_api.get_by_name("contacts", ID_PROPERTY)
    assert missing.value.status == 404
    unique_property(client)
    assert (
        client.crm.properties.core_api.get_by_name("contacts", ID_PROPERTY).has_unique_value is True
    )
    with pytest.raises(PropertiesApiException) as exists:
        unique_property(client)
    assert exists.value.status == 409

    values = [f"L-{i}" for i in range(10)]
    first = client.crm.contacts.batch_api.upsert(upsert_inputs(values, firstname="Ann"))
    by_value = {r.properties[ID_PROPERTY]: r for r in first.results}
    assert sorted(by_value) == sorted(values) and all(r.new for r in first.results)
    assert [r.properties[ID_PROPERTY] for r in first.results] != values  # not in input order
    second = client.crm.contacts.batch_api.upsert(upsert_inputs(["L-3", "L-10"], lastname="Ng"))
    assert {r.properties[ID_PROPERTY]: r.new for r in second.results} == {
        "L-3": False,
        "L-10": True,
    }
    assert next(r.id for r in second.results if not r.new) == by_value["L-3"].id
    fetched = client.crm.contacts.basic_api.get_by_id(
        "L-3", id_property=ID_PROPERTY, properties=["lastname"]
    )
    assert (fetched.id, fetched.properties["lastname"], fetched.properties["firstname"]) == (
        by_value["L-3"].id,
        "Ng",
        "Ann",
    )

    for inputs, message in (
        (upsert_inputs(["L-1"], nope="x"), "PROPERTY_DOESNT_EXIST"),
        (upsert_inputs([f"X-{i}" for i in range(101)]), "Batch input limit of 100"),
        (upsert_inputs(["L-1", "l-1"]), "Duplicate IDs found in batch input"),
        (
            BatchInputSimplePublicObjectBatchInputUpsert(
                inputs=[
                    SimplePublicObjectBatchInputUpsert(
                        id="Ann", id_property="firstname", properties={}
                    )
                ]
            ),
            "not a unique identifier property",
        ),
    ):
        with pytest.raises(ApiException) as exc:
            client.crm.contacts.batch_api.upsert(inputs)
        assert exc.value.status == 400 and message in exc.value.body
    assert hubspot_crm.truth("contacts")["count"] == 11

    # Companies upsert the same way, by their own unique property.
    client.crm.properties.core_api.create(
        "companies",
        PropertyCreate(
            name=ID_PROPERTY, label="Leadflow lead id", type="string", field_type="text",
            group_name="companyinformation", has_unique_value=True,
        ),
    )  # fmt: skip
    company = CompanyUpsert(id="L-1", id_property=ID_PROPERTY, properties={"name": "Acme"})
    created, updated = (
        client.crm.companies.batch_api.upsert(CompanyUpsertBatch(inputs=[company])).results[0]
        for _ in range(2)
    )
    assert (created.new, updated.new, updated.id) == (True, False, created.id)
    assert hubspot_crm.truth("companies")["count"] == 1


def test_hubspot_post_always_creates(hubspot_crm: Crm) -> None:
    client = hs_client(hubspot_crm)
    unique_property(client, unique=False)
    create = client.crm.contacts.basic_api.create
    first = create(
        SimplePublicObjectInputForCreate(properties={ID_PROPERTY: "L-1", "email": "ann@acme.test"})
    )
    second = create(SimplePublicObjectInputForCreate(properties={ID_PROPERTY: "L-1"}))
    assert first.id != second.id
    assert hubspot_crm.truth("contacts")["duplicates"] == {"L-1": 2}

    with pytest.raises(ApiException) as exc:  # email is unique for contacts
        create(SimplePublicObjectInputForCreate(properties={"email": "ANN@acme.test"}))
    assert exc.value.status == 409 and f"Existing ID: {first.id}" in exc.value.body
    with pytest.raises(ApiException) as exc:  # upsert needs a unique property
        client.crm.contacts.batch_api.upsert(upsert_inputs(["L-1"]))
    assert exc.value.status == 400
    assert hubspot_crm.truth("contacts")["count"] == 2


def test_hubspot_search_associations_lists_and_merge(hubspot_crm: Crm) -> None:
    client = hs_client(hubspot_crm)
    unique_property(client)
    contacts = {
        r.properties[ID_PROPERTY]: r.id
        for r in client.crm.contacts.batch_api.upsert(
            upsert_inputs([f"L-{i}" for i in range(5)])
        ).results
    }

    search = client.crm.contacts.search_api.do_search
    in_filter = {
        "filters": [
            {"propertyName": ID_PROPERTY, "operator": "IN", "values": ["l-1", "L-3", "nope"]}
        ]
    }
    found = search(PublicObjectSearchRequest(filter_groups=[in_filter], properties=[ID_PROPERTY]))
    assert sorted(r.properties[ID_PROPERTY] for r in found.results) == ["L-1", "L-3"]
    pages, after = [], None
    while True:
        page = search(
            PublicObjectSearchRequest(
                filter_groups=[
                    {"filters": [{"propertyName": ID_PROPERTY, "operator": "HAS_PROPERTY"}]}
                ],
                limit=2,
                after=after,
            )
        )
        pages.append([r.id for r in page.results])
        if page.paging is None:
            break
        after = page.paging.next.after
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sorted(i for p in pages for i in p) == sorted(contacts.values())

    company = client.crm.companies.basic_api.create({"properties": {"name": "Acme"}})
    association = client.crm.associations.v4.basic_api.create_default(
        "contact", contacts["L-0"], "company", company.id
    )
    assert association.results[0].association_spec.association_type_id == 279
    batch = BatchInputPublicDefaultAssociationMultiPost(
        inputs=[
            PublicDefaultAssociationMultiPost(
                _from=PublicObjectId(id=contacts["L-1"]), to=PublicObjectId(id=company.id)
            )
        ]
    )
    assert (
        len(
            client.crm.associations.v4.batch_api.create_default("contact", "company", batch).results
        )
        == 1
    )
    with pytest.raises(Exception) as exc:
        client.crm.associations.v4.basic_api.create_default(
            "contact", contacts["L-2"], "company", "999"
        )
    assert exc.value.status == 404  # type: ignore[attr-defined]

    added = client.crm.lists.memberships_api.add("1", [contacts["L-1"], "999"])
    assert (added.records_ids_added, added.record_ids_missing) == ([contacts["L-1"]], ["999"])
    with pytest.raises(Exception) as exc:
        client.crm.lists.memberships_api.add("42", [contacts["L-1"]])
    assert exc.value.status == 404  # type: ignore[attr-defined]

    merged = client.crm.contacts.basic_api.merge(
        PublicMergeInput(primary_object_id=contacts["L-0"], object_id_to_merge=contacts["L-1"])
    )
    assert (
        merged.id == contacts["L-0"]
        and merged.properties["hs_merged_object_ids"] == contacts["L-1"]
    )
    with pytest.raises(ApiException) as exc:
        client.crm.contacts.basic_api.get_by_id(contacts["L-1"])
    assert exc.value.status == 404
    truth = httpx.get(f"{hubspot_crm.base}/__sandbox/truth").json()
    assert truth["contacts"]["count"] == 4 and truth["companies"]["count"] == 1
    assert truth["associations"]["records"] == [{"contact": contacts["L-0"], "company": company.id}]
    assert truth["lists"] == {"1": [contacts["L-0"]]}


def test_hubspot_rate_limits(hubspot_crm: Crm) -> None:
    hubspot_crm.control(requests_per_ten_seconds=3, search_requests_per_second=1)
    headers = {"Authorization": f"Bearer {HUBSPOT_TOKEN}"}
    url = f"{hubspot_crm.base}/crm/v3/properties/contacts/email"
    remaining = [
        httpx.get(url, headers=headers).headers["X-HubSpot-RateLimit-Remaining"] for _ in range(3)
    ]
    assert remaining == ["2", "1", "0"]
    refused = httpx.get(url, headers=headers)
    assert refused.status_code == 429
    assert refused.json() | {"correlationId": None, "groupName": None} == {
        "status": "error", "message": "You have reached your ten_secondly_rolling limit.", "errorType": "RATE_LIMIT",
        "policyName": "TEN_SECONDLY_ROLLING", "correlationId": None, "groupName": None,
    }  # fmt: skip
    assert (
        refused.headers["X-HubSpot-RateLimit-Max"],
        refused.headers["X-HubSpot-RateLimit-Remaining"],
    ) == ("3", "0")
    with pytest.raises(PropertiesApiException) as exc:
        hs_client(hubspot_crm).crm.properties.core_api.get_by_name("contacts", "email")
    assert exc.value.status == 429

    hubspot_crm.clock.advance(10)
    search = hs_client(hubspot_crm).crm.contacts.search_api.do_search
    assert search(PublicObjectSearchRequest(filter_groups=[])).total == 0
    with pytest.raises(ApiException) as exc:
        search(PublicObjectSearchRequest(filter_groups=[]))
    assert exc.value.status == 429 and '"policyName":"SECONDLY"' in exc.value.body


# --- Pipedrive --------------------------------------------------------------------------------


def test_pipedrive_token_in_header_or_query(pipedrive: Crm) -> None:
    url = f"{pipedrive.base}/api/v2/persons"
    for refused in (httpx.get(url), httpx.get(url, headers={"x-api-token": "wrong"})):
        assert refused.status_code == 401
        body = refused.json()
        assert (body["success"], body["error"], body["errorCode"]) == (
            False,
            "unauthorized access",
            401,
        )
    assert httpx.get(url, params={"api_token": PIPEDRIVE_TOKEN}).json()["success"] is True
    assert httpx.get(url, headers={"x-api-token": PIPEDRIVE_TOKEN}).json()["success"] is True


def test_pipedrive_post_always_creates_and_custom_field_search(pipedrive: Crm) -> None:
    client = pd(pipedrive)
    key = pd_lead_key(client, "personFields")
    assert len(key) == 40
    created = [
        client.post(
            "/api/v2/persons", json={"name": "Ann Ng", "custom_fields": {key: "L-1"}}
        ).json()["data"]
        for _ in range(2)
    ]
    assert created[0]["id"] != created[1]["id"]
    assert pipedrive.truth("persons")["duplicates"] == {"L-1": 2}

    def search(term: str, exact: str) -> list[int]:
        params = {"term": term, "fields": "custom_fields", "exact_match": exact}
        return [
            i["item"]["id"]
            for i in client.get("/api/v2/persons/search", params=params).json()["data"]["items"]
        ]

    assert search("l-1", "true") == [p["id"] for p in created]
    assert search("L-", "true") == [] and len(search("L-", "false")) == 2
    assert (
        client.get(
            "/api/v2/persons/search", params={"term": "L", "exact_match": "false"}
        ).status_code
        == 400
    )

    patched = client.patch(
        f"/api/v2/persons/{created[0]['id']}",
        json={"emails": [{"value": "ann@acme.test", "primary": True, "label": "work"}]},
    )
    assert patched.json()["data"]["name"] == "Ann Ng"
    assert (
        client.get(f"/api/v2/persons/{created[0]['id']}").json()["data"]["emails"][0]["value"]
        == "ann@acme.test"
    )
    for body in (
        {"custom_fields": {key: "L-2"}},  # no name
        {"name": "Ann", "email": "ann@acme.test"},  # a v1 field name
        {"name": "Ann", "custom_fields": {"0" * 40: "x"}},
        {"name": "Ann", "org_id": 999},
        {"name": "Ann", "owner_id": "1"},  # v2 does not coerce strings to numbers
    ):
        answer = client.post("/api/v2/persons", json=body)
        assert answer.status_code == 400 and answer.json()["success"] is False
    missing = client.get("/api/v2/persons/999")
    assert missing.status_code == 404 and missing.json()["error"] == "Person not found"
    assert pipedrive.truth("persons")["count"] == 2


def test_pipedrive_deals_notes_pipelines_and_merge(pipedrive: Crm) -> None:
    client = pd(pipedrive)
    pipelines = client.get("/api/v2/pipelines").json()["data"]
    partners = next(p["id"] for p in pipelines if p["name"] == "Partners")
    stages = client.get("/api/v2/stages", params={"pipeline_id": partners}).json()["data"]
    org = client.post("/api/v2/organizations", json={"name": "Acme"}).json()["data"]
    keep, drop = (
        client.post("/api/v2/persons", json={"name": "Ann", "org_id": org["id"]}).json()["data"]
        for _ in range(2)
    )
    deal = client.post(
        "/api/v2/deals",
        json={
            "title": "Acme deal",
            "value": 1200,
            "person_id": drop["id"],
            "org_id": org["id"],
            "stage_id": stages[0]["id"],
        },
    ).json()["data"]
    assert (deal["pipeline_id"], deal["stage_id"], deal["status"]) == (
        partners,
        stages[0]["id"],
        "open",
    )
    assert (
        client.post(
            "/api/v2/deals", json={"title": "x", "pipeline_id": 1, "stage_id": stages[0]["id"]}
        ).status_code
        == 400
    )
    assert client.post("/api/v2/deals", json={"title": "x", "value": "1200"}).status_code == 400

    note = client.post("/api/v1/notes", json={"content": "Lead L-1 summary", "deal_id": deal["id"]})
    assert note.status_code == 201 and note.json()["data"]["deal_id"] == deal["id"]
    assert client.post("/api/v1/notes", json={"content": "orphan"}).status_code == 400
    by_note = client.get("/api/v2/deals/search", params={"term": "summary", "fields": "notes"})
    assert [i["item"]["id"] for i in by_note.json()["data"]["items"]] == [deal["id"]]
    assert [
        n["id"] for n in client.get("/api/v1/notes", params={"deal_id": deal["id"]}).json()["data"]
    ] == [note.json()["data"]["id"]]

    merged = client.put(
        f"/api/v1/persons/{drop['id']}/merge", json={"merge_with_id": keep["id"]}
    ).json()["data"]
    assert merged["id"] == keep["id"]
    assert client.get(f"/api/v2/deals/{deal['id']}").json()["data"]["person_id"] == keep["id"]
    assert client.get(f"/api/v2/persons/{drop['id']}").status_code == 404
    other_org = client.post("/api/v2/organizations", json={"name": "Acme Inc"}).json()["data"]
    client.patch(f"/api/v2/persons/{keep['id']}", json={"org_id": other_org["id"]})
    client.put(f"/api/v1/organizations/{other_org['id']}/merge", json={"merge_with_id": org["id"]})
    assert client.get(f"/api/v2/persons/{keep['id']}").json()["data"]["org_id"] == org["id"]
    truth = httpx.get(f"{pipedrive.base}/__sandbox/truth").json()
    assert {k: truth[k]["count"] for k in ("organizations", "persons", "deals", "notes")} == {
        "organizations": 1,
        "persons": 1,
        "deals": 1,
        "notes": 1,
    }
    assert truth["persons"]["merged"] == 1 and truth["organizations"]["merged"] == 1


def test_pipedrive_cursor_pagination(pipedrive: Crm) -> None:
    client = pd(pipedrive)
    for i in range(5):
        client.post("/api/v2/organizations", json={"name": f"Acme {i}"})
    seen, cursor = [], None
    while True:
        page = client.get(
            "/api/v2/organizations", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
        ).json()
        seen.append([o["name"] for o in page["data"]])
        cursor = page["additional_data"]["next_cursor"]
        if cursor is None:
            break
    assert seen == [["Acme 0", "Acme 1"], ["Acme 2", "Acme 3"], ["Acme 4"]]
    first = client.get(
        "/api/v2/organizations/search", params={"term": "acme", "fields": "name", "limit": 3}
    ).json()
    rest = client.get(
        "/api/v2/organizations/search",
        params={
            "term": "acme",
            "fields": "name",
            "limit": 3,
            "cursor": first["additional_data"]["next_cursor"],
        },
    ).json()
    assert (
        len(first["data"]["items"]) == 3
        and len(rest["data"]["items"]) == 2
        and rest["additional_data"]["next_cursor"] is None
    )
    assert client.get("/api/v2/organizations", params={"cursor": "garbage"}).status_code == 400
    assert client.get("/api/v2/organizations", params={"limit": 501}).status_code == 400


def test_pipedrive_burst_limit(pipedrive: Crm) -> None:
    pipedrive.control(requests_per_two_seconds=3)
    client = pd(pipedrive)
    answers = [client.get("/api/v2/pipelines") for _ in range(4)]
    assert [a.headers.get("x-ratelimit-remaining") for a in answers[:3]] == ["2", "1", "0"]
    refused = answers[3]
    assert refused.status_code == 429 and refused.json()["errorCode"] == 429
    assert (
        refused.headers["x-ratelimit-limit"],
        refused.headers["x-ratelimit-remaining"],
        refused.headers["x-ratelimit-reset"],
    ) == ("3", "0", "2")
    pipedrive.clock.advance(2)
    assert client.get("/api/v2/pipelines").status_code == 200


# --- faults ------------------------------------------------------------------------------------


def test_injected_errors_and_throttling_take_each_apis_form(
    salesforce: Crm, hubspot_crm: Crm, pipedrive: Crm
) -> None:
    hubspot_crm.control(error_share=1)
    with pytest.raises(ApiException) as exc:
        hs_client(hubspot_crm).crm.contacts.basic_api.create(
            SimplePublicObjectInputForCreate(properties={"firstname": "Ann"})
        )
    assert exc.value.status == 500
    # The control routes are never faulted, and a faulted request wrote nothing.
    state = hubspot_crm.control()
    assert state["faults"]["injected"]["error"] == 1 and hubspot_crm.truth("contacts")["count"] == 0

    pipedrive.control(throttle_share=1)
    refused = pd(pipedrive).post("/api/v2/organizations", json={"name": "Acme"})
    assert refused.status_code == 429 and refused.headers["x-ratelimit-remaining"] == "0"
    assert pipedrive.truth("organizations")["count"] == 0

    sf = sf_login(salesforce)
    salesforce.control(throttle_share=1)
    with pytest.raises(SalesforceRefusedRequest) as sf_exc:
        sf.Lead.create({"LastName": "Ng", "Company": "Acme"})
    assert sf_exc.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_timeout_fault_writes_after_the_client_gave_up(pipedrive: Crm) -> None:
    pipedrive.control(timeout_share=1, timeout_seconds=0.6)
    with pytest.raises(httpx.ReadTimeout):
        pd(pipedrive).post("/api/v2/organizations", json={"name": "Acme"}, timeout=0.15)
    assert pipedrive.truth("organizations")["count"] == 0  # still held
    deadline = time.monotonic() + 5
    while pipedrive.truth("organizations")["count"] == 0:
        assert time.monotonic() < deadline, "the held write never landed"
        time.sleep(0.05)


def test_lost_response_commits_the_write_and_drops_the_answer(
    salesforce: Crm, hubspot_crm: Crm, pipedrive: Crm
) -> None:
    pipedrive.control(lost_response_share=1)
    with pytest.raises(httpx.RemoteProtocolError):
        pd(pipedrive).post("/api/v2/organizations", json={"name": "Acme"})
    assert pipedrive.truth("organizations")["count"] == 1

    hubspot_crm.control(lost_response_share=1)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        hs_client(hubspot_crm).crm.contacts.basic_api.create(
            SimplePublicObjectInputForCreate(properties={"firstname": "Ann"})
        )
    assert hubspot_crm.truth("contacts")["count"] == 1

    sf = sf_login(salesforce)
    lead_id = sf.Lead.create({"LastName": "Ng", "Company": "Acme"})["id"]
    salesforce.control(lost_response_share=1)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        sf.Lead.update(lead_id, {"City": "Austin"})  # even a bodiless 204 answer is lost
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        sf.Lead.upsert(f"{EXT}/L-1", {"LastName": "Li", "Company": "Acme"})
    records = {r["Id"]: r for r in salesforce.truth("leads")["records"]}
    assert records[lead_id]["City"] == "Austin" and len(records) == 2


def test_fault_draws_are_seeded() -> None:
    def draws(label: str) -> list[str | None]:
        config = FaultConfig(
            error_share=0.2, throttle_share=0.2, timeout_share=0.2, lost_response_share=0.2
        )
        never_sent = Response(status_code=599)  # draw() alone sends no answer
        faults = Faults(
            config, label, error_response=lambda: never_sent, throttle_response=lambda: never_sent
        )
        return [faults.draw() for _ in range(200)]

    first = draws("pipedrive/7")
    assert first == draws("pipedrive/7") and first != draws("pipedrive/8")
    counts = {
        kind: first.count(kind) for kind in ("error", "throttle", "timeout", "lost_response", None)
    }
    assert all(20 <= n <= 60 for n in counts.values()), counts


# --- mounted in the sandbox server -------------------------------------------------------------


def test_the_crms_are_mounted_in_the_sandbox_server() -> None:
    settings = get_settings()
    app = build_app(SandboxConfig(seed=7, businesses=10), generate(7, 10))
    with serve_in_thread(app) as base:
        session = salesforce_session(
            f"{base}/salesforce", settings.sandbox_crm_salesforce_instance_url
        )
        sf = Salesforce(
            username=settings.sandbox_crm_salesforce_username,
            password=settings.sandbox_crm_salesforce_password,
            consumer_key=settings.sandbox_crm_salesforce_consumer_key,
            consumer_secret=settings.sandbox_crm_salesforce_consumer_secret,
            session=session,
        )
        assert (
            sf.Lead.upsert(
                f"{settings.sandbox_crm_salesforce_external_id_field}/L-1",
                {"LastName": "Ng", "Company": "Acme"},
            )
            == 201
        )
        assert httpx.get(f"{base}/salesforce/__sandbox/truth").json()["leads"]["count"] == 1

        client = hubspot.Client.create(
            access_token=settings.sandbox_crm_hubspot_access_token, host=f"{base}/hubspot"
        )
        assert (
            client.crm.properties.core_api.get_by_name("contacts", "email").has_unique_value is True
        )

        answer = httpx.get(
            f"{base}/pipedrive/api/v2/pipelines",
            headers={"x-api-token": settings.sandbox_crm_pipedrive_api_token},
        )
        assert answer.status_code == 200 and answer.headers["x-ratelimit-limit"] == str(
            settings.sandbox_crm_pipedrive_requests_per_two_seconds
        )
