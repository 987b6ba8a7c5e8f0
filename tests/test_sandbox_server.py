"""The sandbox server: host dispatch, the directory site, websites, and proxy-style requests."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from leadflow.settings import get_settings
from sandbox.directory.generate import Directory, generate
from sandbox.server import SandboxConfig, build_app, parse_args
from tests.servers import free_port, serve_in_thread


@pytest.fixture(scope="module")
def world() -> Directory:
    return generate(seed=42, n_businesses=300)


@pytest.fixture(scope="module")
def base_url(world: Directory) -> Iterator[str]:
    port = free_port()
    config = SandboxConfig(port=port, seed=42, businesses=300)
    with serve_in_thread(build_app(config, world), port) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=5) as c:
        yield c


@pytest.fixture(scope="module")
def proxied(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(proxy=base_url, timeout=5) as c:
        yield c


def asgi_get(app: object, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """One request straight into the ASGI app (no server), as if sent to 127.0.0.1:8800."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8800") as c:
            return await c.get(path, headers=headers)

    return asyncio.run(go())


def raw_request(base_url: str, request: bytes) -> bytes:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_health_and_truth_on_own_address(client: httpx.Client, world: Directory) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["businesses"] == 300 and health["listings"] == len(world.listings)
    assert client.get("/__sandbox/truth").json() == world.truth
    emails = client.get("/__sandbox/emails").json()
    assert set(emails) == set(world.websites)


def test_directory_by_host_header(client: httpx.Client, world: Directory) -> None:
    h = {"Host": "directory.test"}
    home = client.get("/", headers=h)
    assert home.status_code == 200 and "Find local businesses" in home.text
    listing = next(x for x in world.listings if x.name and not x.malformed)
    page = client.get(f"/biz/{listing.listing_id}", headers=h)
    assert page.status_code == 200
    assert 'itemtype="https://schema.org/LocalBusiness"' in page.text
    assert f'data-listing-id="{listing.listing_id}"' in page.text
    assert client.get("/biz/999999", headers=h).status_code == 404
    assert client.get("/admin", headers=h).status_code == 403


def test_search_filters_and_pagination(client: httpx.Client, world: Directory) -> None:
    h = {"Host": "directory.test"}
    expected = [x.listing_id for x in world.listings if x.city_key == "austin"]
    assert len(expected) > 20

    def ids(params: dict[str, str]) -> tuple[list[str], str | None]:
        text = client.get("/search", params=params, headers=h).text
        nxt = re.search(r'<a rel="next" href="([^"]+)"', text)
        return re.findall(r'<li class="result" data-listing-id="(\d+)"', text), (
            nxt.group(1).replace("&amp;", "&") if nxt else None
        )

    seen: list[str] = []
    params = {"location": "Austin, TX"}
    first, nxt = ids(params)
    assert len(first) == 20 and nxt is not None and "page=2" in nxt
    seen += first
    page = 2
    while nxt:
        batch, nxt = ids({**params, "page": str(page)})
        assert len(batch) <= 20
        seen += batch
        page += 1
    assert seen == expected
    for spelling in ("austin", "AUSTIN, tx", "Austin, US", "Austin,TX", "Austin, Texas"):
        assert ids({"location": spelling})[0] == first, spelling
    assert ids({"location": "Springfield"})[0] == []

    dentists = [x.listing_id for x in world.listings if x.category_slug == "dentist"]
    by_slug: list[str] = []
    page, nxt = 1, "start"
    while nxt:
        batch, nxt = ids({"category": "dentist", "page": str(page)})
        by_slug += batch
        page += 1
    assert by_slug == dentists  # the slug also finds "Zahnarzt" and "Οδοντίατρος"
    greek = [x.listing_id for x in world.listings if x.city_key == "athens"
             and x.category and "Ταβέρνα" in " ".join(x.categories)]  # fmt: skip
    assert ids({"category": "ταβέρνα", "location": "Athens, Greece"})[0] == greek[:20]


def test_proxy_style_requests_with_httpx(proxied: httpx.Client, world: Directory) -> None:
    listing = next(x for x in world.listings if x.name and not x.malformed)
    page = proxied.get(f"http://directory.test/biz/{listing.listing_id}")
    assert page.status_code == 200
    assert f'data-listing-id="{listing.listing_id}"' in page.text
    robots = proxied.get("http://directory.test/robots.txt")
    assert robots.text == "User-agent: *\nDisallow: /admin\n"
    search = proxied.get("http://directory.test/search", params={"category": "hotel"})
    assert "results" in search.text and search.status_code == 200


def test_absolute_form_target_wins_over_host_header(base_url: str) -> None:
    reply = raw_request(
        base_url,
        b"GET http://directory.test/robots.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 200")
    assert b"Disallow: /admin" in reply


def test_business_websites(client: httpx.Client, proxied: httpx.Client, world: Directory) -> None:
    site = next(s for s in world.websites.values() if s.emails and s.email_styles[0] == "mailto")
    home = proxied.get(f"http://{site.domain}/")
    assert home.status_code == 200 and site.name.replace("&", "&amp;").replace("'", "&#x27;") in (
        home.text
    )
    contact = proxied.get(f"http://www.{site.domain}/contact")
    assert contact.status_code == 200
    assert site.emails[0] in home.text + contact.text
    robots = client.get("/robots.txt", headers={"Host": site.domain})
    assert robots.status_code == 200 and "Allow: /" in robots.text
    assert proxied.get(f"http://{site.domain}/nope").status_code == 404
    unknown = proxied.get("http://no-such-business.test/")
    assert unknown.status_code == 404 and "unknown host" in unknown.text


def test_latency_is_added(world: Directory) -> None:
    app = build_app(SandboxConfig(latency_ms=150), world)
    start = time.perf_counter()
    assert asgi_get(app, "/health").status_code == 200
    assert time.perf_counter() - start >= 0.15


def test_mounts_are_served_on_own_address(world: Directory) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hunter here")

    api = Starlette(routes=[Route("/account", hello)])
    app = build_app(SandboxConfig(), world, mounts={"/hunter/v2": api})
    assert asgi_get(app, "/hunter/v2/account").text == "hunter here"
    # Mounts live on the server's own address, not on the directory's host.
    assert asgi_get(app, "/hunter/v2/account", {"Host": "directory.test"}).status_code == 404


def test_cli_flags_override_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    config, level = parse_args(
        [
            "--port",
            "9911",
            "--seed",
            "7",
            "--businesses",
            "20",
            "--latency-ms",
            "5",
            "--data-dir",
            "/tmp/x",
        ]
    )
    assert (config.port, config.seed, config.businesses, config.latency_ms) == (9911, 7, 20, 5)
    assert str(config.data_dir) == "/tmp/x" and level == "warning"
    monkeypatch.setenv("LEADFLOW_SANDBOX_PORT", "9123")
    monkeypatch.setenv("LEADFLOW_SANDBOX_SEED", "9")
    monkeypatch.setenv("LEADFLOW_HOME", "/tmp/leadflow-home")
    get_settings.cache_clear()
    try:
        defaults, _ = parse_args([])
    finally:
        get_settings.cache_clear()
    assert (defaults.port, defaults.seed) == (9123, 9)
    assert str(defaults.data_dir) == "/tmp/leadflow-home/sandbox"
