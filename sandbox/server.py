"""The sandbox web server: the demo directory, the businesses' websites, and the crawlers' proxy.

One ASGI app answers for many hosts, chosen by the Host header:

- `directory.test`            the business directory (`sandbox.directory.site`);
- `maps.test`                 the Google Maps stand-in (`sandbox.maps.site`);
- any other `*.test` host     that business's own website (404 for unknown hosts);
- anything else (its own address, e.g. 127.0.0.1:8800): the control app with `/health`,
  `/__sandbox/truth`, `/__sandbox/config` (latency while running) and the sandbox APIs
  mounted under path prefixes (`service_mounts`).

Crawlers use this server as their HTTP proxy (`request.meta["proxy"] = "http://127.0.0.1:8800"`):
a proxy request carries an absolute-form target (`GET http://directory.test/biz/1 HTTP/1.1`),
which uvicorn's h11 protocol hands over as the path. `ProxyTargetMiddleware` turns it back into
host + path before dispatch, so no DNS entry for `.test` names is needed. No CONNECT/HTTPS.

Run: `python -m sandbox --host 127.0.0.1 --port 8800 --seed 42 --businesses 500
--latency-ms 0 --data-dir DIR` (defaults from `leadflow.settings`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from leadflow.settings import Settings, get_settings
from sandbox.directory.generate import DIRECTORY_HOST, Directory, generate, write_site_data
from sandbox.directory.site import (
    ROBOTS_DIRECTORY,
    ROBOTS_WEBSITE,
    SearchIndex,
    render_detail,
    render_home,
    render_not_found,
    render_search,
    render_website,
)


@dataclass(slots=True)
class SandboxConfig:
    host: str = "127.0.0.1"
    port: int = 8800
    seed: int = 42
    businesses: int = 500
    latency_ms: int = 0
    data_dir: Path | None = None  # where the site data is written; None = do not write
    maps_latency_ms: int = 300  # delay of every maps.test response
    captcha_share: float = 0.0  # share of maps.test requests sent to the CAPTCHA page

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> SandboxConfig:
        s = settings or get_settings()
        return cls(
            host=s.host,
            port=s.sandbox_port,
            seed=s.sandbox_seed,
            businesses=s.sandbox_businesses,
            latency_ms=s.sandbox_latency_ms,
            data_dir=s.home_dir / "sandbox",
            maps_latency_ms=s.sandbox_maps_latency_ms,
            captcha_share=s.sandbox_captcha_share,
        )


def request_host(scope: Scope) -> str:
    """The Host header without port, lower-case ('' when absent)."""
    for key, value in scope.get("headers", ()):
        if key == b"host":
            host = value.decode("latin-1").strip().lower()
            if host.startswith("["):  # IPv6 literal
                return host.split("]", 1)[0] + "]"
            return host.rsplit(":", 1)[0] if ":" in host else host
    return ""


# --------------------------------------------------------------------------------------
# Middleware
# --------------------------------------------------------------------------------------


class ProxyTargetMiddleware:
    """Rewrite absolute-form request targets (proxy requests) into Host header + path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw: bytes = scope.get("raw_path") or scope["path"].encode("latin-1")
            lowered = raw[:8].lower()
            if lowered.startswith((b"http://", b"https://")):
                scope = self._rewrite(scope, raw.decode("latin-1"))
        await self.app(scope, receive, send)

    @staticmethod
    def _rewrite(scope: Scope, target: str) -> Scope:
        parts = urlsplit(target)
        path = parts.path or "/"
        scope = dict(scope)
        scope["scheme"] = parts.scheme.lower()
        scope["path"] = unquote(path)
        scope["raw_path"] = path.encode("latin-1")
        if parts.query and not scope.get("query_string"):
            scope["query_string"] = parts.query.encode("latin-1")
        # The target's authority wins over any Host header, as RFC 9112 §3.2.2 says.
        headers = [(k, v) for k, v in scope.get("headers", ()) if k != b"host"]
        headers.append((b"host", parts.netloc.encode("latin-1")))
        scope["headers"] = headers
        return scope


class LatencyMiddleware:
    """Delay every HTTP response by `config.latency_ms` (changeable while the server runs, via
    `POST /__sandbox/config`), to exercise time-outs, throttling and long runs."""

    def __init__(self, app: ASGIApp, config: SandboxConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.config.latency_ms > 0 and scope["type"] == "http":
            await asyncio.sleep(self.config.latency_ms / 1000)
        await self.app(scope, receive, send)


class HostDispatch:
    """Route a request to an app by its Host header (see the module docstring)."""

    def __init__(self, control: ASGIApp, hosts: Mapping[str, ASGIApp], test_sites: ASGIApp) -> None:
        self.control = control
        self.hosts = dict(hosts)
        self.test_sites = test_sites

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.control(scope, receive, send)
            return
        host = request_host(scope)
        app = self.hosts.get(host) or self.hosts.get(host.removeprefix("www."))
        if app is None:
            app = self.test_sites if host.endswith(".test") else self.control
        await app(scope, receive, send)


# --------------------------------------------------------------------------------------
# The apps
# --------------------------------------------------------------------------------------


def directory_app(directory: Directory) -> Starlette:
    index = SearchIndex(directory)

    async def home(request: Request) -> Response:
        return HTMLResponse(render_home(directory))

    async def search(request: Request) -> Response:
        q = request.query_params
        try:
            page = int(q.get("page") or 1)
        except ValueError:
            page = 1
        category, location = q.get("category") or None, q.get("location") or None
        results = index.search(category, location)
        return HTMLResponse(render_search(results, category, location, page))

    async def detail(request: Request) -> Response:
        listing = directory.listing(request.path_params["listing_id"])
        if listing is None:
            return HTMLResponse(render_not_found("No such listing."), status_code=404)
        return HTMLResponse(render_detail(listing))

    async def robots(request: Request) -> Response:
        return PlainTextResponse(ROBOTS_DIRECTORY)

    async def admin(request: Request) -> Response:
        return HTMLResponse(render_not_found("Forbidden."), status_code=403)

    return Starlette(
        routes=[
            Route("/", home),
            Route("/search", search),
            Route("/biz/{listing_id}", detail),
            Route("/robots.txt", robots),
            Route("/admin", admin),
            Route("/admin/{rest:path}", admin),
        ]
    )


def websites_app(directory: Directory) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        host = request_host(scope)
        site = directory.website(host)
        path = scope["path"]
        response: Response
        if site is None:
            response = PlainTextResponse(f"unknown host: {host}", status_code=404)
        elif path == "/robots.txt":
            response = PlainTextResponse(ROBOTS_WEBSITE)
        elif (html := render_website(directory, site, path)) is not None:
            response = HTMLResponse(html)
        else:
            response = HTMLResponse("<h1>Not found</h1>", status_code=404)
        await response(scope, receive, send)

    return app


MountFactory = Callable[[SandboxConfig, Directory], Mapping[str, ASGIApp]]


def service_mounts(config: SandboxConfig, directory: Directory) -> dict[str, ASGIApp]:
    """The sandbox APIs on the server's own address: path prefix -> ASGI app.

    This is the place to add the stand-ins for the CRMs and Slack (e.g. `"/hubspot":
    hubspot_app(...)`), so a client's base URL becomes `http://127.0.0.1:<port>/hubspot`.

    - `/2captcha`: the 2captcha API (`sandbox.captcha`); knobs from `LEADFLOW_SANDBOX_CAPTCHA_*`.
      Its `CaptchaSandbox` is `mounts["/2captcha"].state.captcha`, whose `verify_token` a site
      in this process can use (or `POST /2captcha/__verify` over HTTP).
    - `/hunter/v2`: the Hunter.io API v2 (`sandbox.hunter`), base URL
      `http://127.0.0.1:<port>/hunter/v2`; knobs from `LEADFLOW_SANDBOX_HUNTER_*`, state at
      `mounts["/hunter/v2"].state.hunter` and `/hunter/v2/__sandbox/state`.
    - `/company`: the Clearbit-shaped Company API (`sandbox.company`),
      `GET /company/v2/companies/find?domain=`; knobs from `LEADFLOW_SANDBOX_COMPANY_*`, state
      at `mounts["/company"].state.company` and `/company/__sandbox/state`.

    - `/slack`: Slack incoming webhooks (`sandbox.slack`), messages at `/slack/__sandbox/messages`.
    - `/salesforce`, `/hubspot`, `/pipedrive`: the CRMs (`sandbox.salesforce`, `sandbox.hubspot`,
      `sandbox.pipedrive`, faults from `sandbox.crm_faults`); knobs from
      `LEADFLOW_SANDBOX_CRM_*`, state at `mounts[prefix].state.<crm>` and
      `<prefix>/__sandbox/state`, records at `<prefix>/__sandbox/truth`.

    Hunter and company data are drawn from `directory` and `config.seed`.
    """
    from sandbox.captcha import CaptchaSandbox, captcha_app
    from sandbox.company import CompanySandbox, company_app
    from sandbox.hubspot import HubSpotSandbox, hubspot_app
    from sandbox.hunter import HunterSandbox, hunter_app
    from sandbox.pipedrive import PipedriveSandbox, pipedrive_app
    from sandbox.salesforce import SalesforceSandbox, salesforce_app
    from sandbox.slack import slack_app

    settings = get_settings()
    mounts: dict[str, ASGIApp] = {}
    mounts["/2captcha"] = captcha_app(CaptchaSandbox.from_settings(settings, config.seed))
    mounts["/hunter/v2"] = hunter_app(HunterSandbox.from_settings(settings, directory, config.seed))
    mounts["/company"] = company_app(CompanySandbox.from_settings(settings, directory, config.seed))
    mounts["/slack"] = slack_app()
    mounts["/salesforce"] = salesforce_app(SalesforceSandbox.from_settings(settings, config.seed))
    mounts["/hubspot"] = hubspot_app(HubSpotSandbox.from_settings(settings, config.seed))
    mounts["/pipedrive"] = pipedrive_app(PipedriveSandbox.from_settings(settings, config.seed))
    return mounts


def control_app(
    config: SandboxConfig, directory: Directory, mounts: Mapping[str, ASGIApp]
) -> Starlette:
    truth_body: bytes | None = None

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "seed": directory.seed,
                "businesses": len(directory.businesses),
                "listings": len(directory.listings),
                "websites": len(directory.websites),
            }
        )

    async def truth(request: Request) -> Response:
        nonlocal truth_body
        if truth_body is None:  # serialised once: 100k entries are not free
            truth_body = json.dumps(directory.truth).encode()
        return Response(truth_body, media_type="application/json")

    async def emails(request: Request) -> Response:
        return JSONResponse({d: s.emails for d, s in directory.websites.items()})

    async def settings(request: Request) -> Response:
        if request.method == "POST":
            try:
                data = json.loads(await request.body() or b"{}")
                if "latency_ms" in data:
                    config.latency_ms = max(0, int(data["latency_ms"]))
            except (ValueError, TypeError, AttributeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"latency_ms": config.latency_ms})

    routes: list[BaseRoute] = [
        Route("/health", health),
        Route("/__sandbox/truth", truth),
        Route("/__sandbox/emails", emails),
        Route("/__sandbox/config", settings, methods=["GET", "POST"]),
    ]
    routes += [Mount(prefix, app=app) for prefix, app in mounts.items()]
    return Starlette(routes=routes)


def build_app(
    config: SandboxConfig,
    directory: Directory | None = None,
    *,
    mounts: Mapping[str, ASGIApp] | None = None,
    hosts: Mapping[str, ASGIApp] | None = None,
) -> ASGIApp:
    """The whole sandbox as one ASGI app.

    `mounts` adds apps under path prefixes on the server's own address (on top of
    `service_mounts`); `hosts` adds virtual hosts reachable through the proxy.
    """
    if directory is None:
        directory = generate(config.seed, config.businesses)
    all_mounts = {**service_mounts(config, directory), **(mounts or {})}
    from sandbox.maps.site import MAPS_HOST, maps_site_for

    # The maps site checks CAPTCHA tokens with the 2captcha sandbox mounted above.
    maps = maps_site_for(
        directory,
        all_mounts,
        seed=config.seed,
        latency_ms=config.maps_latency_ms,
        captcha_share=config.captcha_share,
        sitekey=get_settings().sandbox_captcha_sitekey,
    )
    all_mounts.setdefault("/__sandbox/maps", maps.control_app())
    all_hosts: dict[str, ASGIApp] = {
        DIRECTORY_HOST: directory_app(directory),
        MAPS_HOST: maps.app,
        **(hosts or {}),
    }
    app: ASGIApp = HostDispatch(
        control=control_app(config, directory, all_mounts),
        hosts=all_hosts,
        test_sites=websites_app(directory),
    )
    app = LatencyMiddleware(app, config)
    return ProxyTargetMiddleware(app)


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> tuple[SandboxConfig, str]:
    """The server's config from the command line (defaults from Leadflow settings), log level."""
    defaults = SandboxConfig.from_settings()
    p = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="Sandbox web server: demo directory, business websites, crawl proxy.",
    )
    p.add_argument("--host", default=defaults.host)
    p.add_argument("--port", type=int, default=defaults.port)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--businesses", type=int, default=defaults.businesses)
    p.add_argument("--latency-ms", type=int, default=defaults.latency_ms)
    p.add_argument("--maps-latency-ms", type=int, default=defaults.maps_latency_ms)
    p.add_argument("--captcha-share", type=float, default=defaults.captcha_share)
    p.add_argument("--data-dir", type=Path, default=defaults.data_dir)
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    config = SandboxConfig(
        host=args.host,
        port=args.port,
        seed=args.seed,
        businesses=args.businesses,
        latency_ms=args.latency_ms,
        data_dir=args.data_dir,
        maps_latency_ms=args.maps_latency_ms,
        captcha_share=args.captcha_share,
    )
    return config, args.log_level


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    config, log_level = parse_args(argv)
    directory = generate(config.seed, config.businesses)
    if config.data_dir is not None:
        write_site_data(directory, config.data_dir)
    app = build_app(config, directory)
    print(
        f"sandbox: seed={config.seed} businesses={len(directory.businesses)} "
        f"listings={len(directory.listings)} websites={len(directory.websites)} "
        f"data={config.data_dir} on http://{config.host}:{config.port}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level=log_level,
        access_log=False,
        server_header=False,
    )
