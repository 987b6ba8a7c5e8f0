"""Slack slash commands: `/scrape <category> in <location>` starts a pipeline run, `/stats`
answers counts. Left out of the OpenAPI schema: Slack is its only caller.

Slack signs every request: `X-Slack-Signature` = `v0=` + HMAC-SHA256(signing secret,
`v0:{X-Slack-Request-Timestamp}:{raw body}`). The signature is checked over the raw body
before the form is decoded, in constant time, and a timestamp more than five minutes off is
refused (a replayed request). Slack wants an answer within 3 s: `/scrape` answers as soon
as the run is created; `/stats` answers in place when its queries are quick, else through
`response_url`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import anyio
import httpx
from fastapi import APIRouter, BackgroundTasks, Request
from pydantic import ValidationError

from api.deps import State
from api.errors import ApiError
from api.routers.runs import start_pipeline_run
from connectors.mongo import LeadStore
from leadflow.logs import request_id_var
from models.search import SearchSpec

router = APIRouter(prefix="/slack", include_in_schema=False)
log = logging.getLogger("leadflow.api.slack")

REPLAY_WINDOW_SECONDS = 5 * 60
STATS_INLINE_SECONDS = 2.0  # past this, /stats answers through response_url
USAGE = (
    "Usage: `/scrape <category> in <location>` (e.g. `/scrape dentists in Austin, TX`), `/stats`."
)
_SCRAPE = re.compile(r"^\s*(?P<category>.+?)\s+in\s+(?P<location>.+?)\s*$", re.IGNORECASE)


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify_slack_request(
    secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float
) -> None:
    """Raise ApiError(401) unless the request is Slack's, signed within the replay window."""
    if not timestamp or not signature:
        raise ApiError(401, "Missing Slack signature headers.")
    try:
        sent = int(timestamp)
    except ValueError:
        raise ApiError(401, "Invalid X-Slack-Request-Timestamp.") from None
    if abs(now - sent) > REPLAY_WINDOW_SECONDS:
        raise ApiError(401, "Stale Slack request (older than 5 minutes).")
    if not hmac.compare_digest(slack_signature(secret, timestamp, body), signature):
        raise ApiError(401, "Invalid Slack signature.")


def parse_scrape(text: str) -> SearchSpec:
    """`dentists in Austin, TX` -> SearchSpec(category='dentists', location='Austin, TX')."""
    match = _SCRAPE.match(text or "")
    if not match:
        raise ValueError(USAGE)
    return SearchSpec(category=match["category"], location=match["location"])


def stats_text(store: LeadStore, now: datetime) -> str:
    day, week = now - timedelta(days=1), now - timedelta(days=7)
    live = {"merged_into": {"$in": [None]}}

    def new_since(moment: datetime) -> int:
        rows = list(
            store.leads.aggregate(
                [{"$match": {**live, "first_seen": {"$gte": moment}}}, {"$count": "n"}]
            )
        )
        return int(rows[0]["n"]) if rows else 0

    top = list(
        store.leads.aggregate(
            [
                {"$match": {**live, "first_seen": {"$gte": week}}},
                {"$group": {"_id": "$category", "n": {"$sum": 1}}},
                {"$sort": {"n": -1}},
                {"$limit": 5},
            ]
        )
    )
    categories = ", ".join(f"{row['_id']} ({row['n']})" for row in top) or "none yet"
    return (
        f"*New leads* today (24 h): {new_since(day)}, this week: {new_since(week)}\n"
        f"*Top categories this week:* {categories}"
    )


async def _post_to_response_url(url: str, payload: dict[str, Any], timeout: float) -> None:
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            (await http.post(url, json=payload)).raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("posting to Slack's response_url failed: %s", exc)


@router.post("/commands")
async def slash_command(request: Request, state: State, background: BackgroundTasks) -> dict:
    secret = state.settings.slack_signing_secret
    if secret is None:
        raise ApiError(503, "Slack commands are not configured (LEADFLOW_SLACK_SIGNING_SECRET).")
    body = await request.body()
    verify_slack_request(
        secret.get_secret_value(),
        request.headers.get("X-Slack-Request-Timestamp"),
        request.headers.get("X-Slack-Signature"),
        body,
        time.time(),
    )
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    command, text = form.get("command", ""), form.get("text", "")
    user, response_url = form.get("user_id", "unknown"), form.get("response_url", "")

    if command == "/scrape":
        try:
            spec = parse_scrape(text)
        except (ValueError, ValidationError) as exc:
            return {"response_type": "ephemeral", "text": str(exc).splitlines()[0]}
        run, _ = await start_pipeline_run(
            state,
            spec,
            requested_by=f"slack:{user}",
            tags=["leadflow-slack", f"slack-user:{user}", f"request-id:{request_id_var.get()}"],
        )
        link = f"{state.settings.prefect_ui}/runs/flow-run/{run.run_id}"
        return {
            "response_type": "in_channel",
            "text": f"Started run *{run.name}* for {spec.describe()}: <{link}|follow it in Prefect>.",
        }
    if command == "/stats":
        now = datetime.now(UTC)
        try:
            with anyio.fail_after(STATS_INLINE_SECONDS):
                text = await anyio.to_thread.run_sync(
                    stats_text, state.store, now, abandon_on_cancel=True
                )
        except TimeoutError:

            async def later() -> None:
                answer = await anyio.to_thread.run_sync(stats_text, state.store, now)
                await _post_to_response_url(
                    response_url, {"response_type": "ephemeral", "text": answer}, 10.0
                )

            if response_url:
                background.add_task(later)
            return {"response_type": "ephemeral", "text": "Counting... the answer follows."}
        return {"response_type": "ephemeral", "text": text}
    return {"response_type": "ephemeral", "text": f"Unknown command {command!r}. {USAGE}"}
