"""connectors/pipedrive.py against the Pipedrive sandbox served in a thread: every lead becomes
one organization, person, deal and note, found again (never created twice) after lost answers,
late writes, 5xx and 429s."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.pipedrive import LEAD_ID_FIELD, PipedriveClient
from leadflow.settings import Settings
from models.crm import CrmError, MappedLead, load_mapping, map_lead
from models.lead import Address, Lead, Score
from sandbox.pipedrive import PipedriveSandbox, pipedrive_app
from tests.crm import control, no_faults
from tests.servers import serve_in_thread

TOKEN = "sandbox-pipedrive-token"
MAPPING = load_mapping(Path(__file__).resolve().parent.parent / "deployments" / "crm_mapping.yaml")
PIPEDRIVE = MAPPING.destinations["pipedrive"]
KINDS = ("organizations", "persons", "deals", "notes")
NO_FAULTS = no_faults(timeout_seconds=0.3)

# What a transport does to one request: None (send it), "lose" (send it, drop the answer) or
# "late" (give up at once, deliver it a little later, as a slow proxy does).
Rule = Callable[[httpx.Request], str | None]


class Transport(httpx.HTTPTransport):
    """Records every request; `rule` loses answers or delays writes on purpose."""

    def __init__(self, rule: Rule | None = None) -> None:
        super().__init__()
        self.rule = rule
        self.sent: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.method, request.url.path))
        action = self.rule(request) if self.rule else None
        if action == "late":
            body = request.read()
            threading.Timer(
                0.3,
                lambda: httpx.request(
                    request.method, str(request.url), headers=request.headers, content=body
                ),
            ).start()
            raise httpx.ReadTimeout("timed out", request=request)
        response = super().handle_request(request)
        if action == "lose":
            response.read()
            response.close()
            raise httpx.RemoteProtocolError("peer closed connection", request=request)
        return response

    def posts(self) -> list[str]:
        return [path for method, path in self.sent if method == "POST"]


def first(method: str, path: str, action: str) -> Rule:
    """A rule that hits only the first `method path` request."""
    hit = threading.Event()

    def rule(request: httpx.Request) -> str | None:
        if request.method == method and request.url.path == path and not hit.is_set():
            hit.set()
            return action
        return None

    return rule


class Crm:
    def __init__(self, base: str, sandbox: PipedriveSandbox) -> None:
        self.base = base
        self.sandbox = sandbox
        # One connection for the test's own calls (a new httpx client costs ~50 ms).
        self.http = httpx.Client(base_url=base, headers={"x-api-token": TOKEN})

    def control(self, **knobs: Any) -> dict[str, Any]:
        return control(self.base, self.http, **knobs)

    def truth(self) -> dict[str, Any]:
        return self.http.get("/__sandbox/truth").json()

    def counts(self) -> dict[str, int]:
        truth = self.truth()
        return {kind: truth[kind]["count"] for kind in KINDS}

    def client(self, transport: Transport | None = None, **options: Any) -> PipedriveClient:
        settings: dict[str, Any] = {
            "pipeline_id": 1,
            "stage_id": 2,
            "timeout": 2.0,
            "retries": 3,
            "backoff": 0.01,
            "backoff_max": 0.05,
            "write_settle": 0.05,
        }
        return PipedriveClient(TOKEN, self.base, transport=transport, **{**settings, **options})


@pytest.fixture(scope="module")
def server() -> Iterator[Crm]:
    sandbox = PipedriveSandbox()
    with serve_in_thread(pipedrive_app(sandbox)) as base:
        crm = Crm(base, sandbox)
        yield crm
        crm.http.close()


@pytest.fixture
def crm(server: Crm) -> Crm:
    server.control(reset=True, requests_per_two_seconds=10_000, **NO_FAULTS)
    return server


def lead(n: int, **changes: Any) -> MappedLead:
    fields: dict[str, Any] = {
        "lead_id": f"01LEAD{n:020d}",
        "name": f" Acme {n} ",
        "address": Address(full=f"{n} Main St, Austin"),
        "phone": f"+1512555{n:04d}",
        "best_email": f"info@acme{n}.test",
        "score": Score(value=70, reasons=["verified email", f"rating {n}"], model_version="h-1"),
    }
    return map_lead(Lead(**{**fields, **changes}), PIPEDRIVE)


def by_lead_id(crm: Crm, kind: str) -> dict[str, dict[str, Any]]:
    key = crm.sandbox.lead_id_key(kind)
    return {r["custom_fields"][key]: r for r in crm.truth()[kind]["records"]}


def ledger(outcomes: list[Any], known: dict[str, dict[str, str]] | None = None) -> dict:
    """What the sync ledger keeps: the latest external ids per lead."""
    known = dict(known or {})
    for outcome in outcomes:
        known[outcome.lead_id] = {**known.get(outcome.lead_id, {}), **outcome.external_ids}
    return known


# --- creating and updating --------------------------------------------------------------------


def test_first_upsert_creates_every_record_with_the_mapped_fields(crm: Crm) -> None:
    records = [lead(n) for n in (1, 2, 3)]
    outcomes = crm.client().upsert(records, {})

    assert [(o.lead_id, o.ok, o.created) for o in outcomes] == [
        (r.lead_id, True, True) for r in records
    ]
    assert crm.counts() == {kind: 3 for kind in KINDS}
    orgs, persons, deals = (by_lead_id(crm, k) for k in ("organizations", "persons", "deals"))
    notes = {n["id"]: n for n in crm.truth()["notes"]["records"]}
    for record, outcome in zip(records, outcomes, strict=True):
        ids, n = outcome.external_ids, record.lead_id[-1]
        org, person, deal = orgs[record.lead_id], persons[record.lead_id], deals[record.lead_id]
        assert (org["id"], org["name"], org["address"]) == (
            int(ids["organization"]),
            f" Acme {n} ",
            {"value": f"{n} Main St, Austin"},
        )
        assert (person["id"], person["name"], person["org_id"]) == (
            int(ids["person"]),
            f"Acme {n}",
            org["id"],
        )
        assert person["emails"] == [
            {"value": f"info@acme{n}.test", "primary": True, "label": "work"}
        ]
        assert [p["value"] for p in person["phones"]] == [f"+1512555000{n}"]
        assert (deal["id"], deal["title"], deal["value"]) == (int(ids["deal"]), f"Acme {n}", 0)
        assert (deal["org_id"], deal["person_id"], deal["pipeline_id"], deal["stage_id"]) == (
            org["id"],
            person["id"],
            1,
            2,
        )
        note = notes[int(ids["note"])]
        assert (note["deal_id"], note["person_id"], note["org_id"]) == (
            deal["id"],
            person["id"],
            org["id"],
        )
        assert note["content"] == f"verified email, rating {n}\n\nleadflow:{record.lead_id}"


def test_a_replay_creates_nothing_and_a_change_updates_only_that_lead(crm: Crm) -> None:
    records = [lead(n) for n in (1, 2, 3)]
    known = ledger(crm.client().upsert(records, {}))

    # With the ledger's ids, and without them (a crash after the CRM wrote, before the ledger
    # did): found again, nothing created, same ids.
    for ids in (known, {}):
        transport = Transport()
        again = crm.client(transport).upsert(records, ids)
        assert all(o.ok and not o.created for o in again)
        assert ledger(again) == known
        assert transport.posts() == []
    assert crm.counts() == {kind: 3 for kind in KINDS}

    # A salesperson moves a deal on: syncing its lead again must not move it back.
    moved = known[records[1].lead_id]["deal"]
    crm.http.patch(f"/api/v2/deals/{moved}", json={"stage_id": 4})
    before = crm.truth()
    changed = lead(2, phone="+15125559999")
    transport = Transport()
    [outcome] = crm.client(transport).upsert([changed], known)

    assert outcome.ok and not outcome.created and transport.posts() == []
    after = crm.truth()
    mine = known[changed.lead_id]
    for kind in KINDS:
        others = [
            [r for r in truth[kind]["records"] if str(r["id"]) != mine[kind[:-1]]]
            for truth in (before, after)
        ]
        assert others[0] == others[1] and len(others[0]) == 2
    person = by_lead_id(crm, "persons")[changed.lead_id]
    assert [p["value"] for p in person["phones"]] == ["+15125559999"]
    assert by_lead_id(crm, "deals")[changed.lead_id]["stage_id"] == 4


def test_a_changed_note_is_updated_in_place(crm: Crm) -> None:
    known = ledger(crm.client().upsert([lead(1)], {}))
    changed = lead(1, score=Score(value=90, reasons=["replied"], model_version="h-2"))
    [outcome] = crm.client().upsert([changed], known)
    assert outcome.ok, outcome.error
    [note] = crm.truth()["notes"]["records"]
    assert note["content"] == f"replied\n\nleadflow:{changed.lead_id}"


def test_refused_data_is_not_retryable_and_the_batch_goes_on(crm: Crm) -> None:
    good = lead(1)
    nameless = MappedLead(
        "01NAMELESS",
        {**lead(2).objects, "person": {"name": None, "email": "x@acme.test"}},
        "hash",
    )
    unknown_field = MappedLead(
        "01UNKNOWN", {"organization": {"name": "Acme", "Shoe size": 44}}, "hash"
    )
    outcomes = crm.client().upsert([nameless, unknown_field, good], {})

    refused = outcomes[0]
    assert (refused.ok, refused.retryable, refused.throttled) == (False, False, False)
    assert refused.error is not None and "name is required" in refused.error
    assert set(refused.external_ids) == {"organization"}  # kept, so a fix updates it
    assert (outcomes[1].ok, outcomes[1].retryable) == (False, False)
    assert "'Shoe size'" in str(outcomes[1].error)
    assert outcomes[2].ok
    assert crm.counts() == {"organizations": 2, "persons": 1, "deals": 1, "notes": 1}


def test_custom_fields_by_name_and_the_lead_id_field_created_when_missing(crm: Crm) -> None:
    score = crm.http.post(
        "/api/v1/personFields", json={"name": "Leadflow score", "field_type": "double"}
    ).json()["data"]["key"]
    # A company whose deals have no "Leadflow lead id" field yet (the sandbox starts with one).
    crm.sandbox._fields["deals"].clear()
    record = lead(1)
    record.objects["person"]["Leadflow score"] = 87.5
    [outcome] = crm.client().upsert([record], {})

    assert outcome.ok
    person = by_lead_id(crm, "persons")[record.lead_id]
    assert person["custom_fields"][score] == 87.5
    listed = crm.http.get("/api/v1/dealFields").json()["data"]
    assert [f["name"] for f in listed if f["name"] == LEAD_ID_FIELD] == [LEAD_ID_FIELD]
    assert by_lead_id(crm, "deals")[record.lead_id]["id"] == int(outcome.external_ids["deal"])


def test_a_bad_token_raises(crm: Crm) -> None:
    client = PipedriveClient("wrong", crm.base, backoff=0.01)
    with pytest.raises(CrmError, match="API token"):
        client.upsert([lead(1)], {})


# --- rate limits ------------------------------------------------------------------------------


def test_a_429_past_the_retries_throttles_the_rest_and_calls_no_more(crm: Crm) -> None:
    client = crm.client(retries=2)
    assert client.upsert([lead(1)], {})[0].ok
    answers = crm.control()["answers"]
    crm.control(throttle_share=1)

    outcomes = client.upsert([lead(2), lead(3), lead(4)], {})

    assert all(o.throttled and not o.ok and o.retryable for o in outcomes)
    assert "429" in str(outcomes[0].error)
    state = crm.control(throttle_share=0)
    assert state["faults"]["injected"]["throttle"] == 3  # the first call and its 2 retries
    assert state["answers"] == answers  # nothing else reached Pipedrive
    assert crm.counts() == {kind: 1 for kind in KINDS}


def test_a_used_up_window_pauses_instead_of_collecting_429s(crm: Crm) -> None:
    crm.control(requests_per_two_seconds=6)
    # No retries: a single 429 would throttle the lead.
    [outcome] = crm.client(retries=0, backoff_max=3).upsert([lead(1)], {})
    assert outcome.ok, outcome.error
    assert "429" not in crm.control()["answers"]


# --- unclear writes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v2/organizations", "/api/v2/persons", "/api/v2/deals", "/api/v1/notes"]
)
def test_a_create_whose_answer_is_lost_is_found_not_repeated(crm: Crm, path: str) -> None:
    transport = Transport(first("POST", path, "lose"))
    [outcome] = crm.client(transport).upsert([lead(1)], {})

    assert outcome.ok and outcome.created
    assert transport.posts().count(path) == 1
    assert crm.counts() == {kind: 1 for kind in KINDS}
    kind = {"/api/v1/notes": "note"}.get(path, path.rsplit("/", 1)[1][:-1])
    assert outcome.external_ids[kind] == "1"


def test_a_create_that_lands_late_is_waited_for(crm: Crm) -> None:
    # The POST is given up on at once and lands 0.3 s later: searching after `write_settle`
    # finds it; searching at once does not, and creates a second deal (why the setting exists).
    started = time.monotonic()
    transport = Transport(first("POST", "/api/v2/deals", "late"))
    [outcome] = crm.client(transport, write_settle=0.6).upsert([lead(1)], {})
    assert outcome.ok and time.monotonic() - started >= 0.6
    assert transport.posts().count("/api/v2/deals") == 1
    assert crm.truth()["deals"]["duplicates"] == {}

    transport = Transport(first("POST", "/api/v2/deals", "late"))
    [outcome] = crm.client(transport, write_settle=0).upsert([lead(2)], {})
    time.sleep(0.5)
    assert outcome.ok and crm.truth()["deals"]["duplicates"] == {lead(2).lead_id: 2}


def test_seeded_faults_end_with_every_lead_once_per_kind(crm: Crm) -> None:
    records = [lead(n) for n in range(1, 21)]
    crm.control(error_share=0.05, throttle_share=0.05, timeout_share=0.05, lost_response_share=0.05)
    # Time-outs shorter than the sandbox holds them, and a settle longer than that.
    client = crm.client(timeout=0.15, write_settle=0.45)
    known: dict[str, dict[str, str]] = {}
    pending = records
    for _ in range(8):
        outcomes = client.upsert(pending, known)
        known = ledger(outcomes, known)
        pending = [r for r, o in zip(pending, outcomes, strict=True) if not o.ok]
        if not pending:
            break
    state = crm.control(**NO_FAULTS)
    assert pending == []
    assert sum(state["faults"]["injected"].values()) >= 10  # the faults did happen

    time.sleep(0.4)  # any held request lands
    truth = crm.truth()
    assert {kind: (truth[kind]["count"], truth[kind]["duplicates"]) for kind in KINDS} == {
        kind: (20, {}) for kind in KINDS
    }
    for kind in ("organizations", "persons", "deals"):
        assert {lid: str(r["id"]) for lid, r in by_lead_id(crm, kind).items()} == {
            r.lead_id: known[r.lead_id][kind[:-1]] for r in records
        }
    transport = Transport()
    assert all(o.ok for o in crm.client(transport).upsert(records, known))
    assert transport.posts() == []


# --- merge and clear_email --------------------------------------------------------------------


def test_merge_moves_the_tombstone_into_the_survivor_and_repeats_harmlessly(crm: Crm) -> None:
    keep, drop = lead(1), lead(2)
    known = ledger(crm.client().upsert([keep, drop], {}))
    survivor, tombstone = known[keep.lead_id], known[drop.lead_id]

    transport = Transport(first("PUT", f"/api/v1/persons/{tombstone['person']}/merge", "lose"))
    assert crm.client(transport).merge(survivor, tombstone) is True
    assert crm.client().merge(survivor, tombstone) is True  # again: already merged, done

    truth = crm.truth()
    assert (truth["persons"]["count"], truth["persons"]["merged"]) == (1, 1)
    assert (truth["organizations"]["count"], truth["organizations"]["merged"]) == (1, 1)
    person = truth["persons"]["records"][0]
    assert person["id"] == int(survivor["person"])
    assert {e["value"] for e in person["emails"]} == {"info@acme1.test", "info@acme2.test"}
    # The tombstone's deal and note stay, attached to the survivor's person and organization.
    assert {(d["person_id"], d["org_id"]) for d in truth["deals"]["records"]} == {
        (int(survivor["person"]), int(survivor["organization"]))
    }
    assert truth["deals"]["count"] == 2 and truth["notes"]["count"] == 2

    with pytest.raises(CrmError, match="survivor"):
        crm.client().merge({"person": "999"}, survivor)


def test_clear_email_empties_the_persons_emails(crm: Crm) -> None:
    record = lead(1)
    [outcome] = crm.client().upsert([record], {})
    client = crm.client()
    client.clear_email(outcome.external_ids)
    client.clear_email(outcome.external_ids)  # again: nothing left, no error
    client.clear_email({"person": "999"})  # gone (merged away or deleted): nothing to clear
    assert by_lead_id(crm, "persons")[record.lead_id]["emails"] == []


# --- settings ---------------------------------------------------------------------------------


def test_from_settings() -> None:
    settings = Settings(sandbox=True, sandbox_port=8811, pipedrive_timeout=7, _env_file=None)
    client = PipedriveClient.from_settings(settings)  # the mapping file's options: 1 and 1
    assert (client.pipeline_id, client.stage_id) == (1, 1)
    assert str(client._http.base_url) == f"{settings.sandbox_url}/pipedrive/"
    assert client._http.headers["x-api-token"] == settings.sandbox_crm_pipedrive_api_token
    assert client._http.timeout.read == 7
    other = PIPEDRIVE.model_copy(update={"options": {"pipeline_id": "2", "stage_id": 5}})
    client = PipedriveClient.from_settings(settings, other)
    assert (client.pipeline_id, client.stage_id) == (2, 5)
    with pytest.raises(CrmError, match="no API token"):
        PipedriveClient.from_settings(Settings(sandbox=False, _env_file=None), PIPEDRIVE)
    bad = PIPEDRIVE.model_copy(update={"options": {"pipeline_id": "Leadflow"}})
    with pytest.raises(ValueError, match="pipeline_id"):
        PipedriveClient.from_settings(settings, bad)
