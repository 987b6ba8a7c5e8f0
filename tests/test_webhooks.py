"""Webhooks against a real receiver on 127.0.0.1 that verifies every request with the
`standardwebhooks` library and drops repeats by webhook-id, and a real MongoDB-wire server:
retries (500, time-out, 429 + Retry-After), exactly-once acceptance, re-runs that send nothing,
one update per change, dead letters and `leadflow webhooks replay`, templates, forget.

The module starts its own nx-27017 (about a second) instead of the session's whole stack;
backoff is shrunk through settings so the whole file takes a few seconds.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from connectors.mongo import LeadStore
from connectors.webhooks import (
    DELIVERIES,
    WebhookConfigError,
    WebhookSender,
    deliver_leads,
    load_endpoints,
    scrub_webhook_logs,
)
from leadflow.cli import app
from leadflow.settings import PROJECT_DIR, Settings
from models.lead import Address, CompanyFacts, Enrichment, Lead, Score, new_lead_id, utcnow
from tests.conftest import leadflow_env
from tests.servers import embedded_mongo, serve_in_thread

TIMEOUT = 0.3  # seconds per attempt; the receiver's "timeout" answer takes twice that
FAST = {  # what the tests shrink: backoff 0.01 s doubling, at most 2 s (Retry-After: 1 fits)
    "webhook_timeout": TIMEOUT,
    "webhook_backoff": 0.01,
    "webhook_backoff_max": 2.0,
    "webhook_concurrency": 4,
}


# --- the receiver ----------------------------------------------------------------------------


@dataclass
class Hook:
    """One receiving endpoint: how it answers, and what it saw."""

    secret: str
    # How the 1st, 2nd, ... attempt of each message is answered: a status code or "timeout"
    # (the message is taken, then the answer comes too late); later attempts get 204.
    script: list[str] = field(default_factory=list)
    down: bool = False  # every attempt: 503
    reject: int | None = None  # every attempt: this status, naming the lead's email
    arrivals: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    raw: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    duplicates: int = 0
    rejected: int = 0

    def take(
        self, msg_id: str, payload: dict[str, Any], body: bytes, headers: dict[str, str]
    ) -> None:
        if msg_id in self.accepted:  # what every receiver should do with a repeated id
            self.duplicates += 1
            return
        self.accepted[msg_id] = payload
        self.raw.append((body, headers))

    def events(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(i, p["type"], p["data"]) for i, p in self.accepted.items()]


HOOKS: dict[str, Hook] = {}


async def receive(request: Request) -> Response:
    hook = HOOKS[request.path_params["name"]]
    body = await request.body()
    headers = dict(request.headers)
    try:
        payload = Webhook(hook.secret).verify(body, headers)
    except WebhookVerificationError:
        hook.rejected += 1
        return Response(status_code=401)
    msg_id = headers["webhook-id"]
    seen = hook.arrivals.setdefault(msg_id, [])
    seen.append({"at": time.monotonic(), "timestamp": headers["webhook-timestamp"]})
    if hook.reject is not None:
        email = payload["data"]["best_email"]
        return PlainTextResponse(f"rejected: {email} is not allowed", status_code=hook.reject)
    action = "503" if hook.down else (hook.script[len(seen) - 1 :] or ["ok"])[0]
    if action == "timeout":
        hook.take(msg_id, payload, body, headers)
        await asyncio.sleep(TIMEOUT * 2)
        return Response(status_code=204)
    if action != "ok":
        retry_after = {"retry-after": "1"} if action == "429" else None
        return Response(status_code=int(action), headers=retry_after)
    hook.take(msg_id, payload, body, headers)
    return Response(status_code=204)


receiver = Starlette(routes=[Route("/hooks/{name}", receive, methods=["POST"])])


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with embedded_mongo(tmp_path_factory.mktemp("webhooks-mongo")) as url:
        yield url


@pytest.fixture(scope="module")
def client(mongo_url: str) -> Iterator[MongoClient]:
    mongo: MongoClient = MongoClient(mongo_url, tz_aware=True)
    yield mongo
    mongo.close()


@pytest.fixture
def db(client: MongoClient) -> Iterator[Database]:
    name = f"t_hooks_{uuid.uuid4().hex[:8]}"
    yield client[name]
    client.drop_database(name)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_in_thread(receiver) as url:
        yield url


@pytest.fixture(autouse=True)
def _fresh_hooks() -> None:
    HOOKS.clear()


def add_hook(base_url: str, name: str, **config: Any) -> tuple[Hook, dict[str, Any]]:
    """A receiver at /hooks/NAME and its LEADFLOW_WEBHOOKS item (config = item fields, or the
    Hook's behaviour: script, down, reject)."""
    behaviour = {k: config.pop(k) for k in ("script", "down", "reject") if k in config}
    hook = HOOKS[name] = Hook(secret=new_secret(), **behaviour)
    return hook, {"name": name, "url": f"{base_url}/hooks/{name}", "secret": hook.secret, **config}


def settings_for(*endpoints: dict[str, Any]) -> Settings:
    # No MongoDB settings: deliver_leads is given the database.
    return Settings(webhooks=json.dumps(list(endpoints)), **FAST)


def make_leads(count: int) -> list[Lead]:
    return [
        Lead(
            lead_id=new_lead_id(),
            name=f"Business {i}",
            category="dentist",
            address=Address(city="Austin", country="US"),
            phone=f"+1512555{i:04d}",
            website=f"https://biz{i}.test",
            domain=f"biz{i}.test",
            best_email=f"owner{i}@biz{i}.test",
            score=Score(value=87.6, model_version="heuristic-1"),
            enrichment=Enrichment(
                status="done", company_facts=CompanyFacts(provider="sandbox", employees=40)
            ),
            first_seen=utcnow(),
            last_seen=utcnow(),
            run_ids=["run-1"],
        )
        for i in range(count)
    ]


def next_run(leads: list[Lead]) -> list[Lead]:
    """The same leads as a later run has them: other last_seen and run ids, same business."""
    return [lead.model_copy(update={"last_seen": utcnow(), "run_ids": ["run-2"]}) for lead in leads]


def log_entries(db: Database) -> dict[str, dict[str, Any]]:
    return {doc["_id"]: doc for doc in db[DELIVERIES].find()}


# --- tests -----------------------------------------------------------------------------------


def test_each_event_is_accepted_once_despite_500_timeout_and_429(
    db: Database, base_url: str
) -> None:
    hook, crm = add_hook(base_url, "crm", script=["500", "timeout", "429"])
    leads = make_leads(3)
    counts = deliver_leads(leads, db, settings_for(crm))
    assert (counts["created"], counts["dead"], counts["delivered"]) == (3, 0, 3)
    assert {data["lead_id"] for _, _, data in hook.events()} == {lead.lead_id for lead in leads}
    assert {kind for _, kind, _ in hook.events()} == {"lead.created"}
    # The timed-out attempt was taken; its retries carried the same id and were dropped.
    assert hook.duplicates == 3 and hook.rejected == 0
    for arrivals in hook.arrivals.values():
        assert len(arrivals) == 4  # 3 retries
        assert arrivals[3]["at"] - arrivals[2]["at"] >= 1.0  # Retry-After: 1 honoured
        assert int(arrivals[3]["timestamp"]) > int(arrivals[0]["timestamp"])  # signed anew
    entries = log_entries(db)
    assert set(entries) == set(hook.accepted)
    for entry in entries.values():
        assert (entry["status"], entry["attempts"], entry["last_error"]) == ("delivered", 4, None)
        assert entry["event"] == "lead.created" and len(entry["payload_hash"]) == 64
        assert "body" not in entry and "data" not in entry  # no payload copies in the log
    data = next(iter(hook.accepted.values()))["data"]
    assert data["address"]["city"] == "Austin" and data["score"] == 87.6
    assert "last_seen" not in data and "run_ids" not in data  # they change every run


def test_a_rerun_sends_nothing_and_a_change_sends_exactly_one_update(
    db: Database, base_url: str
) -> None:
    crm, crm_config = add_hook(base_url, "crm")
    updates, updates_config = add_hook(base_url, "updates-only", events=["lead.updated"])
    settings = settings_for(crm_config, updates_config)
    leads = make_leads(4)
    first = deliver_leads(leads, db, settings)
    assert (first["created"], first["filtered"], len(crm.accepted)) == (4, 4, 4)
    assert updates.arrivals == {}

    again = deliver_leads(next_run(leads), db, settings)
    assert (again["delivered"], again["unchanged"]) == (0, 8)
    assert sum(map(len, crm.arrivals.values())) == 4 and updates.arrivals == {}

    changed = leads[1].model_copy(update={"phone": "+15125559999"})
    batch = next_run([leads[0], changed, *leads[2:]])
    counts = deliver_leads(batch, db, settings)
    assert (counts["updated"], counts["created"], counts["unchanged"]) == (2, 0, 6)
    (update,) = [event for event in crm.events() if event[1] == "lead.updated"]
    assert update[2]["lead_id"] == leads[1].lead_id and update[2]["phone"] == "+15125559999"
    assert [(kind, data["phone"]) for _, kind, data in updates.events()] == [
        ("lead.updated", "+15125559999")
    ]
    assert deliver_leads(batch, db, settings)["delivered"] == 0

    # Changing back, and again, is news each time: new ids, none a receiver would drop.
    assert deliver_leads([leads[1]], db, settings)["updated"] == 2
    assert deliver_leads([changed], db, settings)["updated"] == 2
    assert (len(crm.accepted), crm.duplicates) == (7, 0)
    assert (len(updates.accepted), updates.duplicates) == (3, 0)


def test_a_run_stopped_mid_retry_is_resumed_under_the_same_id(
    db: Database, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook, crm = add_hook(base_url, "crm", script=["500"])
    leads = make_leads(1)

    def worker_killed(*args: object) -> float:
        raise RuntimeError("worker killed while waiting to retry")

    with monkeypatch.context() as patch:
        patch.setattr(WebhookSender, "_delay", worker_killed)
        with pytest.raises(RuntimeError):
            deliver_leads(leads, db, settings_for(crm))
    (entry,) = log_entries(db).values()
    assert (entry["status"], entry["attempts"]) == ("failed", 1)
    assert entry["last_error"] == "HTTP 500 Internal Server Error"

    assert deliver_leads(next_run(leads), db, settings_for(crm))["created"] == 1
    assert {i: len(a) for i, a in hook.arrivals.items()} == {entry["_id"]: 2}
    resumed = log_entries(db)[entry["_id"]]
    assert (resumed["status"], resumed["attempts"]) == ("delivered", 2)


def test_408_409_425_are_retried_other_4xx_are_not(db: Database, base_url: str) -> None:
    busy, busy_config = add_hook(base_url, "busy", script=["409", "425", "408"])
    gone, gone_config = add_hook(base_url, "gone", reject=404)
    counts = deliver_leads(make_leads(1), db, settings_for(busy_config, gone_config))
    assert (counts["created"], counts["dead"]) == (1, 1)
    assert [len(a) for a in busy.arrivals.values()] == [4]
    assert [len(a) for a in gone.arrivals.values()] == [1]
    (dead,) = [e for e in log_entries(db).values() if e["status"] == "dead"]
    assert dead["attempts"] == 1 and dead["last_error"].startswith("HTTP 404 Not Found")
    assert dead["last_error"].endswith("(not retryable)")


def test_signatures_verify_and_a_tampered_body_or_wrong_secret_fails(
    db: Database, base_url: str
) -> None:
    hook, crm = add_hook(base_url, "crm")
    deliver_leads(make_leads(1), db, settings_for(crm))
    ((body, headers),) = hook.raw
    assert Webhook(hook.secret).verify(body, headers)["type"] == "lead.created"
    with pytest.raises(WebhookVerificationError):
        Webhook(hook.secret).verify(body.replace(b"Business", b"Busyness"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)

    # Signed with another secret: the receiver answers 401, which no retry fixes.
    impostor = {**crm, "name": "impostor", "secret": new_secret()}
    counts = deliver_leads(make_leads(1), db, settings_for(impostor))
    assert counts["dead"] == 1 and hook.rejected == 1
    (entry,) = [e for e in log_entries(db).values() if e["endpoint"] == "impostor"]
    assert entry["attempts"] == 1
    assert entry["last_error"] == "HTTP 401 Unauthorized (not retryable)"


def test_a_dead_letter_is_replayed_with_its_webhook_id(
    db: Database, base_url: str, mongo_url: str
) -> None:
    hook, down = add_hook(base_url, "down", down=True)
    settings = settings_for(down)
    leads = make_leads(2)
    LeadStore(db.client, db.name).upsert_leads(leads)
    counts = deliver_leads(leads, db, settings)
    assert (counts["dead"], counts["delivered"]) == (2, 0)
    dead = log_entries(db)
    for entry in dead.values():
        assert (entry["status"], entry["attempts"]) == ("dead", 4)
        assert entry["last_error"] == "HTTP 503 Service Unavailable (gave up after 4 attempts)"
    assert sorted(len(a) for a in hook.arrivals.values()) == [4, 4]
    assert deliver_leads(next_run(leads), db, settings)["awaiting_replay"] == 2
    assert sum(map(len, hook.arrivals.values())) == 8  # a dead letter waits for replay

    # The receiver recovers; meanwhile one lead changed in the store.
    hook.down = False
    changed = leads[1].model_copy(update={"phone": "+15125559999"})
    LeadStore(db.client, db.name).upsert_leads([changed])
    by_lead = {entry["lead_id"]: entry_id for entry_id, entry in dead.items()}
    env = {
        "LEADFLOW_MONGODB_URI": mongo_url,
        "LEADFLOW_MONGODB_DB": db.name,
        "LEADFLOW_WEBHOOKS": json.dumps([down]),
        "LEADFLOW_WEBHOOK_TIMEOUT": str(TIMEOUT),
        "LEADFLOW_WEBHOOK_BACKOFF": "0.01",
    }
    runner = CliRunner()
    with leadflow_env(**env):
        listed = runner.invoke(app, ["webhooks", "list", "--status", "dead"])
        assert listed.exit_code == 0, listed.output
        rows = [line.split("\t") for line in listed.stdout.splitlines()[1:]]
        assert {(row[0], row[1], row[5]) for row in rows} == {(i, "dead", "4") for i in dead}
        replayed = runner.invoke(app, ["webhooks", "replay", "--all-dead"])
        assert replayed.exit_code == 0, replayed.output
        assert "created 2" in replayed.stdout and "superseded 1" in replayed.stdout
        again = runner.invoke(app, ["webhooks", "replay", "--all-dead"])
        assert "nothing to replay" in again.stdout

    # The unchanged lead went out under its original id; the changed one's dead event was
    # stale, so its current content went out as a new lead.created.
    original = by_lead[leads[0].lead_id]
    assert hook.accepted[original]["data"]["phone"] == leads[0].phone
    created_at = dead[original]["created_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert hook.accepted[original]["timestamp"] == created_at  # the event's own time
    (fresh,) = [i for i in hook.accepted if i != original]
    assert fresh not in dead and hook.accepted[fresh]["type"] == "lead.created"
    assert hook.accepted[fresh]["data"]["phone"] == "+15125559999"
    entries = log_entries(db)
    assert (entries[original]["status"], entries[original]["attempts"]) == ("delivered", 5)
    stale = entries[by_lead[leads[1].lead_id]]
    assert (stale["status"], stale["superseded_by"]) == ("superseded", fresh)
    assert entries[fresh]["status"] == "delivered"


def test_once_an_endpoint_exhausts_its_retries_the_rest_of_the_batch_waits(
    db: Database, base_url: str
) -> None:
    hook, down = add_hook(base_url, "down", down=True)
    one_at_a_time = Settings(webhooks=json.dumps([down]), **{**FAST, "webhook_concurrency": 1})
    counts = deliver_leads(make_leads(3), db, one_at_a_time)
    assert (counts["dead"], sum(map(len, hook.arrivals.values()))) == (3, 4)
    tried, *waiting = sorted(log_entries(db).values(), key=lambda e: -e["attempts"])
    assert tried["attempts"] == 4
    for entry in waiting:
        assert (entry["status"], entry["attempts"]) == ("dead", 0)
        assert entry["last_error"] == (
            f"not sent: the endpoint is failing ({tried['_id']}: {tried['last_error']})"
        )


def test_templates_render_the_mapped_fields(db: Database, base_url: str) -> None:
    mapped, mapped_config = add_hook(
        base_url, "mapped", template_path=str(PROJECT_DIR / "deployments/webhooks/crm.json.j2")
    )
    inline, inline_config = add_hook(
        base_url,
        "inline",
        template='{"id": {{ lead.lead_id | tojson }}, "city": {{ lead.address.city | upper | tojson }}}',
    )
    (lead,) = make_leads(1)
    settings = settings_for(mapped_config, inline_config)
    assert mapped.secret not in repr(load_endpoints(settings)) + repr(settings)
    deliver_leads([lead], db, settings)
    ((_, kind, data),) = mapped.events()
    assert kind == "lead.created"
    assert data == {
        "external_id": lead.lead_id,
        "company": "Business 0",
        "email": "owner0@biz0.test",
        "phone": "+15125550000",
        "website": "https://biz0.test",
        "city": "Austin",
        "country": "US",
        "industry": "dentist",
        "score": 88,
        "employees": 40,
        "source": "leadflow",
    }
    assert [data for _, _, data in inline.events()] == [{"id": lead.lead_id, "city": "AUSTIN"}]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"secret": "whsec_not*base64"}, "base64"),
        ({"secret": "whsec_" + base64.b64encode(b"short").decode()}, "24 to 64 bytes"),
        ({"secret": "not-whsec"}, "whsec_"),
        ({"template": "{{ lead.no_such_field | tojson }}"}, "no_such_field"),
        ({"template": "not json"}, "not JSON"),
        ({"template": "[1, 2]"}, "JSON object"),
        ({"events": ["lead.deleted"]}, "events"),
        ({"url": "ftp://example.test"}, "url"),
    ],
)
def test_a_wrong_endpoint_is_refused_without_showing_the_secret(
    change: dict[str, Any], problem: str
) -> None:
    secret = new_secret()
    item = {"name": "crm", "url": "https://example.test/hooks", "secret": secret, **change}
    with pytest.raises(WebhookConfigError) as caught:
        load_endpoints(Settings(webhooks=json.dumps([item])))
    message = str(caught.value)
    assert problem in message and message.startswith("LEADFLOW_WEBHOOKS: 0")
    assert secret not in message and item["secret"] not in message
    assert caught.value.__suppress_context__  # no chained error prints the input either


def test_forget_scrubs_the_delivery_log(db: Database, base_url: str) -> None:
    _, crm = add_hook(base_url, "crm", reject=422)
    leads = make_leads(3)
    assert deliver_leads(leads, db, settings_for(crm))["dead"] == 3
    errors = " ".join(e["last_error"] for e in log_entries(db).values())
    assert "owner0@biz0.test" in errors and "owner1@biz1.test" in errors

    assert scrub_webhook_logs(db, "OWNER0@biz0.test") == 1
    assert scrub_webhook_logs(db, "biz1.test", "domain") == 1
    assert scrub_webhook_logs(db, leads[2].lead_id) == 1
    entries = list(log_entries(db).values())
    assert {e["lead_id"] for e in entries} == {leads[0].lead_id, leads[1].lead_id}
    text = json.dumps(entries, default=str)
    assert "owner0@" not in text and "owner1@" not in text
    assert [e["last_error"].count("[forgotten]") for e in entries] == [1, 1]
