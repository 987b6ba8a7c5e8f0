"""Slack incoming-webhook notifications: run finished, run failed.

One POST per message to the webhook URL (a secret: it is the credential). Slack answers
`ok`; `no_service` (404) means the hook was revoked or never existed, `invalid_payload` /
`no_text` (400) a malformed message, 429 its one-message-per-second limit (we wait
`Retry-After` once, then give up: a notification is never worth blocking a run for).
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from leadflow.settings import Settings, get_settings


class SlackError(RuntimeError):
    pass


class SlackNotifier:
    def __init__(self, webhook_url: str, *, timeout: float = 10.0) -> None:
        self.webhook_url = webhook_url
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> SlackNotifier | None:
        """None when no webhook is configured (notifications off)."""
        settings = settings or get_settings()
        url = settings.slack_webhook
        return cls(url, timeout=settings.slack_timeout) if url else None

    def post(self, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        body: dict[str, Any] = {"text": text, **({"blocks": blocks} if blocks else {})}
        for attempt in (1, 2):
            try:
                response = httpx.post(self.webhook_url, json=body, timeout=self.timeout)
            except httpx.HTTPError as exc:
                raise SlackError(f"Slack webhook unreachable: {type(exc).__name__}") from None
            if response.status_code == 429 and attempt == 1:
                time.sleep(min(float(response.headers.get("Retry-After") or 1), 5.0))
                continue
            break
        if response.status_code == 404:
            raise SlackError("Slack webhook revoked or unknown (no_service): make a new one")
        if response.status_code == 400:
            raise SlackError(f"Slack refused the message: {response.text[:100]}")
        if response.status_code == 429:
            raise SlackError("Slack rate limit (1 message per second per webhook)")
        if response.status_code >= 300 or response.text.strip() != "ok":
            raise SlackError(f"Slack answered {response.status_code}: {response.text[:100]}")


def run_message(
    flow_name: str,
    run_name: str,
    state: str,
    link: str,
    summary: dict[str, Any] | None,
    error: str | None,
) -> tuple[str, list[dict[str, Any]]]:
    """The text and Block Kit blocks of a finished-run notification."""
    icon = ":white_check_mark:" if state == "COMPLETED" else ":x:"
    text = f"{icon} {flow_name} run {run_name} {state.lower()}"
    facts = []
    if summary:
        for key in ("scraped", "new", "inserted", "updated", "leads_with_email", "quarantined"):
            if key in summary:
                facts.append(f"*{key.replace('_', ' ')}:* {summary[key]}")
    if error:
        facts.append(f"*reason:* {error[:500]}")
    blocks = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"{text} (<{link}|open in Prefect>)"},
        },
    ]
    if facts:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(facts)}})
    return text, blocks
