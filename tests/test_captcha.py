"""2captcha: the sandbox API (legacy and v2 JSON), token verification, and the real client over HTTP.

One uvicorn server runs the whole sandbox app; several `CaptchaSandbox` instances with
different knobs are mounted next to the default `/2captcha` one (easy, unsolvable, slow,
busy, short-TTL), so each behaviour is exercised through the same client code a run uses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from connectors.captcha import (
    CaptchaAuthError,
    CaptchaBalanceError,
    CaptchaClient,
    CaptchaRejected,
    CaptchaTimeout,
    CaptchaUnsolvable,
    Solution,
    find_recaptcha_sitekey,
)
from leadflow.settings import SANDBOX_CAPTCHA_KEY, Settings
from sandbox.captcha import (
    CaptchaSandbox,
    CaptchaSandboxConfig,
    NotReady,
    captcha_app,
    normalise_url,
)
from sandbox.directory.generate import generate
from sandbox.server import SandboxConfig, build_app
from tests.clock import FakeClock
from tests.servers import free_port, serve_in_thread

KEY = "test-2captcha-key-0123456789"
EMPTY_KEY = "empty-2captcha-key-0000000000"
SITEKEY = "6LeSandboxSiteKey000000000000000000000000"
PAGE = "http://maps.test/maps/search?q=plumbers+in+austin"
COST = 0.00299


def sandbox(**overrides: Any) -> CaptchaSandbox:
    config = CaptchaSandboxConfig(
        accounts={KEY: 10.0, EMPTY_KEY: 0.0},
        cost=COST,
        solve_seconds=0.05,
        seed=7,
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    return CaptchaSandbox(config)


@pytest.fixture(scope="module")
def sandboxes() -> dict[str, CaptchaSandbox]:
    return {
        "/2captcha-test": sandbox(),
        "/2captcha-hard": sandbox(unsolvable_share=1.0),
        "/2captcha-slow": sandbox(solve_seconds=30.0),
        "/2captcha-busy": sandbox(solve_seconds=0.4, max_pending=1),
        "/2captcha-ttl": sandbox(token_ttl=0.3),
    }


@pytest.fixture(scope="module")
def server(sandboxes: dict[str, CaptchaSandbox]) -> Iterator[str]:
    port = free_port()
    config = SandboxConfig(port=port, seed=42, businesses=5)
    mounts = {prefix: captcha_app(s) for prefix, s in sandboxes.items()}
    app = build_app(config, generate(seed=42, n_businesses=5), mounts=mounts)
    with serve_in_thread(app, port) as url:
        yield url


@pytest.fixture(scope="module")
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=5) as c:
        yield c


def make_client(
    server: str, prefix: str = "/2captcha-test", key: str = KEY, **kw: Any
) -> CaptchaClient:
    options: dict[str, Any] = {
        "poll_interval": 0.02,
        "solve_timeout": 5.0,
        "no_slot_backoff": 0.05,
        "cost_per_solve": COST,
        "max_attempts": 3,
    }
    options.update(kw)
    return CaptchaClient(server + prefix, key, **options)


def verify(
    http: httpx.Client,
    token: str,
    sitekey: str = SITEKEY,
    page: str = PAGE,
    prefix: str = "/2captcha-test",
) -> dict[str, Any]:
    r = http.post(
        f"{prefix}/__verify", json={"response": token, "sitekey": sitekey, "pageurl": page}
    )
    assert r.status_code == 200
    return r.json()


# --------------------------------------------------------------------------------------
# The client against the sandbox
# --------------------------------------------------------------------------------------


def test_default_mount_uses_settings(server: str) -> None:
    # The server's own /2captcha (service_mounts) takes the sandbox key and starting balance.
    with CaptchaClient.from_settings(
        Settings(sandbox=True, sandbox_port=int(server.rsplit(":", 1)[1]))
    ) as client:
        assert client.base_url == f"{server}/2captcha"
        assert client.balance() == pytest.approx(Settings().sandbox_captcha_balance)


def test_balance_and_ensure_balance(server: str) -> None:
    with make_client(server) as client:
        balance = client.balance()
        assert 0 < balance <= 10.0
        assert client.ensure_balance(0.10) == balance


def test_solve_and_verify_once(server: str, http: httpx.Client) -> None:
    with make_client(server) as client:
        solution = client.solve_recaptcha_v2(SITEKEY, PAGE)
    assert isinstance(solution, Solution)
    assert solution.token.startswith("03A") and len(solution.token) > 100
    assert solution.captcha_id.isdigit()
    assert solution.cost == pytest.approx(COST) and solution.seconds > 0
    first = verify(http, solution.token)
    assert first["success"] is True and first["error-codes"] == []
    assert first["hostname"] == "maps.test" and first["challenge_ts"]
    again = verify(http, solution.token)
    assert again == {"success": False, "error-codes": ["timeout-or-duplicate"]}


def test_forged_wrong_page_and_wrong_sitekey_tokens_are_refused(
    server: str, http: httpx.Client
) -> None:
    assert verify(http, "03A" + "x" * 120)["error-codes"] == ["invalid-input-response"]
    assert verify(http, "")["error-codes"] == ["missing-input-response"]
    with make_client(server) as client:
        for_other_page = client.solve_recaptcha_v2(SITEKEY, PAGE)
        for_other_key = client.solve_recaptcha_v2(SITEKEY, PAGE)
        other_server = client.solve_recaptcha_v2(SITEKEY, PAGE)
    refused = verify(http, for_other_page.token, page="http://maps.test/maps/search?q=bakers")
    assert refused == {"success": False, "error-codes": ["invalid-input-response"]}
    # Like siteverify, the first check burns the token: it cannot be replayed on its page.
    assert verify(http, for_other_page.token)["error-codes"] == ["timeout-or-duplicate"]
    assert verify(http, for_other_key.token, sitekey="6LeAnotherKey")["success"] is False
    # A token issued by another 2captcha sandbox (another account store) means nothing here.
    assert verify(http, other_server.token, prefix="/2captcha-hard")["success"] is False


def test_token_expires_after_ttl(server: str, http: httpx.Client) -> None:
    with make_client(server, "/2captcha-ttl") as client:
        fresh = client.solve_recaptcha_v2(SITEKEY, PAGE)
        stale = client.solve_recaptcha_v2(SITEKEY, PAGE)
    assert verify(http, fresh.token, prefix="/2captcha-ttl")["success"] is True
    time.sleep(0.4)  # TTL 0.3 s
    expired = verify(http, stale.token, prefix="/2captcha-ttl")
    assert expired == {"success": False, "error-codes": ["timeout-or-duplicate"]}


def test_wrong_key_is_an_auth_error_without_leaking_the_key(server: str) -> None:
    wrong = "not-the-right-key"
    with make_client(server, key=wrong) as client:
        with pytest.raises(CaptchaAuthError) as info:
            client.balance()
        assert info.value.code == "ERROR_WRONG_USER_KEY"
        assert wrong not in str(info.value)
        with pytest.raises(CaptchaAuthError):
            client.solve_recaptcha_v2(SITEKEY, PAGE)
        assert client.stats.attempted == 0
    with make_client(server, key="a" * 32) as client, pytest.raises(CaptchaAuthError) as info:
        client.balance()
    assert info.value.code == "ERROR_KEY_DOES_NOT_EXIST"


def test_zero_balance_refuses_to_start(server: str) -> None:
    with make_client(server, key=EMPTY_KEY) as client:
        with pytest.raises(CaptchaBalanceError) as info:
            client.ensure_balance(0.10)
        assert str(info.value) == (
            "2captcha balance $0.00 is below the $0.10 minimum "
            "(LEADFLOW_CAPTCHA_MIN_BALANCE); top up or raise the limit"
        )
        with pytest.raises(CaptchaBalanceError) as info:
            client.solve_recaptcha_v2(SITEKEY, PAGE)
        assert info.value.code == "ERROR_ZERO_BALANCE"
        # The default minimum comes from the client's settings.
        client.min_balance = 0.0
        assert client.ensure_balance() == 0.0


def test_report_bad(server: str) -> None:
    with make_client(server) as client:
        solution = client.solve_recaptcha_v2(SITEKEY, PAGE)
        assert client.report_bad(solution.captcha_id) is True
        assert client.report_bad(solution.captcha_id) is False  # ERROR_DUPLICATE_REPORT
        assert client.report_bad("12345") is False  # ERROR_WRONG_CAPTCHA_ID
        assert client.stats.reported_bad == 1


def test_unsolvable_is_typed_and_refunded(
    server: str, sandboxes: dict[str, CaptchaSandbox]
) -> None:
    with make_client(server, "/2captcha-hard") as client:
        before = client.balance()
        with pytest.raises(CaptchaUnsolvable):
            client.solve_recaptcha_v2(SITEKEY, PAGE)
        assert client.balance() == pytest.approx(before)  # 2captcha does not charge these
        assert (client.stats.attempted, client.stats.solved, client.stats.failed) == (1, 0, 1)
        assert client.stats.cost == 0
    assert sandboxes["/2captcha-hard"].counters["unsolvable"] >= 1


def test_solve_timeout(server: str) -> None:
    with make_client(server, "/2captcha-slow", solve_timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(CaptchaTimeout):
            client.solve_recaptcha_v2(SITEKEY, PAGE)
        assert time.monotonic() - started < 2
        assert client.stats.failed == 1


def test_no_slot_available_is_retried_after_backoff(server: str, http: httpx.Client) -> None:
    # The busy sandbox holds one task per key in its queue; fill it, then solve.
    r = http.post(
        "/2captcha-busy/in.php",
        data={"key": KEY, "method": "userrecaptcha", "googlekey": SITEKEY, "pageurl": PAGE},
    )
    assert r.text.startswith("OK|")
    calls: list[float] = []
    with make_client(
        server, "/2captcha-busy", limiter=lambda: calls.append(time.monotonic())
    ) as client:
        solution = client.solve_recaptcha_v2(SITEKEY, PAGE)
    assert solution.token
    assert len(calls) >= 2  # refused at least once, and the limiter ran before each submit
    assert client.stats.attempted == 1 and client.stats.solved == 1


def test_stats_add_up_and_rejected_tokens_are_retried(
    server: str, sandboxes: dict[str, CaptchaSandbox]
) -> None:
    calls = 0

    def limiter() -> None:
        nonlocal calls
        calls += 1

    with make_client(server, limiter=limiter) as client:
        before = client.balance()
        seen: list[str] = []

        def second_token_passes(solution: Solution) -> bool:
            seen.append(solution.token)
            return len(seen) == 2

        solution = client.solve_and_submit(SITEKEY, PAGE, second_token_passes)
        assert solution.token == seen[1] and seen[0] != seen[1]
        assert client.stats.reported_bad == 1

        with pytest.raises(CaptchaRejected) as info:
            client.solve_and_submit(SITEKEY, PAGE, lambda s: False, max_attempts=2)
        assert "2 attempts" in str(info.value)

        stats = client.stats
        assert stats.attempted == 4 == calls  # one paid submit per token
        assert stats.solved + stats.failed == stats.attempted
        assert stats.reported_bad == 3
        assert stats.cost == pytest.approx(4 * COST)
        assert stats.solve_rate == 1.0
        assert client.balance() == pytest.approx(before - stats.cost)
        summary = stats.summary()
        assert "4/4 solved (100%)" in summary and "$0.01196" in summary
        assert client.log_stats() is stats


def test_unsolvable_attempts_are_bounded(server: str) -> None:
    with make_client(server, "/2captcha-hard", max_attempts=2) as client:
        with pytest.raises(CaptchaUnsolvable):
            client.solve_and_submit(SITEKEY, PAGE, lambda s: True)
        assert client.stats.attempted == 2 and client.stats.failed == 2
        assert client.stats.solve_rate == 0.0


def test_key_never_logged(server: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG), make_client(server) as client:
        client.solve_recaptcha_v2(SITEKEY, PAGE)
        client.ensure_balance(0.01)
        assert KEY not in repr(client)
    assert "res.php" in caplog.text  # httpx did log the requests...
    assert KEY not in caplog.text  # ...with the key masked


def test_from_settings() -> None:
    s = Settings(sandbox=True, sandbox_port=9911)
    assert s.captcha_base_url == "http://127.0.0.1:9911/2captcha"
    assert s.captcha_key is not None and s.captcha_key.get_secret_value() == SANDBOX_CAPTCHA_KEY
    prod = Settings(sandbox=False)
    assert prod.captcha_base_url == "https://2captcha.com" and prod.captcha_key is None
    with pytest.raises(CaptchaAuthError, match="LEADFLOW_CAPTCHA_API_KEY"):
        CaptchaClient.from_settings(prod)
    custom = Settings(
        sandbox=False,
        captcha_url="http://captcha.internal/",
        captcha_api_key="k" * 32,
        captcha_poll_interval=0.5,
        captcha_max_attempts=5,
    )
    with CaptchaClient.from_settings(custom) as client:
        assert client.base_url == "http://captcha.internal"
        assert client.poll_interval == 0.5 and client.max_attempts == 5
        assert "k" * 32 not in repr(client)


def test_find_recaptcha_sitekey() -> None:
    widget = '<form><div class="g-recaptcha" data-sitekey="6LeAbc_DEF-123"></div></form>'
    assert find_recaptcha_sitekey(widget) == "6LeAbc_DEF-123"
    script = '<script src="https://www.google.com/recaptcha/api.js?render=6LeRenderKey0000000000000"></script>'
    assert find_recaptcha_sitekey(script) == "6LeRenderKey0000000000000"
    assert find_recaptcha_sitekey("<html><body>No challenge</body></html>") is None


# --------------------------------------------------------------------------------------
# The sandbox API's documented shapes
# --------------------------------------------------------------------------------------


def test_legacy_text_responses(http: httpx.Client) -> None:
    base = "/2captcha-test"
    submit = http.post(
        f"{base}/in.php",
        data={"key": KEY, "method": "userrecaptcha", "googlekey": SITEKEY, "pageurl": PAGE},
    )
    assert submit.status_code == 200 and submit.text.startswith("OK|")
    task_id = submit.text[3:]
    get = {"key": KEY, "action": "get", "id": task_id}
    assert http.get(f"{base}/res.php", params=get).text == "CAPCHA_NOT_READY"
    time.sleep(0.1)
    answer = http.get(f"{base}/res.php", params=get).text
    assert answer.startswith("OK|03A")
    balance = http.get(f"{base}/res.php", params={"key": KEY, "action": "getbalance"}).text
    assert float(balance) > 0 and len(balance.split(".")[1]) == 5
    report = http.get(f"{base}/res.php", params={"key": KEY, "action": "reportbad", "id": task_id})
    assert report.text == "OK_REPORT_RECORDED"
    # Errors are the bare code, always with HTTP 200.
    cases = [
        ({"key": "nope", "action": "getbalance"}, "ERROR_WRONG_USER_KEY"),
        ({"key": KEY, "action": "get", "id": "1"}, "ERROR_WRONG_CAPTCHA_ID"),
        ({"key": KEY, "action": "get", "id": "abc"}, "ERROR_WRONG_ID_FORMAT"),
        ({"key": KEY}, "ERROR_EMPTY_ACTION"),
        ({"key": KEY, "action": "reportbad", "id": task_id}, "ERROR_DUPLICATE_REPORT"),
    ]
    for params, code in cases:
        r = http.get(f"{base}/res.php", params=params)
        assert (r.status_code, r.text) == (200, code), params
    for data, code in [
        ({"key": KEY, "method": "userrecaptcha", "pageurl": PAGE}, "ERROR_GOOGLEKEY"),
        ({"key": KEY, "method": "userrecaptcha", "googlekey": SITEKEY}, "ERROR_PAGEURL"),
        ({"key": KEY, "method": "base64", "body": "aGk="}, "ERROR_BAD_PARAMETERS"),
        (
            {"key": EMPTY_KEY, "method": "userrecaptcha", "googlekey": SITEKEY, "pageurl": PAGE},
            "ERROR_ZERO_BALANCE",
        ),
    ]:
        assert http.post(f"{base}/in.php", data=data).text == code


def test_legacy_json_responses(http: httpx.Client) -> None:
    base = "/2captcha-test"
    submit = http.post(
        f"{base}/in.php",
        data={
            "key": KEY,
            "method": "userrecaptcha",
            "googlekey": SITEKEY,
            "pageurl": PAGE,
            "json": 1,
        },
    ).json()
    assert submit["status"] == 1 and submit["request"].isdigit()
    get = {"key": KEY, "action": "get", "id": submit["request"], "json": 1}
    assert http.get(f"{base}/res.php", params=get).json() == {
        "status": 0,
        "request": "CAPCHA_NOT_READY",
    }
    time.sleep(0.1)
    ready = http.get(f"{base}/res.php", params=get).json()
    assert ready["status"] == 1 and ready["request"].startswith("03A")
    balance = http.get(
        f"{base}/res.php", params={"key": KEY, "action": "getbalance", "json": 1}
    ).json()
    assert balance["status"] == 1 and float(balance["request"]) > 0
    error = http.get(
        f"{base}/res.php", params={"key": "nope", "action": "getbalance", "json": 1}
    ).json()
    assert (
        error["status"] == 0 and error["request"] == "ERROR_WRONG_USER_KEY" and error["error_text"]
    )
    hard = http.post(
        "/2captcha-hard/in.php",
        data={
            "key": KEY,
            "method": "userrecaptcha",
            "googlekey": SITEKEY,
            "pageurl": PAGE,
            "json": 1,
        },
    ).json()
    time.sleep(0.1)
    failed = http.get(
        "/2captcha-hard/res.php",
        params={"key": KEY, "action": "get", "id": hard["request"], "json": 1},
    ).json()
    assert failed["status"] == 0 and failed["request"] == "ERROR_CAPTCHA_UNSOLVABLE"
    reported = http.get(
        f"{base}/res.php",
        params={"key": KEY, "action": "reportbad", "id": submit["request"], "json": 1},
    ).json()
    assert reported == {"status": 1, "request": "OK_REPORT_RECORDED"}


def test_v2_json_api(http: httpx.Client) -> None:
    base = "/2captcha-test"
    task = {"type": "RecaptchaV2TaskProxyless", "websiteURL": PAGE, "websiteKey": SITEKEY}
    balance = http.post(f"{base}/getBalance", json={"clientKey": KEY}).json()
    assert balance["errorId"] == 0 and isinstance(balance["balance"], float)
    created = http.post(f"{base}/createTask", json={"clientKey": KEY, "task": task}).json()
    assert created["errorId"] == 0 and isinstance(created["taskId"], int)
    poll = {"clientKey": KEY, "taskId": created["taskId"]}
    assert http.post(f"{base}/getTaskResult", json=poll).json() == {
        "errorId": 0,
        "status": "processing",
    }
    time.sleep(0.1)
    ready = http.post(f"{base}/getTaskResult", json=poll).json()
    assert ready["errorId"] == 0 and ready["status"] == "ready"
    token = ready["solution"]["gRecaptchaResponse"]
    assert token.startswith("03A") and ready["cost"] == "0.00299"
    assert ready["endTime"] >= ready["createTime"] and ready["solveCount"] == 1
    after = http.post(f"{base}/getBalance", json={"clientKey": KEY}).json()["balance"]
    assert after == pytest.approx(balance["balance"] - COST)
    # The token is one the site accepts, exactly as one from the legacy API.
    assert verify(http, token)["success"] is True
    assert http.post(f"{base}/reportIncorrect", json=poll).json() == {
        "errorId": 0,
        "status": "success",
    }

    def error(path: str, body: dict[str, Any], prefix: str = base) -> tuple[int, str]:
        answer = http.post(f"{prefix}/{path}", json=body)
        assert answer.status_code == 200
        data = answer.json()
        assert data["errorDescription"]
        return data["errorId"], data["errorCode"]

    assert error("getBalance", {"clientKey": "nope"}) == (1, "ERROR_KEY_DOES_NOT_EXIST")
    assert error("createTask", {"clientKey": KEY}) == (22, "ERROR_TASK_ABSENT")
    assert error("createTask", {"clientKey": KEY, "task": {**task, "type": "ImageToTextTask"}}) == (
        23,
        "ERROR_TASK_NOT_SUPPORTED",
    )
    assert error("createTask", {"clientKey": KEY, "task": {**task, "websiteURL": ""}}) == (
        5,
        "ERROR_PAGEURL",
    )
    assert error("createTask", {"clientKey": EMPTY_KEY, "task": task}) == (10, "ERROR_ZERO_BALANCE")
    assert error("getTaskResult", {"clientKey": KEY, "taskId": 1}) == (
        16,
        "ERROR_NO_SUCH_CAPCHA_ID",
    )
    hard = http.post("/2captcha-hard/createTask", json={"clientKey": KEY, "task": task}).json()
    time.sleep(0.1)
    assert error(
        "getTaskResult", {"clientKey": KEY, "taskId": hard["taskId"]}, "/2captcha-hard"
    ) == (
        12,
        "ERROR_CAPTCHA_UNSOLVABLE",
    )


def test_v2_no_slot(http: httpx.Client) -> None:
    task = {"type": "RecaptchaV2TaskProxyless", "websiteURL": PAGE, "websiteKey": SITEKEY}
    answers = [
        http.post("/2captcha-busy/createTask", json={"clientKey": KEY, "task": task}).json()
        for _ in range(2)
    ]
    assert answers[0]["errorId"] == 0
    assert (answers[1]["errorId"], answers[1]["errorCode"]) == (2, "ERROR_NO_SLOT_AVAILABLE")
    time.sleep(0.45)  # the first task's solve delay frees the slot


# --------------------------------------------------------------------------------------
# In-process checks (for a site in the same process), with a controlled clock
# --------------------------------------------------------------------------------------


def test_verify_token_in_process_with_clock() -> None:
    clock = FakeClock()
    config = CaptchaSandboxConfig(accounts={KEY: 1.0}, solve_seconds=5.0, token_ttl=120.0)
    s = CaptchaSandbox(config, clock=clock)
    task = s.submit(KEY, SITEKEY, "HTTP://Maps.test:80/place?id=1#top")
    assert task.token is not None
    with pytest.raises(NotReady):
        s.result(KEY, task.task_id)
    # Before the solve finishes the token does not exist yet (and this does not burn it).
    assert s.check_token(task.token, SITEKEY, "http://maps.test/place?id=1").error_codes == (
        "invalid-input-response",
    )
    clock.now += 5.0
    assert s.result(KEY, task.task_id).token == task.token
    # The page URL is compared in one spelling.
    assert normalise_url("HTTP://Maps.test:80/place?id=1#top") == "http://maps.test/place?id=1"
    assert s.verify_token(task.token, SITEKEY, "http://maps.test/place?id=1") is True
    assert s.verify_token(task.token, SITEKEY, "http://maps.test/place?id=1") is False

    second = s.submit(KEY, SITEKEY, "http://maps.test/place?id=2")
    clock.now += 5.0 + 120.0 + 0.1  # past the TTL
    assert second.token is not None
    assert s.check_token(second.token, SITEKEY, "http://maps.test/place?id=2").error_codes == (
        "timeout-or-duplicate",
    )
    third = s.submit(KEY, SITEKEY, "http://maps.test/place?id=3")
    clock.now += 5.0 + 119.0  # inside the TTL
    assert third.token is not None
    assert s.verify_token(third.token, SITEKEY, "http://maps.test:80/place?id=3") is True
    assert s.verify_token(third.token, SITEKEY, "http://maps.test/place?id=3") is False
    stats = s.stats()
    assert stats["verified"] == 2 and stats["solved"] == 3 and stats["refused"] == 4


def test_unsolvable_share_is_seeded() -> None:
    def outcomes(seed: int) -> list[bool]:
        config = CaptchaSandboxConfig(
            accounts={KEY: 10.0}, unsolvable_share=0.3, seed=seed, max_pending=1000
        )
        s = CaptchaSandbox(config)
        return [s.submit(KEY, SITEKEY, PAGE).unsolvable for _ in range(200)]

    first = outcomes(3)
    assert first == outcomes(3)
    assert 30 < sum(first) < 90


def test_asgi_app_exposes_its_sandbox() -> None:
    s = sandbox()
    app = captcha_app(s)
    assert app.state.captcha is s

    async def go() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as c:
            return (await c.get("/__sandbox/state")).json()

    state = asyncio.run(go())
    assert state["submitted"] == 0 and KEY not in str(state)
