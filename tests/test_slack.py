"""Slack slash commands: signature checks (pure) and the endpoint over HTTP against the real
Prefect server, with `/scrape` runs put on a paused work queue so no crawl starts."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest

from api.errors import ApiError
from api.routers.slack import parse_scrape, slack_signature, verify_slack_request
from connectors.mongo import shared_store
from tests.conftest import RunningServices
from tests.servers import api_instance

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def test_a_signed_fresh_request_passes_and_tampering_or_staleness_does_not() -> None:
    body = b"command=%2Fstats&text=&user_id=U1"
    now = time.time()
    stamp = str(int(now))
    signature = slack_signature(SECRET, stamp, body)
    verify_slack_request(SECRET, stamp, signature, body, now)  # no exception
    refusals = {
        "tampered body": (stamp, signature, body + b"&x=1", now),
        "wrong secret": (stamp, slack_signature("other", stamp, body), body, now),
        "replayed after 5 min": (stamp, signature, body, now + 301),
        "timestamp from the future": (stamp, signature, body, now - 301),
        "no signature": (stamp, None, body, now),
        "garbage timestamp": ("soon", signature, body, now),
    }
    for why, (ts, sig, raw, at) in refusals.items():
        with pytest.raises(ApiError) as refused:
            verify_slack_request(SECRET, ts, sig, raw, at)
        assert refused.value.status == 401, why


def test_scrape_text_parses_into_a_search_spec() -> None:
    spec = parse_scrape("  dentists   in  Austin, TX ")
    assert (spec.category, spec.location) == ("dentists", "Austin, TX")
    assert parse_scrape("coffee shops in San Antonio").location == "San Antonio"
    for text in ("", "dentists", "in Austin"):
        with pytest.raises(ValueError, match="Usage"):
            parse_scrape(text)


@pytest.fixture(scope="module")
def slack_api(services: RunningServices) -> Iterator[str]:
    from prefect.client.orchestration import get_client

    queue = f"slack-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        client.create_work_queue(
            name=queue, work_pool_name=services.settings.work_pool, is_paused=True
        )
    with api_instance(
        services.settings,
        "slack",
        LEADFLOW_SLACK_SIGNING_SECRET=SECRET,
        LEADFLOW_API_WORK_QUEUE=queue,
    ) as url:
        yield url


def post_command(
    url: str, form: dict[str, str], *, secret: str = SECRET, age: int = 0
) -> httpx.Response:
    body = urlencode(form).encode()
    stamp = str(int(time.time()) - age)
    headers = {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": slack_signature(secret, stamp, body),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return httpx.post(f"{url}/slack/commands", content=body, headers=headers, timeout=10)


def test_scrape_command_starts_a_run_tagged_with_the_user(
    services: RunningServices, slack_api: str
) -> None:
    form = {"command": "/scrape", "text": "dentists in Austin, TX", "user_id": "U42",
            "response_url": "http://127.0.0.1:9/unused"}  # fmt: skip
    started = time.monotonic()
    answer = post_command(slack_api, form)
    assert time.monotonic() - started < 3  # Slack's deadline
    assert answer.status_code == 200, answer.text
    text = answer.json()["text"]
    assert "dentists in Austin, TX" in text and "/runs/flow-run/" in text
    run_id = text.split("/runs/flow-run/")[1].split("|")[0]
    run = shared_store(services.settings).get_run(run_id)
    assert run is not None and run["requested_by"] == "slack:U42"
    assert "slack-user:U42" in run["tags"]
    assert run["spec"]["category"] == "dentists"

    usage = post_command(slack_api, {**form, "text": "dentists"})
    assert usage.status_code == 200 and "Usage" in usage.json()["text"]


def test_stats_command_counts_and_bad_signatures_are_refused(slack_api: str) -> None:
    stats = post_command(slack_api, {"command": "/stats", "user_id": "U1"})
    assert stats.status_code == 200
    assert "New leads" in stats.json()["text"] and "Top categories" in stats.json()["text"]

    forged = post_command(slack_api, {"command": "/stats"}, secret="not-the-secret")
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "unauthorized"
    stale = post_command(slack_api, {"command": "/stats"}, age=600)
    assert stale.status_code == 401 and "Stale" in stale.json()["error"]["message"]
    schema = httpx.get(f"{slack_api}/openapi.json", timeout=10).json()
    assert not [path for path in schema["paths"] if path.startswith("/slack")]


# --- incoming-webhook notifications ---------------------------------------------------------


def test_notifier_posts_to_the_hook_and_explains_slacks_refusals() -> None:
    from connectors.slack import SlackError, SlackNotifier, run_message
    from sandbox.slack import DEFAULT_HOOK, SlackSandbox, slack_app
    from tests.servers import serve_in_thread

    sandbox = SlackSandbox(burst=1)
    with serve_in_thread(slack_app(sandbox)) as url:
        notifier = SlackNotifier(f"{url}/{DEFAULT_HOOK}", timeout=5)
        text, blocks = run_message(
            "lead_pipeline", "crimson-otter", "FAILED", "http://ui/runs/1", {"scraped": 12}, "boom"
        )
        notifier.post(text, blocks)
        started = time.monotonic()
        notifier.post("second, right after the first")  # 429 once, then sent after Retry-After
        assert time.monotonic() - started >= 0.9
        received = sandbox.messages[DEFAULT_HOOK]
        assert [m["text"] for m in received] == [text, "second, right after the first"]
        assert (
            "crimson-otter" in text and "*reason:* boom" in received[0]["blocks"][1]["text"]["text"]
        )

        with pytest.raises(SlackError, match="refused"):
            SlackNotifier(f"{url}/{DEFAULT_HOOK}").post("")
        httpx.post(f"{url}/__sandbox/state", json={"revoke": DEFAULT_HOOK})
        with pytest.raises(SlackError, match="revoked"):
            notifier.post("after revocation")
        assert len(sandbox.messages[DEFAULT_HOOK]) == 2
