"""The sandbox Google Maps site (maps.test): payloads the parser reads back, the search API
(viewport, category, 20 per page, 120 cap), place pages, the CAPTCHA gate and latency.

HTTP tests go through a real uvicorn server, addressed as a proxy like the crawlers do.
"""

# ruff: noqa: RUF001  (en dashes and narrow no-break spaces are what Google shows)

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import phonenumbers
import pytest

from leadflow.settings import SANDBOX_CAPTCHA_KEY, Settings
from models.taxonomy import category_slug
from sandbox.captcha import CaptchaSandbox, CaptchaSandboxConfig, captcha_app
from sandbox.directory.generate import Directory, generate
from sandbox.maps.payload import (
    CITY_VIEWPORTS,
    Place,
    Viewport,
    place_page_payload,
    places_of,
    reviews_per_rating,
    search_payload,
    status_line,
    wrap_json,
)
from sandbox.maps.site import RESULT_CAP, parse_query
from sandbox.server import SandboxConfig, build_app, parse_args
from spiders.google_maps.parse import parse_payload, parse_place_page, parse_search_results
from tests.clock import FakeClock
from tests.servers import free_port, serve_in_thread

SEED = 42
MAPS = "http://maps.test"
SITEKEY = Settings().sandbox_captcha_sitekey


@pytest.fixture(scope="module")
def world() -> Directory:
    return generate(seed=SEED, n_businesses=300)


@pytest.fixture(scope="module")
def places(world: Directory) -> list[Place]:
    return places_of(world.businesses, SEED)


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def solver(clock: FakeClock) -> CaptchaSandbox:
    # Solves instantly; the clock only moves when a test moves it.
    return CaptchaSandbox(CaptchaSandboxConfig(solve_seconds=0.0, seed=SEED), clock=clock)


@pytest.fixture(scope="module")
def base_url(world: Directory, solver: CaptchaSandbox) -> Iterator[str]:
    port = free_port()
    config = SandboxConfig(port=port, seed=SEED, businesses=300, maps_latency_ms=0)
    app = build_app(config, world, mounts={"/2captcha": captcha_app(solver)})
    with serve_in_thread(app, port) as url:
        yield url


@pytest.fixture(scope="module")
def control(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=5) as c:
        yield c


@pytest.fixture
def maps(base_url: str) -> Iterator[httpx.Client]:
    """A fresh client (no cookies) that reaches maps.test through the sandbox proxy."""
    with httpx.Client(proxy=base_url, timeout=5) as c:
        yield c


@pytest.fixture
def gate(control: httpx.Client) -> Iterator[httpx.Client]:
    """Every maps request challenged for the test; back to none afterwards."""
    assert control.post("/__sandbox/maps/config", json={"captcha_share": 1.0}).is_success
    yield control
    control.post("/__sandbox/maps/config", json={"captcha_share": 0.0})


def e164(phone: str | None, country: str) -> str | None:
    if phone is None:
        return None
    number = phonenumbers.parse(phone, country)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def search(client: httpx.Client, q: str, **params: Any) -> httpx.Response:
    response = client.get(f"{MAPS}/search", params={"tbm": "map", "q": q, **params})
    assert response.status_code == 200, response.text[:300]
    return response


# --- payloads: every place reads back through the parser ------------------------------------


def assert_same_place(record: dict[str, Any], place: Place) -> None:
    b = place.business
    assert record["name"] == b.name
    assert e164(record["phone"], b.country) == e164(b.phone, b.country)
    assert record["website"] == b.website
    assert record["address"] == b.address
    assert (record["street"], record["city"], record["postal_code"]) == (
        b.street,
        b.city,
        b.postal_code,
    )
    assert (record["state"], record["country"]) == (b.state, b.country)
    assert record["rating"] == b.rating
    assert record["review_count"] == b.review_count
    assert (record["latitude"], record["longitude"]) == (b.latitude, b.longitude)
    assert record["place_id"] == place.place_id
    assert record["cid"] == str(place.cid)
    assert record["data_id"] == place.data_id
    assert record["categories"] == b.categories
    assert record["open_hours"] == b.open_hours
    assert record["business_status"] == b.business_status
    assert record["timezone"] == place.timezone
    if b.review_count:
        assert sum(record["reviews_per_rating"].values()) == b.review_count
    assert record["plus_code_global"] and record["thumbnail"].startswith("http://maps.test/p/")
    assert record["owner"]["id"] == place.owner_id


def test_every_place_round_trips_through_the_parser(places: list[Place]) -> None:
    now = datetime(2025, 3, 5, 15, 30, tzinfo=UTC)
    assert len(places) == 300  # one per business: no non-lead rows, no duplicate listings
    records = parse_search_results(search_payload("q", places, now=now))
    assert len(records) == len(places)
    for record, place in zip(records, places, strict=True):
        assert_same_place(record, place)
        assert_same_place(parse_place_page(place_page_payload(place, now)), place)
    # The extras exist where they should: order links for restaurants, cards for some.
    by_slug = {p.place_id: p.slug for p in places}
    assert all(
        (r["order_online"] is not None) == (by_slug[r["place_id"]] == "restaurant") for r in records
    )
    assert 0 < sum(r["credit_cards"] is not None for r in records) < len(records)
    assert {r["price_range"] for r in records} > {None}


def test_wrapped_payload_parses_as_served(places: list[Place]) -> None:
    # What /search and /maps/preview/place send: Google's {"c":0,"d":")]}'\n..."} envelope.
    body = json.loads(json.dumps(wrap_json(search_payload("q", places[:3]))))
    assert body["d"].startswith(")]}'\n")
    assert [r["data_id"] for r in parse_payload(body)] == [p.data_id for p in places[:3]]
    page = json.loads(json.dumps(wrap_json(place_page_payload(places[0]))))
    assert parse_payload(page)[0]["place_id"] == places[0].place_id


def test_ids_have_googles_structure_and_are_deterministic(world: Directory) -> None:
    a, b = places_of(world.businesses, SEED), places_of(generate(SEED, 300).businesses, SEED)
    assert [p.place_id for p in a] == [p.place_id for p in b]
    assert len({p.place_id for p in a}) == len({p.cid for p in a}) == len(a)
    for place in a[:20]:
        assert re.fullmatch(r"ChIJ[A-Za-z0-9_-]{23}", place.place_id)
        # The place id is the protobuf {1: {1: feature, 2: cid}}, as Google's are.
        raw = base64.urlsafe_b64decode(place.place_id + "=")
        assert int.from_bytes(raw[12:20], "little") == place.cid
        assert place.data_id == f"0x{place.feature:x}:0x{place.cid:x}"


def test_hours_status_and_review_histogram() -> None:
    assert reviews_per_rating(4.3, 57) is not None and sum(reviews_per_rating(4.3, 57) or []) == 57
    assert reviews_per_rating(None, None) is None
    biz = generate(SEED, 30).businesses
    bar = next(b for b in biz if b.open_hours and b.business_status == "OPERATIONAL")
    bar.open_hours = {d: ["4 PM–2 AM"] for d in bar.open_hours}
    bar.city_key = "austin"
    local = datetime(2025, 3, 5, 1, 0)  # Wednesday 1 AM: Tuesday's night is still open
    assert status_line(bar, local) == "Open ⋅ Closes 2\u202fAM"
    assert status_line(bar, local.replace(hour=10)) == "Closed ⋅ Opens 4\u202fPM"
    bar.business_status = "CLOSED_PERMANENTLY"
    assert status_line(bar, local) == "Permanently closed"


def test_query_parsing() -> None:
    q = parse_query("dentist in Austin, TX")
    assert (q.what, q.where, q.city and q.city.key) == ("dentist", "Austin, TX", "austin")
    assert parse_query("Αθήνα").city is not None and parse_query("Αθήνα").what == ""
    assert parse_query("plumbers near seattle").city.key == "seattle"  # type: ignore[union-attr]
    assert parse_query("dentist") == parse_query("dentist")
    assert parse_query("dentist").city is None and parse_query("dentist").what == "dentist"


# --- the search API -------------------------------------------------------------------------


def test_search_city_and_category(maps: httpx.Client, places: list[Place]) -> None:
    response = search(maps, "dentist in Austin, TX")
    austin = CITY_VIEWPORTS["austin"]
    expected = [
        p
        for p in places
        if p.business.city_key == "austin" and category_slug(p.business.categories) == "dentist"
    ]
    assert expected, "the seed has dentists in Austin"
    got = parse_payload(response.json())
    assert int(response.headers["X-Total-In-Viewport"]) == len(expected)
    assert response.headers["X-Has-More"] == ("1" if len(expected) > 20 else "0")
    best_first = sorted(expected, key=lambda p: (-p.prominence, p.cid))
    assert [r["data_id"] for r in got] == [p.data_id for p in best_first[:20]]
    for record in got:
        assert austin.contains(record["latitude"], record["longitude"])
        assert category_slug(record["categories"]) == "dentist"
    # Same query, same order.
    again = parse_payload(search(maps, "dentist in Austin, TX").json())
    assert [r["place_id"] for r in again] == [r["place_id"] for r in got]
    # An unknown town has nothing; "dentists" means dentist too.
    assert parse_payload(search(maps, "dentist in Springfield").json()) == []
    assert len(parse_payload(search(maps, "dentists in austin").json())) == len(got)


def test_only_places_inside_the_viewport(maps: httpx.Client, places: list[Place]) -> None:
    center = next(p for p in places if p.business.city_key == "berlin").business
    vp = Viewport(
        center.latitude - 0.04,
        center.longitude - 0.05,
        center.latitude + 0.04,
        center.longitude + 0.05,
    )
    inside = {p.data_id for p in places if vp.contains(p.business.latitude, p.business.longitude)}
    found: set[str] = set()
    offset = 0
    while True:
        response = search(maps, "", vp=vp.param(), offset=offset)
        records = parse_payload(response.json())
        found |= {r["data_id"] for r in records}
        offset += len(records)
        if response.headers["X-Has-More"] == "0":
            break
    assert found == inside and center.entity_id
    assert int(response.headers["X-Total-In-Viewport"]) == len(inside)


def test_twenty_per_page_and_at_most_120(maps: httpx.Client, places: list[Place]) -> None:
    seen: list[str] = []
    for offset in range(0, RESULT_CAP, 20):
        response = search(maps, "", offset=offset, num=20)
        records = parse_payload(response.json())
        assert len(records) == 20
        assert response.headers["X-Total-In-Viewport"] == str(len(places))  # the true count
        assert response.headers["X-Total-Results"] == "120"
        assert response.headers["X-Has-More"] == ("0" if offset == 100 else "1")
        assert response.json()["leadflow"]["capped"] is True
        seen += [r["data_id"] for r in records]
    assert len(set(seen)) == RESULT_CAP
    best = sorted(places, key=lambda p: (-p.prominence, p.cid))[:RESULT_CAP]
    assert seen == [p.data_id for p in best]
    beyond = search(maps, "", offset=120)
    assert parse_payload(beyond.json()) == [] and beyond.headers["X-Has-More"] == "0"
    # A page is never more than 20, whatever is asked for.
    assert len(parse_payload(search(maps, "", num=50).json())) == 20


def test_search_page_is_the_result_list_spa(maps: httpx.Client) -> None:
    response = maps.get(f"{MAPS}/maps/search/dentist+in+Austin,+TX")
    assert response.status_code == 200
    page = response.text
    assert '<div role="feed" aria-label="Results for dentist in Austin, TX"' in page
    assert "window.__LEADFLOW_PAYLOADS" in page and "/search?" in page
    assert "IntersectionObserver" in page and "end-of-list" in page
    camera = maps.get(f"{MAPS}/maps/search/cafe/@52.52,13.405,13z").text
    assert '"vp":"52.' in camera


# --- place pages ------------------------------------------------------------------------------


def test_place_page_embeds_the_place_payload(maps: httpx.Client, places: list[Place]) -> None:
    place = places[7]
    page = maps.get(MAPS + place.url_path)
    assert page.status_code == 200
    match = re.search(r"window\.APP_INITIALIZATION_STATE=(.*?);\n", page.text)
    assert match, "no APP_INITIALIZATION_STATE"
    state = json.loads(match.group(1).replace("<\\/", "</"))
    embedded = state[3][6]
    assert embedded.startswith(")]}'\n") and state[3][9][6] == embedded
    assert_same_place(parse_place_page(json.loads(embedded[5:])), place)
    by_ftid = maps.get(f"{MAPS}/maps/place/", params={"ftid": place.data_id})
    assert by_ftid.status_code == 200 and place.business.name in by_ftid.text
    preview = maps.get(f"{MAPS}/maps/preview/place", params={"ftid": place.data_id})
    assert_same_place(parse_payload(preview.json())[0], place)
    assert maps.get(f"{MAPS}/maps", params={"cid": str(place.cid)}).status_code == 200
    assert maps.get(f"{MAPS}/maps/place/x/data=!4m2!3m1!1s0x1:0x2").status_code == 404


# --- the CAPTCHA gate ---------------------------------------------------------------------------


def solve(control: httpx.Client, page_url: str) -> str:
    """A token from the 2captcha sandbox, the way the crawler gets one (in.php, res.php)."""
    submitted = control.post(
        "/2captcha/in.php",
        data={"key": SANDBOX_CAPTCHA_KEY, "method": "userrecaptcha", "googlekey": SITEKEY,
              "pageurl": page_url, "json": "1"},
    ).json()  # fmt: skip
    assert submitted["status"] == 1, submitted
    result = control.get(
        "/2captcha/res.php",
        params={"key": SANDBOX_CAPTCHA_KEY, "action": "get", "id": submitted["request"], "json": 1},
    ).json()
    assert result["status"] == 1, result
    return str(result["request"])


def test_captcha_challenge_and_solve(
    gate: httpx.Client, maps: httpx.Client, clock: FakeClock
) -> None:
    control = gate
    before = control.get("/__sandbox/maps/stats").json()
    target = f"{MAPS}/maps/search/dentist+in+Austin,+TX"
    challenged = maps.get(target)
    assert challenged.status_code == 302
    sorry = challenged.headers["location"]
    assert sorry == f"{MAPS}/sorry/index?continue={quote(target, safe='')}"
    # The JSON API is challenged the same way.
    api = maps.get(f"{MAPS}/search", params={"tbm": "map", "q": "dentist"})
    assert api.status_code == 302 and "/sorry/index?continue=" in api.headers["location"]

    page = maps.get(sorry)
    assert page.status_code == 200
    assert f'class="g-recaptcha" id="recaptcha" data-sitekey="{SITEKEY}"' in page.text
    assert 'name="g-recaptcha-response"' in page.text and 'name="continue"' in page.text
    # Another spelling of the same challenge URL is sent to the canonical one first.
    loose = maps.get(f"{MAPS}/sorry/index?continue={target.replace('+', '%2B')}")
    assert loose.status_code == 302 and loose.headers["location"] == sorry

    forged = maps.post(
        f"{MAPS}/sorry/index", data={"g-recaptcha-response": "03Aforged", "continue": target}
    )
    assert forged.status_code == 403 and "rejected" in forged.text

    token = solve(control, sorry)
    passed = maps.post(
        f"{MAPS}/sorry/index", data={"g-recaptcha-response": token, "continue": target}
    )
    assert passed.status_code == 302 and passed.headers["location"] == target
    exemption = passed.cookies.get("GOOGLE_ABUSE_EXEMPTION")
    assert exemption
    with httpx.Client(proxy=str(control.base_url), timeout=5) as fresh:
        cookies = {"GOOGLE_ABUSE_EXEMPTION": exemption}
        assert fresh.get(target, cookies=cookies).status_code == 200
        ok = fresh.get(f"{MAPS}/search", params={"q": "dentist"}, cookies=cookies)
        assert ok.status_code == 200 and parse_payload(ok.json())
        assert fresh.get(target, cookies={"GOOGLE_ABUSE_EXEMPTION": "made-up"}).status_code == 302

    reused = maps.post(
        f"{MAPS}/sorry/index", data={"g-recaptcha-response": token, "continue": target}
    )
    assert reused.status_code == 403
    # A token for another page does not pass this one.
    other = solve(control, f"{MAPS}/sorry/index?continue={quote(MAPS + '/maps', safe='')}")
    wrong_page = maps.post(
        f"{MAPS}/sorry/index", data={"g-recaptcha-response": other, "continue": target}
    )
    assert wrong_page.status_code == 403
    # Older than 120 s: refused.
    late = solve(control, sorry)
    clock.now += 121
    expired = maps.post(
        f"{MAPS}/sorry/index", data={"g-recaptcha-response": late, "continue": target}
    )
    assert expired.status_code == 403

    after = control.get("/__sandbox/maps/stats").json()
    assert after["challenged"] - before["challenged"] == 3  # page, API, made-up cookie
    assert after["challenges_shown"] - before["challenges_shown"] == 1
    assert after["challenges_passed"] - before["challenges_passed"] == 1
    assert after["challenges_rejected"] - before["challenges_rejected"] == 4
    assert after["exempted"] - before["exempted"] == 2


def test_captcha_share_is_a_share(control: httpx.Client, maps: httpx.Client) -> None:
    control.post("/__sandbox/maps/config", json={"captcha_share": 0.5})
    try:
        codes = [maps.get(f"{MAPS}/maps/preview/place?cid=1").status_code for _ in range(40)]
    finally:
        control.post("/__sandbox/maps/config", json={"captcha_share": 0.0})
    challenged = codes.count(302)
    assert 8 <= challenged <= 32 and codes.count(404) == 40 - challenged
    # Off again: nothing is challenged; continue cannot leave maps.test.
    assert maps.get(f"{MAPS}/maps/preview/place?cid=1").status_code == 404
    odd = maps.get(f"{MAPS}/sorry/index", params={"continue": "http://evil.test/"})
    assert "continue=http%3A%2F%2Fmaps.test%2Fmaps" in odd.headers["location"]


# --- latency, settings, CLI -------------------------------------------------------------------


def test_latency_is_applied(control: httpx.Client, maps: httpx.Client) -> None:
    started = time.perf_counter()
    maps.get(f"{MAPS}/robots.txt")
    fast = time.perf_counter() - started
    control.post("/__sandbox/maps/config", json={"latency_ms": 300})
    try:
        started = time.perf_counter()
        assert maps.get(f"{MAPS}/robots.txt").status_code == 200
        slow = time.perf_counter() - started
    finally:
        control.post("/__sandbox/maps/config", json={"latency_ms": 0})
    assert slow >= 0.3 > fast
    # Other hosts and the control address are not slowed down.
    started = time.perf_counter()
    control.get("/__sandbox/maps/stats")
    assert time.perf_counter() - started < 0.3


def test_settings_and_cli_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    # The documented defaults, whatever the test session's environment overrides.
    monkeypatch.delenv("LEADFLOW_SANDBOX_MAPS_LATENCY_MS", raising=False)
    monkeypatch.delenv("LEADFLOW_SANDBOX_CAPTCHA_SHARE", raising=False)
    settings = Settings()
    assert settings.sandbox_maps_latency_ms == 300
    assert settings.sandbox_captcha_share == 0.0
    assert settings.sandbox_captcha_sitekey.startswith("6L") and len(SITEKEY) == 40
    assert SandboxConfig().maps_latency_ms == 300
    config, _ = parse_args(["--maps-latency-ms", "50", "--captcha-share", "0.25"])
    assert (config.maps_latency_ms, config.captcha_share) == (50, 0.25)


def test_stats_on_the_servers_own_address(control: httpx.Client) -> None:
    stats = control.get("/__sandbox/maps/stats").json()
    assert stats["places"] == 300 and stats["sitekey"] == SITEKEY
    for key in ("challenged", "challenges_shown", "challenges_passed", "challenges_rejected"):
        assert isinstance(stats[key], int)
