"""The company-data sandbox (Clearbit Company API shape) over real HTTP with httpx, the way a
Clearbit-style provider client calls it: Basic auth with the key as user name.

One uvicorn server runs the whole sandbox app with a `CompanySandbox` on a fake clock mounted at
`/company`, so queued lookups and the rate window move only when a test says so. Each test
starts from reset counters and a generous rate; which domain to ask (known, unknown, queued)
comes from the sandbox's truth route, never hard-coded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from leadflow.settings import SANDBOX_COMPANY_KEY
from sandbox.company import CompanySandbox, CompanySandboxConfig, company_app
from sandbox.directory.generate import Directory, generate
from sandbox.server import SandboxConfig, build_app
from tests.clock import FakeClock
from tests.servers import free_port, serve_in_thread

SEED = 11
BUSINESSES = 150
KEY = SANDBOX_COMPANY_KEY
OTHER_KEY = "second-company-key"
QUEUE_SECONDS = 10.0
BASELINE = {
    "requests_per_minute": 100_000,
    "not_ready_share": 0.3,
    "not_ready_seconds": QUEUE_SECONDS,
    "fault_share": 0.0,
    "down": False,
}
# Clearbit's documented buckets.
REVENUE_RANGES = {
    "$0-$1M", "$1M-$10M", "$10M-$50M", "$50M-$100M", "$100M-$250M", "$250M-$500M",
    "$500M-$1B", "$1B-$10B", "$10B+",
}  # fmt: skip


class Api:
    """The company mount of a running sandbox: lookups and the control route."""

    def __init__(self, base: str, http: httpx.Client) -> None:
        self.base = base
        self.http = http

    def find(self, domain: str | None, key: str | None = KEY, **kwargs: Any) -> httpx.Response:
        params = {} if domain is None else {"domain": domain}
        auth = (key, "") if key is not None else None
        return self.http.get(f"{self.base}/v2/companies/find", params=params, auth=auth, **kwargs)

    def control(self, **changes: Any) -> dict[str, Any]:
        response = self.http.post(f"{self.base}/__sandbox/state", json=changes)
        assert response.status_code == 200, response.text
        return response.json()

    def state(self) -> dict[str, Any]:
        return self.http.get(f"{self.base}/__sandbox/state").json()

    def truth(self, domain: str) -> dict[str, Any]:
        return self.http.get(f"{self.base}/__sandbox/truth", params={"domain": domain}).json()


@pytest.fixture(scope="module")
def directory() -> Directory:
    return generate(SEED, BUSINESSES)


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def api(directory: Directory, clock: FakeClock) -> Iterator[Api]:
    config = CompanySandboxConfig(api_keys=(KEY, OTHER_KEY), seed=SEED, **BASELINE)
    sandbox = CompanySandbox(config, directory, clock=clock)
    port = free_port()
    app = build_app(
        SandboxConfig(port=port, seed=SEED, businesses=BUSINESSES),
        directory,
        mounts={"/company": company_app(sandbox)},
    )
    with serve_in_thread(app, port) as url, httpx.Client(timeout=10) as http:
        yield Api(f"{url}/company", http)


@pytest.fixture(autouse=True)
def fresh_state(api: Api) -> None:
    api.control(reset=True, **BASELINE)


@pytest.fixture(scope="module")
def truth(api: Api, directory: Directory) -> list[dict[str, Any]]:
    return [api.truth(domain) for domain in directory.websites]


def pick(truth: list[dict[str, Any]], **wanted: Any) -> dict[str, Any]:
    found = next((t for t in truth if all(t[k] == v for k, v in wanted.items())), None)
    assert found is not None, f"the seeded directory has no domain with {wanted}"
    return found


def range_bounds(label: str) -> tuple[int, float]:
    """'51-250' -> (51, 250); '1K-5K' -> (1000, 5000); '100K+' -> (100000, inf)."""

    def number(text: str) -> int:
        return int(text.removesuffix("K")) * (1000 if text.endswith("K") else 1)

    if label.endswith("+"):
        return number(label[:-1]), float("inf")
    low, high = label.split("-")
    return number(low), number(high)


# --- lookups -------------------------------------------------------------------------------------


def test_a_known_domain_answers_clearbits_company_shape(
    api: Api, truth: list[dict[str, Any]], directory: Directory
) -> None:
    record = pick(truth, known=True, queued_first=False)
    response = api.find(record["domain"])
    assert response.status_code == 200
    company = response.json()
    site = directory.websites[record["domain"]]
    business = directory.business(site.entity_ids[0])
    assert business is not None
    assert (company["name"], company["domain"]) == (site.name, site.domain)
    assert company["phone"] == business.phone
    assert company["geo"]["city"] == business.city
    metrics = company["metrics"]
    low, high = range_bounds(metrics["employeesRange"])
    assert low <= metrics["employees"] <= high
    assert metrics["estimatedAnnualRevenue"] in REVENUE_RANGES
    category = company["category"]
    assert category["sector"] and category["industry"]
    assert re.fullmatch(r"\d{2}", category["naicsCode"])
    assert category["naics6Codes"][0].startswith(category["naicsCode"])
    assert 1900 < company["foundedYear"] <= 2024
    for network in ("linkedin", "twitter", "facebook"):
        assert set(company[network]) == {"handle"}
    assert response.headers["X-RateLimit-Limit"] == str(BASELINE["requests_per_minute"])


def test_spellings_and_aliases_find_the_same_company(api: Api, truth: list[dict[str, Any]]) -> None:
    record = next(t for t in truth if t["known"] and not t["queued_first"] and t["aliases"])
    company = api.find(record["domain"]).json()
    assert company["domainAliases"] == record["aliases"]
    for spelling in (
        f"www.{record['domain']}",
        record["domain"].upper(),
        f"https://{record['domain']}/about",
        record["aliases"][0],
    ):
        answer = api.find(spelling)
        assert answer.status_code == 200, spelling
        assert answer.json() == company


def test_unknown_domains_answer_404(api: Api, truth: list[dict[str, Any]]) -> None:
    unknown = pick(truth, known=False)
    for domain in (unknown["domain"], "no-such-business.example"):
        response = api.find(domain)
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "unknown_record"


def test_a_queued_lookup_answers_202_until_its_delay_has_passed(
    api: Api, truth: list[dict[str, Any]], clock: FakeClock
) -> None:
    first, second = [t for t in truth if t["known"] and t["queued_first"]][:2]
    assert [api.find(first["domain"]).status_code for _ in range(2)] == [202, 202]
    assert api.find(first["domain"]).json() == {}
    clock.advance(QUEUE_SECONDS / 2)
    assert api.find(second["domain"]).status_code == 202  # its own queue starts now
    assert api.find(first["domain"]).status_code == 202
    clock.advance(QUEUE_SECONDS / 2)
    assert api.find(first["domain"]).status_code == 200
    assert api.find(second["domain"]).status_code == 202
    clock.advance(QUEUE_SECONDS / 2)
    assert api.find(second["domain"]).status_code == 200
    assert api.state()["answers"] == {"200": 2, "202": 6}
    assert api.state()["paid_calls"] == 2  # only matched lookups count

    api.control(reset=True, not_ready_seconds=0)
    assert api.find(first["domain"]).status_code == 200


@pytest.mark.parametrize("domain", [None, "", "not a domain", "localhost"])
def test_a_missing_or_invalid_domain_answers_422(api: Api, domain: str | None) -> None:
    response = api.find(domain)
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_domain"


# --- auth, limits, faults --------------------------------------------------------------------


def test_the_key_is_the_basic_auth_user_or_a_bearer_token(
    api: Api, truth: list[dict[str, Any]]
) -> None:
    domain = pick(truth, known=True, queued_first=False)["domain"]
    missing = api.find(domain, key=None)
    assert (missing.status_code, missing.json()["error"]["type"]) == (401, "auth_required")
    wrong = api.find(domain, key="wrong-key")
    assert (wrong.status_code, wrong.json()["error"]["type"]) == (401, "invalid_api_key")
    assert api.find(domain, key=OTHER_KEY).status_code == 200
    bearer = api.http.get(
        f"{api.base}/v2/companies/find",
        params={"domain": domain},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert bearer.status_code == 200


def test_too_many_lookups_answer_429_with_retry_after(
    api: Api, truth: list[dict[str, Any]], clock: FakeClock
) -> None:
    domain = pick(truth, known=True, queued_first=False)["domain"]
    api.control(requests_per_minute=3)
    assert [api.find(domain).status_code for _ in range(3)] == [200, 200, 200]
    clock.advance(20)
    limited = api.find(domain)
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limit"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    retry_after = int(limited.headers["Retry-After"])
    assert retry_after == 40  # the first lookup leaves the one-minute window then
    assert api.find(domain, key=OTHER_KEY).status_code == 200  # each key has its own budget
    clock.advance(retry_after - 1)
    assert api.find(domain).status_code == 429
    clock.advance(1)
    assert api.find(domain).status_code == 200


def test_faults_and_outages_answer_503(api: Api, truth: list[dict[str, Any]]) -> None:
    domain = pick(truth, known=True, queued_first=False)["domain"]
    api.control(fault_share=0.5)
    assert {api.find(domain).status_code for _ in range(40)} == {200, 503}
    api.control(fault_share=0.0, down=True)
    down = api.find(domain)
    assert (down.status_code, down.json()["error"]["type"]) == (503, "service_unavailable")
    assert api.find(domain, key=None).status_code == 503
    api.control(down=False)
    assert api.find(domain).status_code == 200


def test_control_route_refuses_unknown_or_bad_knobs(api: Api) -> None:
    for changes in ({"bogus": 1}, {"not_ready_share": 1.5}, {"requests_per_minute": 0}):
        assert api.http.post(f"{api.base}/__sandbox/state", json=changes).status_code == 400
    assert api.state()["config"] == BASELINE | {"seed": SEED}


# --- determinism and concurrency ---------------------------------------------------------------


def test_the_same_seed_gives_the_same_companies_whatever_the_order(directory: Directory) -> None:
    def lookups(seed: int, domains: list[str]) -> dict[str, Any]:
        sandbox = CompanySandbox(CompanySandboxConfig(seed=seed, not_ready_share=0), directory)
        return {d: sandbox.call(KEY, {"domain": d})[:2] for d in domains}

    domains = list(directory.websites)
    assert lookups(SEED, domains) == lookups(SEED, domains[::-1])
    assert lookups(SEED, domains) != lookups(SEED + 1, domains)


def test_concurrent_lookups_are_all_counted(api: Api, directory: Directory) -> None:
    api.control(not_ready_share=0)
    domains = list(directory.websites)
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda d: api.find(d).status_code, domains))
    state = api.state()
    assert state["paid_calls"] == statuses.count(200) > 0
    assert sum(state["answers"].values()) == len(domains)


def test_the_default_mount_uses_the_sandbox_key(directory: Directory) -> None:
    port = free_port()
    app = build_app(SandboxConfig(port=port, seed=SEED, businesses=BUSINESSES), directory)
    with serve_in_thread(app, port) as url, httpx.Client(timeout=10) as http:
        api = Api(f"{url}/company", http)
        domain = next(
            t["domain"]
            for t in map(api.truth, directory.websites)
            if t["known"] and not t["queued_first"]
        )
        assert api.find(domain, key=None).status_code == 401
        assert api.find(domain).json()["domain"] == domain
