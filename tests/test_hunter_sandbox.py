"""The Hunter sandbox over real HTTP, driven by the real pyhunter client (and httpx where a
test needs the raw status or headers).

One uvicorn server runs the whole sandbox app with a `HunterSandbox` on a fake clock mounted at
`/hunter/v2`, so rate windows and slow verifications move only when a test says so. Before
each test the control route starts a fresh month with generous rate limits; tests that are
about limits or faults lower them. What to ask about (a removed person, an accept-all domain,
...) is chosen through the sandbox's own truth route, never hard-coded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from pyhunter import PyHunter
from pyhunter.exceptions import HunterApiError

from leadflow.settings import SANDBOX_HUNTER_KEY, Settings
from sandbox.directory.generate import Directory, generate
from sandbox.hunter import DEPARTMENTS, SENIORITIES, HunterSandbox, HunterSandboxConfig, hunter_app
from sandbox.server import SandboxConfig, build_app
from tests.clock import FakeClock
from tests.servers import free_port, serve_in_thread

SEED = 11
BUSINESSES = 150
KEY = SANDBOX_HUNTER_KEY
OTHER_KEY = "second-hunter-key"
PENDING_SECONDS = 5.0
# Knobs every test starts from: limits high enough that only the limit tests meet them.
BASELINE = {
    "searches_available": 5000,
    "verifications_available": 10000,
    "requests_per_second": 10_000,
    "requests_per_minute": 100_000,
    "verifier_requests_per_second": 10_000,
    "verifier_requests_per_minute": 100_000,
    "verifier_pending_seconds": PENDING_SECONDS,
    "free_repeats": False,
    "fault_share": 0.0,
    "down": False,
}


@pytest.fixture(scope="module")
def directory() -> Directory:
    return generate(SEED, BUSINESSES)


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


class Api:
    """The Hunter mount of a running sandbox: raw requests, the control route, pyhunter."""

    def __init__(self, base: str, http: httpx.Client) -> None:
        self.base = base
        self.http = http

    def get(self, endpoint: str, key: str | None = KEY, **params: Any) -> httpx.Response:
        if key is not None:
            params["api_key"] = key
        return self.http.get(f"{self.base}/{endpoint}", params=params)

    def control(self, **changes: Any) -> dict[str, Any]:
        response = self.http.post(f"{self.base}/__sandbox/state", json=changes)
        assert response.status_code == 200, response.text
        return response.json()

    def state(self) -> dict[str, Any]:
        return self.http.get(f"{self.base}/__sandbox/state").json()

    def client(self, key: str = KEY) -> PyHunter:
        """The real pyhunter client, pointed at the sandbox."""
        hunter = PyHunter(key, max_retries=0, timeout=5)
        hunter.base_endpoint = self.base + "/{}"
        return hunter


@pytest.fixture(scope="module")
def api(directory: Directory, clock: FakeClock) -> Iterator[Api]:
    config = HunterSandboxConfig(api_keys=(KEY, OTHER_KEY), seed=SEED, **BASELINE)
    sandbox = HunterSandbox(config, directory, clock=clock)
    port = free_port()
    app = build_app(
        SandboxConfig(port=port, seed=SEED, businesses=BUSINESSES),
        directory,
        mounts={"/hunter/v2": hunter_app(sandbox)},
    )
    with serve_in_thread(app, port) as url, httpx.Client(timeout=10) as http:
        yield Api(f"{url}/hunter/v2", http)


@pytest.fixture(autouse=True)
def fresh_month(api: Api) -> None:
    api.control(reset=True, **BASELINE)


@pytest.fixture(scope="module")
def truth(api: Api) -> dict[str, dict[str, Any]]:
    return api.http.get(f"{api.base}/__sandbox/truth").json()


def error_of(exc: pytest.ExceptionInfo[HunterApiError]) -> dict[str, Any]:
    """Hunter's error entry; pyhunter 2.1 loses the status code of 4xx/5xx answers."""
    return exc.value.payload["errors"][0]


def pick(
    truth: dict[str, dict[str, Any]], test: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    found = next((record for record in truth.values() if test(record)), None)
    assert found is not None, "the seeded directory has no domain of this kind"
    return found


def listable(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in record["contacts"] if not c["removed"]]


# --- domain search ---------------------------------------------------------------------------


def test_domain_search_lists_what_hunter_knows_but_never_removed_people(
    api: Api, truth: dict[str, dict[str, Any]], directory: Directory
) -> None:
    record = pick(truth, lambda r: r["indexed"] and any(c["removed"] for c in r["contacts"]))
    data = api.client().domain_search(record["domain"], limit=100)

    values = [e["value"] for e in data["emails"]]
    assert values == [c["email"] for c in listable(record)]
    assert not {c["email"] for c in record["contacts"] if c["removed"]} & set(values)
    site = directory.websites[record["domain"]]
    assert data["organization"] == site.name
    assert data["pattern"] == record["pattern"]
    on_site = [e for e in data["emails"] if e["value"] in site.emails]
    assert on_site and all(s["domain"] == site.domain for e in on_site for s in e["sources"])
    for email in data["emails"]:
        assert 0 <= email["confidence"] <= 100
        assert email["sources"]
        if email["type"] == "personal":
            assert email["first_name"] and email["last_name"]
            assert email["seniority"] in SENIORITIES
            assert email["department"] in DEPARTMENTS
        else:
            assert email["first_name"] is None


def test_domain_search_paginates_and_filters(api: Api, truth: dict[str, dict[str, Any]]) -> None:
    record = pick(
        truth,
        lambda r: (
            r["indexed"]
            and len(listable(r)) >= 4
            and {c["type"] for c in listable(r)} == {"personal", "generic"}
        ),
    )
    hunter = api.client()
    expected = [c["email"] for c in listable(record)]

    seen: list[str] = []
    for offset in range(0, len(expected) + 2, 2):
        page = hunter.domain_search(record["domain"], limit=2, offset=offset, raw=True).json()
        assert page["meta"]["results"] == len(expected)
        assert (page["meta"]["limit"], page["meta"]["offset"]) == (2, offset)
        seen += [e["value"] for e in page["data"]["emails"]]
    assert seen == expected

    generic = hunter.domain_search(record["domain"], emails_type="generic", raw=True).json()
    assert {e["type"] for e in generic["data"]["emails"]} == {"generic"}
    assert generic["meta"]["results"] == sum(c["type"] == "generic" for c in listable(record))

    everyone = hunter.domain_search(record["domain"], limit=100)["emails"]
    level = next(e["seniority"] for e in everyone if e["seniority"])
    senior = hunter.domain_search(record["domain"], seniority=level)["emails"]
    assert senior and all(e["seniority"] == level for e in senior)
    assert len(senior) == sum(e["seniority"] == level for e in everyone)


def test_company_name_finds_the_domain(api: Api, truth: dict[str, dict[str, Any]]) -> None:
    record = pick(truth, lambda r: r["indexed"] and listable(r))
    hunter = api.client()
    by_company = hunter.domain_search(company=record["organization"])
    assert by_company["domain"] == record["domain"]
    assert by_company["emails"] == hunter.domain_search(record["domain"])["emails"]


def test_unknown_domains_return_no_emails_and_cost_nothing(
    api: Api, truth: dict[str, dict[str, Any]]
) -> None:
    record = pick(truth, lambda r: not r["indexed"] and r["contacts"])
    hunter = api.client()
    assert hunter.domain_search(record["domain"])["emails"] == []
    assert hunter.domain_search("nobody-here.example")["emails"] == []
    assert hunter.email_finder("nobody-here.example", first_name="Ann", last_name="Lee") == (
        None,
        None,
    )
    assert hunter.account_information()["requests"]["searches"]["used"] == 0


# --- credits -------------------------------------------------------------------------------------


def test_paid_answers_are_billed_as_hunter_documents(
    api: Api, truth: dict[str, dict[str, Any]]
) -> None:
    record = pick(
        truth,
        lambda r: (
            r["indexed"]
            and r["smtp_answers"]
            and not r["accept_all"]
            and any(c["type"] == "personal" and c["deliverable"] for c in listable(r))
        ),
    )
    person = next(c for c in listable(record) if c["type"] == "personal" and c["deliverable"])
    hunter = api.client()
    api.control(verifier_pending_seconds=0)

    def used() -> tuple[int, int]:
        requests = hunter.account_information()["requests"]
        return requests["searches"]["used"], requests["verifications"]["used"]

    hunter.domain_search(record["domain"])
    assert used() == (1, 0)  # 1-10 emails: one search
    hunter.domain_search(record["domain"])
    assert used() == (2, 0)  # repeats are billed unless free_repeats is on
    assert hunter.email_finder(record["domain"], first_name="Nobody", last_name="Atall") == (
        None,
        None,
    )
    assert used() == (2, 0)  # nothing found, nothing billed
    email, _ = hunter.email_finder(
        record["domain"], first_name=person["first_name"], last_name=person["last_name"]
    )
    assert email == person["email"]
    assert used() == (3, 0)
    assert hunter.email_verifier(person["email"])["status"] == "valid"
    assert used() == (3, 1)

    silent = pick(truth, lambda r: not r["smtp_answers"] and listable(r))
    assert hunter.email_verifier(listable(silent)[0]["email"])["status"] == "unknown"
    assert used() == (3, 1)  # Hunter could not verify: not billed

    account = hunter.account_information()
    assert account["calls"]["used"] == 4
    assert account["calls"]["left"] == 5000 + 10000 - 4
    assert api.state()["paid_calls"] == {"domain-search": 2, "email-finder": 1, "email-verifier": 1}


def test_free_repeats_bill_an_identical_request_once(
    api: Api, truth: dict[str, dict[str, Any]]
) -> None:
    first, second = [r for r in truth.values() if r["indexed"] and listable(r)][:2]
    api.control(free_repeats=True)
    hunter = api.client()
    for _ in range(3):
        hunter.domain_search(first["domain"])
    hunter.domain_search(second["domain"])
    assert hunter.account_information()["requests"]["searches"]["used"] == 2


def test_spent_quotas_answer_429_each_on_its_own(
    api: Api, truth: dict[str, dict[str, Any]]
) -> None:
    record = pick(
        truth,
        lambda r: r["indexed"] and r["smtp_answers"] and not r["accept_all"] and listable(r),
    )
    address = listable(record)[0]["email"]
    api.control(searches_available=1, verifier_pending_seconds=0)
    hunter = api.client()
    hunter.domain_search(record["domain"])
    with pytest.raises(HunterApiError) as exc:
        hunter.domain_search(record["domain"], offset=1)
    assert error_of(exc)["code"] == 429
    with pytest.raises(HunterApiError) as exc:  # would cost nothing, but the quota is spent
        hunter.email_finder(record["domain"], full_name="Xavier Stranger")
    assert error_of(exc)["code"] == 429
    assert hunter.email_verifier(address)["status"] == "valid"  # a separate quota

    api.control(verifications_available=1, verifier_pending_seconds=PENDING_SECONDS)
    for email in (address, *(c["email"] for c in listable(record)[1:])):
        assert api.get("email-verifier", email=email).status_code == 429  # not even a 202
    requests = hunter.account_information()["requests"]  # the account stays readable
    assert requests["searches"] == {"used": 1, "available": 1}
    assert requests["verifications"] == {"used": 1, "available": 1}


# --- email finder and removed people ---------------------------------------------------------


def test_email_finder_finds_people_by_name_full_name_or_company(
    api: Api, truth: dict[str, dict[str, Any]]
) -> None:
    record = pick(
        truth,
        lambda r: (
            r["indexed"]
            and not r["accept_all"]
            and any(c["type"] == "personal" for c in listable(r))
        ),
    )
    person = next(c for c in listable(record) if c["type"] == "personal")
    hunter = api.client()
    email, score = hunter.email_finder(
        record["domain"], first_name=person["first_name"], last_name=person["last_name"]
    )
    assert email == person["email"]
    assert 0 < score <= 100
    full_name = f"{person['first_name'].upper()} {person['last_name'].lower()}"
    assert hunter.email_finder(record["domain"], full_name=full_name)[0] == person["email"]
    assert (
        hunter.email_finder(company=record["organization"], full_name=full_name)[0]
        == person["email"]
    )
    # A stranger at a server that rejects unknown mailboxes is not found.
    assert hunter.email_finder(record["domain"], full_name="Xavier Stranger") == (None, None)


def test_accept_all_domains_get_a_low_scored_guess_from_the_pattern(
    api: Api, truth: dict[str, dict[str, Any]]
) -> None:
    record = pick(
        truth, lambda r: r["indexed"] and r["accept_all"] and r["pattern"] == "{first}.{last}"
    )
    hunter = api.client()
    data = hunter.email_finder(
        record["domain"], first_name="Xavier", last_name="Stranger", raw=True
    ).json()["data"]
    assert data["email"] == f"xavier.stranger@{record['domain']}"
    assert data["score"] < 60
    assert data["verification"]["status"] == "accept_all"


def test_removed_people_answer_451_and_are_never_listed(
    api: Api, truth: dict[str, dict[str, Any]]
) -> None:
    record = pick(truth, lambda r: r["indexed"] and any(c["removed"] for c in r["contacts"]))
    removed = next(c for c in record["contacts"] if c["removed"])
    hunter = api.client()
    with pytest.raises(HunterApiError) as exc:
        hunter.email_finder(
            record["domain"], first_name=removed["first_name"], last_name=removed["last_name"]
        )
    assert error_of(exc)["code"] == 451
    assert error_of(exc)["id"] == "claimed_email"
    with pytest.raises(HunterApiError) as exc:
        hunter.email_verifier(removed["email"])
    assert error_of(exc)["code"] == 451
    assert removed["email"] not in {
        e["value"] for e in hunter.domain_search(record["domain"])["emails"]
    }
    assert api.state()["paid_calls"]["email-finder"] == 0


# --- email verifier ----------------------------------------------------------------------------


def test_slow_checks_answer_202_until_done_and_are_billed_once(
    api: Api, truth: dict[str, dict[str, Any]], clock: FakeClock
) -> None:
    addresses = [
        c["email"]
        for r in truth.values()
        if r["smtp_answers"] and not r["accept_all"]
        for c in listable(r)
        if c["deliverable"]
    ]
    answers = {email: api.get("email-verifier", email=email) for email in addresses[:20]}
    slow = [email for email, response in answers.items() if response.status_code == 202]
    assert slow and len(slow) < len(answers)  # some checks are slow, not all
    assert all(answers[e].json()["data"]["status"] == "valid" for e in answers if e not in slow)
    billed = api.state()["usage"]["verifications"]["used"]
    assert billed == len(answers) - len(slow)  # a 202 costs nothing

    hunter = api.client()
    clock.advance(PENDING_SECONDS / 2)
    with pytest.raises(HunterApiError) as exc:  # no `data` in a 202: pyhunter says so
        hunter.email_verifier(slow[0])
    assert exc.value.status_code == 202
    clock.advance(PENDING_SECONDS / 2)
    assert hunter.email_verifier(slow[0])["status"] == "valid"
    assert api.state()["usage"]["verifications"]["used"] == billed + 1


def test_verifier_statuses(api: Api, truth: dict[str, dict[str, Any]]) -> None:
    api.control(verifier_pending_seconds=0)
    hunter = api.client()
    plain = pick(truth, lambda r: r["smtp_answers"] and not r["accept_all"] and listable(r))
    departed = pick(
        truth,
        lambda r: (
            r["smtp_answers"]
            and not r["accept_all"]
            and any(not c["deliverable"] for c in listable(r))
        ),
    )
    accept_all = pick(truth, lambda r: r["accept_all"] and r["smtp_answers"] and listable(r))

    assert hunter.email_verifier("someone@gmail.com")["status"] == "webmail"
    assert hunter.email_verifier("throwaway@mailinator.com")["disposable"] is True
    assert hunter.email_verifier(f"nobody.here@{plain['domain']}")["status"] == "invalid"
    gone = next(c for c in listable(departed) if not c["deliverable"])
    assert hunter.email_verifier(gone["email"])["status"] == "invalid"
    assert hunter.email_verifier(f"nobody.here@{accept_all['domain']}")["status"] == "accept_all"
    outside = hunter.email_verifier("info@not-a-directory-business.example")
    assert (outside["status"], outside["mx_records"]) == ("invalid", False)


# --- auth, limits, faults, bad requests -----------------------------------------------------------


def test_keys_are_checked_and_accepted_three_ways(api: Api) -> None:
    missing = api.get("account", key=None)
    assert missing.status_code == 401
    assert missing.json()["errors"][0]["id"] == "authentication_failed"
    with pytest.raises(HunterApiError) as exc:
        api.client("wrong-key").account_information()
    assert error_of(exc)["code"] == 401
    assert api.http.get(f"{api.base}/account", headers={"X-API-KEY": KEY}).status_code == 200
    assert (
        api.http.get(f"{api.base}/account", headers={"Authorization": f"Bearer {KEY}"}).status_code
        == 200
    )
    assert api.client(OTHER_KEY).account_information()["plan_name"]


def test_requests_per_second_are_limited_per_key_and_the_verifier_has_its_own_limit(
    api: Api, clock: FakeClock
) -> None:
    api.control(requests_per_second=3, verifier_requests_per_second=1, verifier_pending_seconds=0)
    statuses = [api.get("account").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 403]
    assert api.get("account").json()["errors"][0]["code"] == 403
    assert api.get("account", key=OTHER_KEY).status_code == 200  # another key, another budget

    verify = [
        api.get("email-verifier", key=OTHER_KEY, email="a@gmail.com").status_code for _ in range(2)
    ]
    assert verify == [200, 403]
    assert api.get("account", key=OTHER_KEY).status_code == 200  # the general budget is apart

    clock.advance(1.0)
    assert api.get("account").status_code == 200
    assert api.get("email-verifier", key=OTHER_KEY, email="a@gmail.com").status_code == 200


def test_requests_per_minute_are_limited_too(api: Api, clock: FakeClock) -> None:
    api.control(requests_per_minute=5)
    statuses = []
    for _ in range(6):
        statuses.append(api.get("account").status_code)
        clock.advance(0.5)
    assert statuses == [200] * 5 + [403]
    clock.advance(60)
    assert api.get("account").status_code == 200


def test_faults_and_outages_answer_503_with_hunter_errors(api: Api) -> None:
    api.control(fault_share=0.5)
    statuses = [api.get("account").status_code for _ in range(40)]
    assert set(statuses) == {200, 503}

    api.control(fault_share=0.0, down=True)
    down = api.get("domain-search", domain="anything.test")
    assert down.status_code == 503
    assert down.json()["errors"][0] == {
        "id": "service_unavailable",
        "code": 503,
        "details": down.json()["errors"][0]["details"],
    }
    assert api.get("account").status_code == 503
    api.control(down=False)
    assert api.get("account").status_code == 200


@pytest.mark.parametrize(
    ("endpoint", "params"),
    [
        ("domain-search", {}),
        ("domain-search", {"domain": "not a domain"}),
        ("domain-search", {"domain": "example.test", "limit": "0"}),
        ("domain-search", {"domain": "example.test", "limit": "101"}),
        ("domain-search", {"domain": "example.test", "offset": "x"}),
        ("domain-search", {"domain": "example.test", "type": "work"}),
        ("domain-search", {"domain": "example.test", "department": "kitchen"}),
        ("email-finder", {"domain": "example.test", "first_name": "Ann"}),
        ("email-finder", {"domain": "example.test", "full_name": "Ann"}),
        ("email-verifier", {}),
        ("email-verifier", {"email": "not-an-email"}),
    ],
)
def test_wrong_parameters_answer_400(api: Api, endpoint: str, params: dict[str, str]) -> None:
    response = api.get(endpoint, **params)
    assert response.status_code == 400
    assert response.json()["errors"][0]["id"] == "wrong_params"


def test_control_route_refuses_unknown_or_bad_knobs(api: Api) -> None:
    for changes in ({"bogus": 1}, {"fault_share": 2}, {"searches_available": -1}, {"down": "yes"}):
        assert api.http.post(f"{api.base}/__sandbox/state", json=changes).status_code == 400
    assert api.state()["config"] == BASELINE | {"seed": SEED}


# --- determinism and concurrency -------------------------------------------------------------


def test_the_same_seed_gives_the_same_answers_whatever_the_order(directory: Directory) -> None:
    def answers(seed: int, domains: list[str]) -> dict[str, Any]:
        sandbox = HunterSandbox(
            HunterSandboxConfig(seed=seed, requests_per_second=10_000), directory
        )
        return {d: sandbox.call("domain-search", KEY, {"domain": d}) for d in domains}

    domains = list(directory.websites)
    assert answers(SEED, domains) == answers(SEED, domains[::-1])
    assert answers(SEED, domains) != answers(SEED + 1, domains)


def test_concurrent_requests_are_billed_exactly(api: Api, truth: dict[str, dict[str, Any]]) -> None:
    domains = list(truth)

    def search(domain: str) -> int:
        return len(api.get("domain-search", domain=domain).json()["data"]["emails"])

    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(search, domains))
    state = api.state()
    assert state["answers"]["domain-search"] == {"200": len(domains)}
    assert state["usage"]["searches"]["used"] == sum(1 for n in found if n) > 0


def test_the_default_mount_uses_the_settings(directory: Directory) -> None:
    settings = Settings()
    port = free_port()
    app = build_app(SandboxConfig(port=port, seed=SEED, businesses=BUSINESSES), directory)
    with serve_in_thread(app, port) as url:
        hunter = PyHunter(SANDBOX_HUNTER_KEY, max_retries=0, timeout=5)
        hunter.base_endpoint = f"{url}/hunter/v2/{{}}"
        requests = hunter.account_information()["requests"]
        assert requests["searches"]["available"] == settings.sandbox_hunter_search_credits
        assert (
            requests["verifications"]["available"] == settings.sandbox_hunter_verification_credits
        )
