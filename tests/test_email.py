"""E-mail over real SMTP: an aiosmtpd server on 127.0.0.1 receives what Leadflow sends, and the
tests read those messages: the failure alert, the daily summary and the weekly report (from a
seeded MongoDB-wire server of this module's own), the failure hook during an SMTP outage, SMTP
AUTH. The crashed-run automation is built and checked the way the server will read it.

`smtp_server()` is meant for reuse, e.g. by the Crashed-alert check of test_worker_runs.py.
"""

from __future__ import annotations

import copy
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from prefect import flow
from prefect.client.schemas.objects import FlowRun
from prefect.events.actions import RunDeployment
from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, temporary_settings
from prefect.states import Failed
from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate
from pydantic import SecretStr
from pymongo import MongoClient

from connectors.email import EmailContent, EmailError, Mailer
from connectors.mongo import LeadStore, shared_store
from flows.reports import crashed_alert
from leadflow.alerts import ALERTED_FLOWS, CRASHED_ALERT_DEPLOYMENT, crashed_alert_automation
from leadflow.prefect_setup import PREFECT_YAML
from leadflow.services import free_ports
from leadflow.settings import Settings
from models.lead import Address, Email, Lead, Score, utcnow
from tasks.notify_email import (
    RUN_HEADER,
    RunFailure,
    alert_on_failure,
    daily_figures,
    daily_summary_email,
    send_failure_alert,
    weekly_figures,
    weekly_report_email,
)
from tests.conftest import leadflow_env
from tests.servers import embedded_mongo

RECIPIENTS = ["ops@leadflow.test", "sales@leadflow.test"]
PREFECT_API = "http://prefect.leadflow.test:4200/api"


class Inbox:
    """aiosmtpd handler keeping every message it accepts, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.port = 0

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        self.messages.append(message_from_bytes(raw, _class=EmailMessage, policy=policy.default))
        return "250 Message accepted for delivery"

    def wait_for(
        self, match: Callable[[EmailMessage], bool], timeout: float = 10.0
    ) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in self.messages if match(m)]
            if found:
                return found[-1]
            time.sleep(0.05)
        subjects = [m["Subject"] for m in self.messages]
        raise AssertionError(f"no matching message within {timeout}s; received: {subjects}")


@contextmanager
def smtp_server(port: int | None = None, **smtp_options: Any) -> Iterator[Inbox]:
    """A real SMTP server on 127.0.0.1 (a free port unless given) collecting into an Inbox."""
    inbox = Inbox()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port or free_ports(1)[0], **smtp_options
    )
    controller.start()
    inbox.port = controller.port
    try:
        yield inbox
    finally:
        controller.stop()


def bodies(message: EmailMessage) -> tuple[str, str]:
    """(text, html) of a multipart/alternative message."""
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    # SMTP carries CRLF line ends; the templates are written with LF.
    return tuple(str(part.get_content()).replace("\r\n", "\n") for part in (text, html))


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with embedded_mongo(tmp_path_factory.mktemp("email-mongo")) as url:
        yield url


@pytest.fixture
def store(mongo_url: str) -> Iterator[LeadStore]:
    client: MongoClient = MongoClient(mongo_url, tz_aware=True)
    lead_store = LeadStore(client, f"t_email_{uuid.uuid4().hex[:8]}")
    yield lead_store
    client.drop_database(lead_store.db.name)
    client.close()


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def settings(inbox: Inbox, mongo_url: str, store: LeadStore) -> Settings:
    return Settings(
        smtp_port=inbox.port,
        email_to=RECIPIENTS,
        mongodb_uri=SecretStr(mongo_url),
        mongodb_db=store.db.name,
        prefect_api_url=PREFECT_API,
    )


def lead(
    name: str,
    category: str,
    city: str,
    score: float,
    first_seen: datetime,
    reasons: tuple[str, ...] = (),
    email: str | None = None,
) -> Lead:
    return Lead(
        lead_id=f"lead-{uuid.uuid4().hex[:12]}",
        name=name,
        category=category,
        address=Address(city=city, country="US"),
        score=Score(value=score, reasons=list(reasons), model_version="heuristic-1"),
        emails=[Email(value=email, source="website")] if email else [],
        best_email=email,
        first_seen=first_seen,
    )


# --- failure alert -------------------------------------------------------------------------


def test_a_failure_alert_has_text_and_html_parts_with_the_run_link_and_reason(
    settings: Settings, store: LeadStore, inbox: Inbox
) -> None:
    run_id = str(uuid.uuid4())
    store.create_run(
        run_id, {"category": "dentist", "location": "Austin, TX", "sources": ["directory"]}
    )
    store.record_stage(run_id, "scrape", {"items": 42})
    store.record_stage(run_id, "normalize", {"leads": 40, "quarantined": 2})
    reason = "Flow run encountered an exception: ValueError: score < 0 for lead 7"
    store.finish_run(run_id, "FAILED", message=reason)

    send_failure_alert(
        RunFailure("lead_pipeline", run_id, "brave-fox", "FAILED", reason), settings, store
    )

    message = inbox.wait_for(lambda m: m[RUN_HEADER] == run_id)
    assert message["Subject"] == "[Leadflow] lead_pipeline run brave-fox FAILED"
    assert message["To"] == ", ".join(RECIPIENTS)
    text, html = bodies(message)
    link = f"http://prefect.leadflow.test:4200/runs/flow-run/{run_id}"
    assert link in text and f'href="{link}"' in html
    assert reason in text
    assert "score &lt; 0 for lead 7" in html  # the HTML part escapes what runs report
    assert "Last stage reached: normalize" in text
    assert "normalize: leads=40, quarantined=2" in text
    assert "dentist in Austin, TX" in text and "dentist in Austin, TX" in html


def test_the_failure_hook_swallows_an_smtp_outage_and_logs_it(
    mongo_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with smtp_server() as stopped:
        port = stopped.port  # the server is gone after this block: connections are refused

    @flow(name="lead_pipeline")
    def pipeline() -> None: ...

    flow_run = FlowRun(id=uuid.uuid4(), name="calm-otter", flow_id=uuid.uuid4())
    env = {
        "LEADFLOW_SMTP_PORT": str(port),
        "LEADFLOW_EMAIL_TO": ",".join(RECIPIENTS),
        "LEADFLOW_MONGODB_URI": mongo_url,
        "LEADFLOW_MONGODB_DB": f"t_email_{uuid.uuid4().hex[:8]}",
    }
    # The hook logs to the run's logger, whose API handler would start a Prefect server.
    no_api_logs = temporary_settings(updates={PREFECT_LOGGING_TO_API_ENABLED: False})
    with no_api_logs, leadflow_env(**env) as env_settings, caplog.at_level(logging.ERROR):
        try:
            alert_on_failure(pipeline, flow_run, Failed(message="crawl produced no items"))
        finally:
            shared_store(env_settings).close()
    assert f"could not e-mail the failure alert of flow run {flow_run.id}" in caplog.text
    assert f"cannot reach SMTP server 127.0.0.1:{port}" in caplog.text


# --- reports -------------------------------------------------------------------------------


def test_the_daily_summary_counts_only_leads_first_seen_in_24_hours_and_lists_the_top_lead(
    settings: Settings, store: LeadStore, inbox: Inbox
) -> None:
    now = utcnow()
    top = lead(
        "Bright Smiles Dental", "dentist", "Austin", 91.5, now - timedelta(hours=2),
        ("verified email", "4.9 rating, 310 reviews"), "hello@brightsmiles.test",
    )  # fmt: skip
    merged = lead("Bright Smiles (dup)", "dentist", "Austin", 50, now - timedelta(hours=1))
    store.upsert_leads(
        [
            top,
            lead("Austin Family Dentistry", "dentist", "Austin", 64, now - timedelta(hours=5)),
            lead("Pipe Pros", "plumber", "Dallas", 72, now - timedelta(hours=23)),
            # Older than 24 hours: left out even though it scores best.
            lead("Old Star Dental", "dentist", "Austin", 99, now - timedelta(days=3)),
            merged,
        ]
    )
    store.upsert_leads([], [merged.model_copy(update={"merged_into": top.lead_id})])

    summary = daily_figures(store, now=now)
    Mailer.from_settings(settings).send(daily_summary_email(summary))

    assert summary.new_leads == 3
    assert summary.by_category == [("dentist", 2), ("plumber", 1)]
    assert summary.by_city == [("Austin", 2), ("Dallas", 1)]
    message = inbox.wait_for(lambda m: "new leads" in m["Subject"])
    assert message["Subject"].startswith("[Leadflow] 3 new leads since ")
    text, html = bodies(message)
    assert "1. Bright Smiles Dental (dentist, Austin) score 91.5" in text
    assert "why: verified email; 4.9 rating, 310 reviews" in text
    assert "hello@brightsmiles.test" in text
    assert "<strong>Bright Smiles Dental</strong>" in html and "verified email" in html
    assert "dentist: 2" in text and "Dallas: 1" in text
    for body in (text, html):
        assert "Old Star Dental" not in body and "(dup)" not in body


def test_the_weekly_report_counts_runs_by_state(
    settings: Settings, store: LeadStore, inbox: Inbox
) -> None:
    now = utcnow()
    runs = [("COMPLETED", 1), ("COMPLETED", 2), ("COMPLETED", 6), ("FAILED", 3), ("CRASHED", 4)]
    runs += [("COMPLETED", 8), ("FAILED", 9)]  # the week before: not counted
    store.runs.insert_many(
        [
            {"_id": f"run-{i}", "state": state, "created_at": now - timedelta(days=age)}
            for i, (state, age) in enumerate(runs)
        ]
    )
    store.upsert_leads(
        [
            lead("New A", "dentist", "Austin", 70, now - timedelta(days=2), email="a@a.test"),
            lead("New B", "plumber", "Austin", 60, now - timedelta(days=1)),
            # First seen a month ago, seen again (last_seen = now) this week: updated.
            lead("Known C", "dentist", "Dallas", 65, now - timedelta(days=30), email="c@c.test"),
        ]
    )
    # Last seen before the week (inserted as is: upserts always set last_seen to now).
    untouched = lead("Quiet D", "dentist", "Waco", 40, now - timedelta(days=40), email="d@d.test")
    store.leads.insert_one(
        untouched.model_dump(mode="python") | {"last_seen": now - timedelta(days=10)}
    )

    report = weekly_figures(store, now=now)
    Mailer.from_settings(settings).send(weekly_report_email(report))

    assert report.runs_by_state == [("COMPLETED", 3), ("CRASHED", 1), ("FAILED", 1)]
    assert (report.leads_new, report.leads_updated, report.emails_found) == (2, 1, 2)
    text, html = bodies(inbox.wait_for(lambda m: "week to" in m["Subject"]))
    for line in ("Runs: 5", "  COMPLETED: 3", "  FAILED: 1", "  CRASHED: 1", "Leads new: 2"):
        assert f"\n{line}\n" in text
    assert "Leads updated: 1" in text and "Emails found: 2" in text
    assert "  dentist: 1\n  plumber: 1" in text
    assert "5 runs" in html and "CRASHED" in html


# --- SMTP AUTH -----------------------------------------------------------------------------


def test_smtp_login_works_and_a_refused_login_is_a_clear_error_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def authenticate(
        server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        ok = (data.login, data.password) == (b"leadflow", b"s3cret-right")
        # handled=False: aiosmtpd answers 235 or 535 itself.
        return AuthResult(success=ok, handled=False)

    content = EmailContent(subject="auth check", text="hello", html="<p>hello</p>")
    with smtp_server(authenticator=authenticate, auth_require_tls=False) as server:

        def mailer(password: str) -> Mailer:
            return Mailer(
                "127.0.0.1",
                server.port,
                sender="Leadflow <leadflow@leadflow.test>",
                recipients=RECIPIENTS,
                username="leadflow",
                password=SecretStr(password),
            )

        with caplog.at_level(logging.DEBUG):
            mailer("s3cret-right").send(content)
            with pytest.raises(EmailError) as refused:
                mailer("s3cret-wrong").send(content)
        assert [m["Subject"] for m in server.messages] == ["auth check"]
    error = str(refused.value)
    assert f"SMTP server 127.0.0.1:{server.port} refused the login of 'leadflow': 535" in error
    for shown in (error, caplog.text, repr(mailer("s3cret-wrong"))):
        assert "s3cret" not in shown


# --- the crashed-run automation ------------------------------------------------------------


def crashed_event(flow_name: str, event: str = "prefect.flow-run.Crashed") -> Any:
    """A state-change event shaped like the ones the Prefect server emits."""
    from prefect.server.events.schemas.events import ReceivedEvent

    return ReceivedEvent(
        occurred=utcnow(),
        event=event,
        resource={
            "prefect.resource.id": f"prefect.flow-run.{uuid.uuid4()}",
            "prefect.resource.name": "calm-otter",
            "prefect.state-type": event.rsplit(".", 1)[1].upper(),
        },
        related=[
            {
                "prefect.resource.id": f"prefect.flow.{uuid.uuid4()}",
                "prefect.resource.role": "flow",
                "prefect.resource.name": flow_name,
            },
            {
                "prefect.resource.id": "prefect.tag.leadflow",
                "prefect.resource.role": "tag",
            },
        ],
        id=uuid.uuid4(),
    )


def test_the_crashed_run_automation_runs_the_alert_deployment_for_pipeline_crashes() -> None:
    from prefect.server.events.schemas.automations import AutomationCore as ServerAutomation

    deployment_id = uuid.uuid4()
    automation = crashed_alert_automation(deployment_id)
    # Read the way the server reads what the client sends (this validates the template).
    served = ServerAutomation.model_validate(automation.model_dump(mode="json"))

    trigger = served.trigger
    assert trigger.expect == {"prefect.flow-run.Crashed"}
    for name in ALERTED_FLOWS:
        assert trigger.covers(crashed_event(name)), name
    assert not trigger.covers(crashed_event("crashed_alert"))
    assert not trigger.covers(crashed_event("lead_pipeline", "prefect.flow-run.Failed"))

    (action,) = automation.actions
    assert isinstance(action, RunDeployment)
    assert action.deployment_id == deployment_id
    # Rendered as the server renders it for a triggering flow run (v1 templates upgraded
    # first, as RunDeployment.render_parameters does).
    crashed_run = FlowRun(id=uuid.uuid4(), name="calm-otter", flow_id=uuid.uuid4())
    (served_action,) = served.actions
    parameters = copy.deepcopy(served_action.parameters) or {}
    served_action._upgrade_v1_templates(parameters)
    rendered = hydrate(
        parameters,
        HydrationContext(
            raise_on_error=True, render_jinja=True, jinja_context={"flow_run": crashed_run}
        ),
    )
    assert rendered == {"flow_run_id": str(crashed_run.id)}
    # The deployment it looks up by name is the one prefect.yaml registers for the alert flow.
    entries = yaml.safe_load(PREFECT_YAML.read_text())["deployments"]
    (entry,) = [e for e in entries if e["entrypoint"] == "flows/reports.py:crashed_alert"]
    assert f"{crashed_alert.name}/{entry['name']}" == CRASHED_ALERT_DEPLOYMENT
