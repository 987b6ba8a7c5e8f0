"""E-mail notifications: failure alerts, the daily new-leads summary, the weekly report.

Plain functions gather the figures from MongoDB and render the Jinja2 templates in
`tasks/email_templates/` (a text and an HTML version of each e-mail; packaged with `tasks`, so
an installed image has them too); thin Prefect tasks wrap them for `flows/reports.py`.
`alert_on_failure` is the flow state hook for Failed runs. A Crashed run's process is gone and
cannot run a hook: the `crashed_alert` flow, started by the automation of
`leadflow/alerts.py`, e-mails those.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import Flow, FlowRun
from prefect.logging.loggers import flow_run_logger
from prefect.states import State
from pydantic import ValidationError
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from connectors.email import EmailContent, EmailError, EmailNotConfigured, Mailer
from connectors.mongo import LeadStore, shared_store
from leadflow.settings import Settings, get_settings
from models.lead import utcnow
from models.search import SearchSpec

# Names the flow run an alert is about, so a mail filter (or a test) can pick it out.
RUN_HEADER = "X-Leadflow-Flow-Run"
# Rows of a by-category / by-city table; the rest are summed into one "other" row.
TABLE_ROWS = 15
UNKNOWN = "(unknown)"

_templates = Environment(
    loader=PackageLoader("tasks", "email_templates"),
    autoescape=select_autoescape(["html"]),
    # A misspelt field fails the render (and the tests) instead of leaving a blank.
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.filters["when"] = lambda moment: moment.strftime("%Y-%m-%d %H:%M UTC")
_templates.filters["score"] = lambda value: "-" if value is None else f"{value:.1f}"


def render(template: str, subject: str, **context: Any) -> EmailContent:
    """`<template>.txt` and `<template>.html` rendered with the same context."""
    return EmailContent(
        subject=subject,
        text=_templates.get_template(f"{template}.txt").render(subject=subject, **context),
        html=_templates.get_template(f"{template}.html").render(subject=subject, **context),
    )


def flow_run_url(settings: Settings, run_id: str) -> str:
    return f"{settings.prefect_ui}/runs/flow-run/{run_id}"


def _ranked(counts: Counter[str], rows: int = TABLE_ROWS) -> list[tuple[str, int]]:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    rest = sum(n for _, n in ranked[rows:])
    return ranked[:rows] + ([("other", rest)] if rest else [])


# --- failure alerts ------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFailure:
    """What an alert says about the run, whoever noticed it (hook or automation)."""

    flow_name: str
    run_id: str
    run_name: str
    state: str
    message: str | None

    @classmethod
    def of(cls, flow_name: str, flow_run: FlowRun, state: State | None) -> RunFailure:
        state = state or flow_run.state
        return cls(
            flow_name=flow_name,
            run_id=str(flow_run.id),
            run_name=flow_run.name,
            state=state.type.value if state else "UNKNOWN",
            message=state.message if state else None,
        )


def failure_alert_email(
    failure: RunFailure,
    record: dict[str, Any] | None,
    *,
    link: str,
    record_error: str | None = None,
) -> EmailContent:
    """The alert; `record` is the run's `runs` document (last stage, counts per stage)."""
    search = None
    if record and record.get("spec"):
        try:
            search = SearchSpec.model_validate(record["spec"]).describe()
        except ValidationError:  # a record written by an older SearchSpec: leave it out
            search = None
    return render(
        "failure_alert",
        f"[Leadflow] {failure.flow_name} run {failure.run_name} {failure.state}",
        failure=failure,
        link=link,
        search=search,
        record=(
            {"stage": record.get("stage"), "counts": record.get("counts") or {}} if record else None
        ),
        record_error=record_error,
    )


def send_failure_alert(failure: RunFailure, settings: Settings, store: LeadStore) -> None:
    """E-mail the alert; raises EmailError (EmailNotConfigured when there is nowhere to send)."""
    mailer = Mailer.from_settings(settings)
    # The run's record is a bonus: MongoDB being down may be why the run failed, and the
    # alert must go out all the same.
    record, record_error = None, None
    try:
        record = store.get_run(failure.run_id)
    except PyMongoError as exc:
        record_error = str(exc)
    content = failure_alert_email(
        failure, record, link=flow_run_url(settings, failure.run_id), record_error=record_error
    )
    mailer.send(content, headers={RUN_HEADER: failure.run_id})


def alert_on_failure(flow: Flow, flow_run: FlowRun, state: State) -> None:
    """Flow state hook (`@flow(on_failure=[alert_on_failure])`): e-mail the failure alert.

    Never raises: a broken mail server must not disturb the run's own failure handling; the
    reason lands in the run's logs instead.
    """
    logger = flow_run_logger(flow_run, flow)
    try:
        settings = get_settings()
        send_failure_alert(
            RunFailure.of(flow.name, flow_run, state), settings, shared_store(settings)
        )
    except EmailNotConfigured as exc:
        logger.info("failure alert not e-mailed: %s", exc)
    except Exception as exc:
        logger.error(
            "could not e-mail the failure alert of flow run %s: %s",
            flow_run.id,
            exc,
            # An SMTP error explains itself; anything else is a bug worth its traceback.
            exc_info=not isinstance(exc, EmailError),
        )


# --- daily summary -------------------------------------------------------------------------


@dataclass(frozen=True)
class TopLead:
    lead_id: str
    name: str
    category: str
    city: str | None
    score: float | None
    reasons: list[str]
    contact: str | None


@dataclass(frozen=True)
class DailySummary:
    since: datetime
    until: datetime
    new_leads: int
    by_category: list[tuple[str, int]]
    by_city: list[tuple[str, int]]
    top: list[TopLead]


# `address` whole: the embedded server returns a nested projection (`address.city`) as a
# flat key.
_LEAD_FIELDS = (
    "lead_id", "name", "category", "address", "score", "best_email", "phone", "website"
)  # fmt: skip


def _top_lead(doc: dict[str, Any]) -> TopLead:
    score = doc.get("score") or {}
    return TopLead(
        lead_id=doc.get("lead_id") or "",
        name=doc.get("name") or UNKNOWN,
        category=doc.get("category") or UNKNOWN,
        city=(doc.get("address") or {}).get("city"),
        score=score.get("value"),
        reasons=list(score.get("reasons") or []),
        contact=doc.get("best_email") or doc.get("phone") or doc.get("website"),
    )


def _live_since(
    collection: Collection, field: str, since: datetime, fields: Iterable[str]
) -> Iterator[dict[str, Any]]:
    """Live (non-tombstone) documents whose date `field` is at or after `since`.

    Only the date range goes to the server, and grouping, ranking and the tombstone filter
    happen here: the embedded server ignores date ranges inside aggregations and drops
    `$currentDate` fields (`last_seen`) from a date range combined with `$in`.
    """
    projection = {"_id": 0, "merged_into": 1, **dict.fromkeys(fields, 1)}
    for doc in collection.find({field: {"$gte": since}}, projection):
        if doc.get("merged_into") is None:
            yield doc


def daily_figures(
    store: LeadStore, *, now: datetime | None = None, hours: int = 24, top: int = 10
) -> DailySummary:
    """Live leads first seen in the last `hours`: counts by category and city, best `top`."""
    until = now or utcnow()
    since = until - timedelta(hours=hours)
    new = list(_live_since(store.leads, "first_seen", since, _LEAD_FIELDS))
    categories = Counter(doc.get("category") or UNKNOWN for doc in new)
    cities = Counter((doc.get("address") or {}).get("city") or UNKNOWN for doc in new)
    best = heapq.nlargest(top, new, key=lambda doc: (doc.get("score") or {}).get("value") or 0.0)
    return DailySummary(
        since=since,
        until=until,
        new_leads=len(new),
        by_category=_ranked(categories),
        by_city=_ranked(cities),
        top=[_top_lead(doc) for doc in best],
    )


def daily_summary_email(summary: DailySummary) -> EmailContent:
    plural = "" if summary.new_leads == 1 else "s"
    return render(
        "daily_summary",
        f"[Leadflow] {summary.new_leads} new lead{plural} since {summary.since:%Y-%m-%d %H:%M} UTC",
        summary=summary,
    )


# --- weekly report -------------------------------------------------------------------------


@dataclass(frozen=True)
class WeeklyReport:
    since: datetime
    until: datetime
    runs_total: int
    runs_by_state: list[tuple[str, int]]
    leads_new: int
    leads_updated: int
    emails_found: int
    top_categories: list[tuple[str, int]]


def weekly_figures(
    store: LeadStore, *, now: datetime | None = None, days: int = 7, top: int = 5
) -> WeeklyReport:
    """Runs started in the last `days` by state; live leads new and updated in that window,
    how many of those have an e-mail, and the new leads' top categories."""
    until = now or utcnow()
    since = until - timedelta(days=days)
    states = Counter(
        doc.get("state") or UNKNOWN
        for doc in store.runs.find({"created_at": {"$gte": since}}, {"_id": 0, "state": 1})
    )
    touched = _live_since(store.leads, "last_seen", since, ("first_seen", "category", "best_email"))
    new_categories: Counter[str] = Counter()
    updated = emails = 0
    for doc in touched:
        first_seen = doc.get("first_seen")
        if isinstance(first_seen, datetime) and first_seen >= since:
            new_categories[doc.get("category") or UNKNOWN] += 1
        else:
            updated += 1
        emails += bool(doc.get("best_email"))
    return WeeklyReport(
        since=since,
        until=until,
        runs_total=states.total(),
        runs_by_state=_ranked(states),
        leads_new=new_categories.total(),
        leads_updated=updated,
        emails_found=emails,
        top_categories=sorted(new_categories.items(), key=lambda item: (-item[1], item[0]))[:top],
    )


def weekly_report_email(report: WeeklyReport) -> EmailContent:
    return render(
        "weekly_report",
        f"[Leadflow] week to {report.until:%Y-%m-%d}: {report.leads_new} new leads, "
        f"{report.runs_total} runs",
        report=report,
    )


# --- Prefect tasks (flows/reports.py) ------------------------------------------------------


@task(name="daily summary figures", cache_policy=NO_CACHE, persist_result=False)
def daily_figures_task(hours: int) -> DailySummary:
    return daily_figures(shared_store(), hours=hours)


@task(name="weekly report figures", cache_policy=NO_CACHE, persist_result=False)
def weekly_figures_task(days: int) -> WeeklyReport:
    return weekly_figures(shared_store(), days=days)


@task(name="send e-mail", cache_policy=NO_CACHE, persist_result=False)
def send_email_task(content: EmailContent) -> bool:
    """True once sent; False when no e-mail is configured. SMTP errors raise (and retry)."""
    try:
        mailer = Mailer.from_settings(get_settings())
    except EmailNotConfigured as exc:
        get_run_logger().warning("%r not e-mailed: %s", content.subject, exc)
        return False
    mailer.send(content)
    return True


@task(name="send failure alert", cache_policy=NO_CACHE, persist_result=False)
def send_failure_alert_task(failure: RunFailure) -> bool:
    """True once sent; False when no e-mail is configured. SMTP errors raise (and retry)."""
    settings = get_settings()
    try:
        send_failure_alert(failure, settings, shared_store(settings))
    except EmailNotConfigured as exc:
        get_run_logger().warning("alert for flow run %s not e-mailed: %s", failure.run_id, exc)
        return False
    return True
