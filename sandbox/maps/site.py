"""The sandbox Google Maps site (host `maps.test`): a result-list SPA, its search API, place
pages, and a reCAPTCHA gate in front of a share of the requests.

Reached through the sandbox proxy like `directory.test`. URLs (all on http://maps.test):

- `GET /maps/search/<query>[/@lat,lng,<zoom>z][?vp=south,west,north,east]`: the result list
  page. Its JS (static/search.js, inlined) fetches `/search` pages of 20 into
  `<div role="feed">` whenever the feed is scrolled to the bottom, until the API says there
  is no more, then appends `<div class="end-of-list">`. Every payload it received is on
  `window.__LEADFLOW_PAYLOADS`; progress on `window.__LEADFLOW_STATE`.
- `GET /search?tbm=map&q=<query>&vp=<s>,<w>,<n>,<e>&offset=<n>&num=<n<=20>`: one page of
  results, `{"c": 0, "d": ")]}'\\n<search payload>", "leadflow": {...}}` (the envelope of
  Google's XHRs; `spiders.google_maps.parse.parse_payload` reads it as is). Places inside the
  viewport (no `vp`: the viewport of the query's "... in <city>"; neither: everywhere) whose
  taxonomy category matches the query's "what" (empty what = all), best first, at most 120
  per query + viewport. Headers: `X-Total-In-Viewport` (the true count, beyond the cap: the
  spider splits the grid on it), `X-Total-Results` (min(true count, 120)), `X-Has-More`
  (1/0), `X-Result-Cap` (120). The `leadflow` member repeats them.
- `GET /maps/place/<name>/data=!4m2!3m1!1s<data_id>`, `GET /maps/place/?ftid=<data_id>`,
  `GET /maps?cid=<cid>` (and `/?cid=`): the place page, with the place-page payload in
  `window.APP_INITIALIZATION_STATE` (as the string ")]}'\\n<payload>" at [3][6], and at
  [3][9][6] for scrapers that look for an array holding it) and on `window.__LEADFLOW_PAYLOADS`.
- `GET /maps/preview/place?ftid=<data_id>` (or `?cid=`, `?place_id=`): the place-page payload
  in the same envelope as /search.
- `GET /sorry/index?continue=<url>` / `POST /sorry/index`: the CAPTCHA challenge (below).
- `GET /p/<photo>`: placeholder photos (the thumbnails' URLs); `GET /recaptcha/api.js`: an
  offline stand-in for Google's reCAPTCHA loader; `GET /robots.txt` (allows all).

Every response waits `latency_ms` first. With `captcha_share` > 0, that share of gated
requests (everything but /sorry, /p, robots.txt; drawn from a seeded RNG) is answered with a
302 to `http://maps.test/sorry/index?continue=<the original URL, percent-encoded>`, as Google
does for pages and XHRs alike. The sorry page carries `<div class="g-recaptcha"
data-sitekey=...>` and a form posting `g-recaptcha-response` and `continue`. The token is
checked with the 2captcha sandbox (`CaptchaSandbox.verify_token`) for the sitekey and the
page URL the challenge was shown at, i.e. `http://maps.test/sorry/index?continue=` +
`quote(continue, safe="")` (a GET with any other spelling of that query is redirected to
this canonical one first, so the URL a client sees is the one verified). A good token sets
`GOOGLE_ABUSE_EXEMPTION` and redirects to `continue`; requests carrying that cookie are not
challenged for the next `exemption_requests` requests or `exemption_seconds`. Anything else
gets a 403 page saying the token was rejected.

`control_app()` (mounted on the server's own address at `/__sandbox/maps`) serves `/stats`
(counters) and `/config` (GET, or POST JSON `{"latency_ms", "captcha_share"}` to change them
at run time).
"""

from __future__ import annotations

import asyncio
import html
import json
import random
import re
import secrets
import time
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from models.taxonomy import OTHER, category_slug
from sandbox.directory.generate import CITIES, City, Directory
from sandbox.maps.payload import (
    CITY_VIEWPORTS,
    MAPS_BASE,
    MAPS_HOST,
    WORLD,
    Place,
    PlaceLookup,
    Viewport,
    phone_forms,
    place_page_payload,
    places_of,
    search_payload,
    to_json,
    viewport_at,
    wrap_json,
)

__all__ = ["MAPS_HOST", "MapsSite", "PlaceIndex", "maps_site_for", "parse_query"]

PAGE_SIZE = 20  # places per /search page (Google's feed loads about 20 per scroll)
RESULT_CAP = 120  # Google never lists more than this for one search
EXEMPTION_COOKIE = "GOOGLE_ABUSE_EXEMPTION"
SORRY_PATH = "/sorry/index"
_UNGATED = ("/sorry/", "/p/", "/recaptcha/", "/robots.txt", "/favicon.ico")
# Offline stand-in for Google's reCAPTCHA loader: shows a box where the widget would be and
# answers grecaptcha.getResponse() from the textarea a solver fills (as with the real widget).
_RECAPTCHA_JS = """(function(){
var box=document.querySelector('.g-recaptcha');
if(box){box.textContent='reCAPTCHA (sandbox): solve with 2captcha, put the token in '+
'#g-recaptcha-response and submit the form.';box.style.cssText='border:1px solid #ccc;padding:8px';}
window.grecaptcha={ready:function(f){f();},getResponse:function(){
var t=document.getElementById('g-recaptcha-response');return t?t.value:'';},
execute:function(){},render:function(){return 0;},reset:function(){}};
})();"""
_SCRIPT = (Path(__file__).parent / "static" / "search.js").read_text(encoding="utf-8")
_DATA_ID_IN_PATH = re.compile(r"!1s(0x[0-9a-fA-F]+:0x[0-9a-fA-F]+)")
_CAMERA = re.compile(r"@(-?\d+(?:\.\d+)?),(-?\d+(?:\.\d+)?),(\d+(?:\.\d+)?)z")


class TokenVerifier(Protocol):
    """What the gate needs from the 2captcha sandbox (`sandbox.captcha.CaptchaSandbox`)."""

    def verify_token(self, token: str | None, sitekey: str, page_url: str) -> bool: ...


# --------------------------------------------------------------------------------------
# Queries and the place index
# --------------------------------------------------------------------------------------


def _fold(text: str) -> str:
    # Case, accents and spacing do not matter in a place name ("Αθήνα" = "αθηνα").
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.replace(",", ", ").split()).replace(" ,", ",").strip(" ,.")


_CITY_ALIASES: dict[str, City] = {
    _fold(alias): city for city in CITIES for alias in (*city.aliases, city.key, city.name)
}


@dataclass(frozen=True, slots=True)
class Query:
    what: str  # the category words ("dentist"); "" = any place
    where: str | None  # the place words as written ("Austin, TX")
    city: City | None  # `where` resolved to a sandbox city


def resolve_city(where: str) -> City | None:
    folded = _fold(where)
    city = _CITY_ALIASES.get(folded)
    if city is None:  # "Austin, Texas, USA": the first part names the city
        city = _CITY_ALIASES.get(folded.split(",")[0].strip())
    return city


def parse_query(text: str) -> Query:
    """ "dentist in Austin, TX" -> what="dentist", where="Austin, TX" (+ the city)."""
    text = " ".join(text.replace("+", " ").split())
    match = re.match(r"^(.*?)\s+(?:in|near)\s+(.+)$", text, flags=re.IGNORECASE)
    if match:
        what, where = match.group(1).strip(), match.group(2).strip()
        return Query(what, where, resolve_city(where))
    if text.lower().startswith(("in ", "near ")):
        where = text.split(" ", 1)[1]
        return Query("", where, resolve_city(where))
    city = resolve_city(text) if text else None
    if city is not None:  # the query is only a place: everything there
        return Query("", text, city)
    return Query(text, None, None)


def what_matcher(what: str) -> Callable[[Place], bool]:
    """Which places a query's "what" selects: same taxonomy slug, else a name/category match."""
    words = what.strip()
    if not words:
        return lambda place: True
    slug = category_slug(words)
    if slug == OTHER and words.lower().endswith("s"):  # "bars", "cafes"
        slug = category_slug(words[:-1])
    if slug != OTHER:
        return lambda place: place.slug == slug
    folded = _fold(words)
    return lambda place: (
        folded in _fold(place.business.name)
        or any(folded in _fold(c) for c in place.business.categories)
    )


class PlaceIndex:
    """The places sorted by latitude, so a viewport is a bisect plus a longitude filter."""

    def __init__(self, places: Sequence[Place]) -> None:
        self.places = sorted(places, key=lambda p: (p.business.latitude, p.cid))
        self._lats = [p.business.latitude for p in self.places]
        self.lookup = PlaceLookup(self.places)
        # Pagination repeats one search 6 times: keep the ranked lists of recent searches.
        self.ranked = lru_cache(maxsize=512)(self._ranked)

    def in_viewport(self, vp: Viewport) -> list[Place]:
        lo, hi = bisect_left(self._lats, vp.south), bisect_right(self._lats, vp.north)
        return [p for p in self.places[lo:hi] if vp.west <= p.business.longitude <= vp.east]

    def _ranked(self, what: str, vp: Viewport) -> tuple[Place, ...]:
        """Every matching place in the viewport, best first (uncapped; deterministic)."""
        match = what_matcher(what)
        found = [p for p in self.in_viewport(vp) if match(p)]
        found.sort(key=lambda p: (-p.prominence, p.cid))
        return tuple(found)


# --------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------

_STYLE = """
body{font-family:Roboto,Arial,sans-serif;margin:0;display:flex;height:100vh}
#pane{width:408px;display:flex;flex-direction:column;border-right:1px solid #ddd}
#map{flex:1;background:#e8eaed}
div[role=feed]{flex:1;overflow-y:auto;height:640px}
.place{height:112px;padding:8px 16px;border-bottom:1px solid #eee;box-sizing:border-box}
.place a.hfpxzc{font-weight:500;color:#202124;text-decoration:none}
.end-of-list,.no-results{padding:16px;color:#70757a;text-align:center}
"""


def _script_json(value: Any) -> str:
    """JSON safe inside <script>: no "</script>" breakout, no JS line separators."""
    text = to_json(value)
    return text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_search_page(query: str, vp: Viewport | None) -> str:
    label = html.escape(f"Results for {query}", quote=True)
    config = {"query": query, "vp": vp.param() if vp else None, "pageSize": PAGE_SIZE}
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(query)} - Google Maps</title><style>{_STYLE}</style></head>
<body><div id="pane">
<form id="searchbox" action="/maps/search/" method="get">
<input id="searchboxinput" name="q" value="{html.escape(query, quote=True)}"></form>
<h1 class="fontTitleLarge">Results</h1>
<div role="feed" aria-label="{label}" tabindex="-1"></div>
</div><div id="map" aria-label="Map"></div>
<script>window.__LEADFLOW_SEARCH={_script_json(config)};window.__LEADFLOW_PAYLOADS=[];</script>
<script>{_SCRIPT}</script>
</body></html>"""


def render_place_page(place: Place, payload: list[Any]) -> str:
    b = place.business
    state_string = ")]}'\n" + to_json(payload)
    holder: list[Any] = [None] * 6 + [state_string]
    # Google's page: APP_INITIALIZATION_STATE[3][6] is the ")]}'"-guarded payload string.
    # Some scrapers instead look for an array under [3] holding it at [6]: [3][9] is one.
    app_state: list[Any] = [
        payload[4],
        [],
        [],
        [None, None, None, None, None, None, state_string, None, None, holder],
    ]
    e = html.escape
    rows = [f'<h1 class="DUwDvf">{e(b.name)}</h1>']
    if b.rating is not None:
        rows.append(
            f'<div class="F7nice"><span aria-hidden="true">{b.rating}</span> '
            f'<span aria-label="{b.review_count or 0} reviews">({b.review_count or 0})</span></div>'
        )
    if b.categories:
        rows.append(f'<button class="DkEaL">{e(b.categories[0])}</button>')
    rows.append(
        f'<button data-item-id="address" aria-label="Address: {e(b.address, quote=True)}">'
        f"{e(b.address)}</button>"
    )
    if b.website:
        rows.append(
            f'<a data-item-id="authority" href="{e(b.website, quote=True)}" '
            f'aria-label="Website: {e(b.domain or b.website, quote=True)}">'
            f"{e(b.domain or b.website)}</a>"
        )
    phones = phone_forms(b)
    if phones:
        rows.append(
            f'<button data-item-id="phone:tel:{phones[2]}" aria-label="Phone: {e(phones[0])}">'
            f"{e(phones[0])}</button>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(b.name)} - Google Maps</title>
<style>{_STYLE}</style></head>
<body><div id="pane"><div role="main" aria-label="{e(b.name, quote=True)}">
{"".join(rows)}
</div></div><div id="map" aria-label="Map"></div>
<script>window.APP_INITIALIZATION_STATE={_script_json(app_state)};
window.__LEADFLOW_PAYLOADS=[window.APP_INITIALIZATION_STATE[3][6].slice(5)].map(JSON.parse);</script>
</body></html>"""


def render_sorry_page(sitekey: str, continue_url: str, message: str | None = None) -> str:
    e = html.escape
    note = f'<p class="rejected">{e(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>https://maps.test/</title>
<script src="/recaptcha/api.js" async defer></script></head>
<body><div id="main">
<p>Our systems have detected unusual traffic from your computer network. This page checks to
see if it's really you sending the requests, and not a robot.</p>{note}
<form id="captcha-form" action="{SORRY_PATH}" method="post">
<div class="g-recaptcha" id="recaptcha" data-sitekey="{e(sitekey, quote=True)}"
 data-callback="submitCallback"></div>
<textarea id="g-recaptcha-response" name="g-recaptcha-response" style="display:none"></textarea>
<input type="hidden" name="continue" value="{e(continue_url, quote=True)}">
<input type="submit" value="Submit">
</form>
<script>function submitCallback(){{document.getElementById('captcha-form').submit();}}</script>
</div></body></html>"""


def render_rejected_page(sitekey: str, continue_url: str) -> str:
    retry = sorry_url(continue_url)
    body = render_sorry_page(
        sitekey, continue_url, "The CAPTCHA token was rejected (invalid, reused or expired)."
    )
    return body.replace(
        "</form>",
        f'</form><p><a id="retry" href="{html.escape(retry, quote=True)}">Try again</a></p>',
    )


def _not_found(message: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><title>Not found</title><p>{html.escape(message)}</p>", status_code=404
    )


# --------------------------------------------------------------------------------------
# The CAPTCHA gate
# --------------------------------------------------------------------------------------


def sorry_url(continue_url: str) -> str:
    """The challenge page for `continue_url`, in the one spelling tokens are verified against."""
    return f"{MAPS_BASE}{SORRY_PATH}?continue={quote(continue_url, safe='')}"


def _safe_continue(value: str | None) -> str:
    """Only maps.test URLs (or local paths) may be continued to: no open redirect."""
    if not value:
        return f"{MAPS_BASE}/maps"
    if value.startswith("/") and not value.startswith("//"):
        return MAPS_BASE + value
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and (parts.hostname or "").lower() == MAPS_HOST:
        return value
    return f"{MAPS_BASE}/maps"


@dataclass(slots=True)
class Exemption:
    expires: float  # clock time
    remaining: int  # requests still let through


def original_url(scope: Scope) -> str:
    """The request's URL as the client asked for it, on http://maps.test."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    path = raw.decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{MAPS_BASE}{path}" + (f"?{query}" if query else "")


# --------------------------------------------------------------------------------------
# The site
# --------------------------------------------------------------------------------------


class MapsSite:
    """The maps.test app (`self.app`) and its control endpoints (`control_app()`)."""

    def __init__(
        self,
        directory: Directory,
        *,
        seed: int | None = None,
        latency_ms: int = 300,
        captcha_share: float = 0.0,
        sitekey: str = "",
        captcha: TokenVerifier | None = None,
        exemption_requests: int = 100,
        exemption_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seed = directory.seed if seed is None else seed
        self.index = PlaceIndex(places_of(directory.businesses, self.seed))
        self.latency_ms = latency_ms
        self.captcha_share = captcha_share
        self.sitekey = sitekey
        self.captcha = captcha
        self.exemption_requests = exemption_requests
        self.exemption_seconds = exemption_seconds
        self._clock = clock
        self._rng = random.Random(f"maps-captcha:{self.seed}")
        self._exemptions: dict[str, Exemption] = {}
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "requests", "searches", "search_pages", "place_pages", "challenged",
                "challenges_shown", "challenges_passed", "challenges_rejected", "exempted",
            ),
            0,
        )  # fmt: skip
        self.app: ASGIApp = self._wrap(self._routes())

    # --- ASGI plumbing ------------------------------------------------------------------

    def _wrap(self, inner: ASGIApp) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await inner(scope, receive, send)
                return
            self.counters["requests"] += 1
            if self.latency_ms > 0:  # read per request: /config may change it
                await asyncio.sleep(self.latency_ms / 1000)
            challenge = self._gate(scope)
            if challenge is not None:
                await challenge(scope, receive, send)
                return
            await inner(scope, receive, send)

        return app

    def _gate(self, scope: Scope) -> Response | None:
        """A 302 to the challenge page for a challenged request; None to let it through."""
        path: str = scope["path"]
        if self.captcha_share <= 0 or path.startswith(_UNGATED):
            return None
        cookie = Request(scope).cookies.get(EXEMPTION_COOKIE)
        if cookie and self._use_exemption(cookie):
            self.counters["exempted"] += 1
            return None
        if self._rng.random() >= self.captcha_share:
            return None
        self.counters["challenged"] += 1
        return RedirectResponse(sorry_url(original_url(scope)), status_code=302)

    def _use_exemption(self, cookie: str) -> bool:
        exemption = self._exemptions.get(cookie)
        if exemption is None:
            return False
        if exemption.remaining <= 0 or self._clock() >= exemption.expires:
            del self._exemptions[cookie]
            return False
        exemption.remaining -= 1
        return True

    def _grant_exemption(self) -> str:
        now = self._clock()
        for key in [k for k, v in self._exemptions.items() if v.expires <= now]:
            del self._exemptions[key]
        value = secrets.token_urlsafe(32)
        self._exemptions[value] = Exemption(now + self.exemption_seconds, self.exemption_requests)
        return value

    # --- handlers -----------------------------------------------------------------------

    def _routes(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/", self.home),
                Route("/maps", self.home),
                Route("/maps/search/{rest:path}", self.search_page),
                Route("/search", self.search_api),
                Route("/maps/place/{rest:path}", self.place_page),
                Route("/maps/preview/place", self.place_preview),
                Route(SORRY_PATH, self.sorry, methods=["GET"]),
                Route(SORRY_PATH, self.sorry_submit, methods=["POST"]),
                Route("/p/{rest:path}", self.photo),
                Route("/robots.txt", self.robots),
                Route("/recaptcha/api.js", self.recaptcha_js),
                Route("/favicon.ico", self.favicon),
            ]
        )

    async def home(self, request: Request) -> Response:
        cid = request.query_params.get("cid")
        if cid:
            return self._place_response(self.index.lookup.by_cid.get(cid))
        return HTMLResponse(
            "<!doctype html><title>Google Maps</title>"
            '<form action="/maps/search/" method="get"><input name="q"></form>'
        )

    async def search_page(self, request: Request) -> Response:
        rest: str = request.path_params["rest"]
        query_part, _, camera_part = rest.partition("/@")
        query = " ".join(query_part.replace("+", " ").split()) or request.query_params.get("q", "")
        vp: Viewport | None = None
        vp_param = request.query_params.get("vp")
        try:
            if vp_param:
                vp = Viewport.parse(vp_param)
            elif camera := _CAMERA.match("@" + camera_part):
                lat, lng, zoom = (float(camera.group(i)) for i in (1, 2, 3))
                vp = viewport_at(lat, lng, zoom)
        except ValueError as exc:
            return PlainTextResponse(f"bad viewport: {exc}", status_code=400)
        return HTMLResponse(render_search_page(query, vp))

    def search_results(
        self, q: str, vp_param: str | None, offset: int, num: int
    ) -> tuple[list[Place], dict[str, Any]]:
        """One page of a search and its counts (the heart of /search, without HTTP)."""
        query = parse_query(q)
        vp: Viewport | None
        if vp_param:
            vp = Viewport.parse(vp_param)
        elif query.city is not None:
            vp = CITY_VIEWPORTS[query.city.key]
        elif query.where:
            vp = None  # a place the sandbox does not know: nothing there
        else:
            vp = WORLD
        ranked = self.index.ranked(query.what.lower(), vp) if vp is not None else ()
        capped = ranked[:RESULT_CAP]
        page = list(capped[offset : offset + num]) if offset < RESULT_CAP else []
        meta = {
            "query": q,
            "what": query.what,
            "where": query.where,
            "viewport": vp.param() if vp else None,
            "offset": offset,
            "num": num,
            "returned": len(page),
            "total": len(capped),
            "total_in_viewport": len(ranked),
            "has_more": offset + len(page) < len(capped),
            "capped": len(ranked) > RESULT_CAP,
            "cap": RESULT_CAP,
        }
        return page, meta

    async def search_api(self, request: Request) -> Response:
        params = request.query_params
        try:
            offset = max(0, int(params.get("offset") or 0))
            num = min(PAGE_SIZE, max(1, int(params.get("num") or PAGE_SIZE)))
            page, meta = self.search_results(params.get("q", ""), params.get("vp"), offset, num)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        self.counters["search_pages"] += 1
        if offset == 0:
            self.counters["searches"] += 1
        vp = Viewport.parse(meta["viewport"]) if meta["viewport"] else None
        payload = search_payload(
            params.get("q", ""), page, viewport=vp, seed=self.seed, offset=offset
        )
        body = json.dumps(wrap_json(payload, leadflow=meta), ensure_ascii=False)
        headers = {
            "X-Total-In-Viewport": str(meta["total_in_viewport"]),
            "X-Total-Results": str(meta["total"]),
            "X-Has-More": "1" if meta["has_more"] else "0",
            "X-Result-Cap": str(RESULT_CAP),
            "Cache-Control": "no-store",
        }
        return Response(body, media_type="application/json; charset=utf-8", headers=headers)

    def _find_place(self, request: Request) -> Place | None:
        lookup, params = self.index.lookup, request.query_params
        if ftid := params.get("ftid"):
            return lookup.by_data_id.get(ftid)
        if cid := params.get("cid"):
            return lookup.by_cid.get(cid)
        place_id = params.get("place_id") or params.get("q", "").removeprefix("place_id:")
        if place_id and (place := lookup.by_place_id.get(place_id)):
            return place
        rest = unquote(request.path_params.get("rest", ""))
        if match := _DATA_ID_IN_PATH.search(rest):
            return lookup.by_data_id.get(match.group(1))
        return None

    def _place_response(self, place: Place | None) -> Response:
        if place is None:
            return _not_found("Google Maps can't find this place.")
        self.counters["place_pages"] += 1
        payload = place_page_payload(place, datetime.now(UTC))
        return HTMLResponse(render_place_page(place, payload))

    async def place_page(self, request: Request) -> Response:
        return self._place_response(self._find_place(request))

    async def place_preview(self, request: Request) -> Response:
        place = self._find_place(request)
        if place is None:
            return JSONResponse({"error": "no such place"}, status_code=404)
        self.counters["place_pages"] += 1
        body = json.dumps(wrap_json(place_page_payload(place)), ensure_ascii=False)
        return Response(body, media_type="application/json; charset=utf-8")

    async def sorry(self, request: Request) -> Response:
        continue_url = _safe_continue(request.query_params.get("continue"))
        canonical = sorry_url(continue_url)
        if original_url(request.scope) != canonical:
            # One spelling of the challenge URL, so the page URL a client gives 2captcha is
            # the one the POST verifies against (JS and Python percent-encode differently).
            return RedirectResponse(canonical, status_code=302)
        self.counters["challenges_shown"] += 1
        return HTMLResponse(render_sorry_page(self.sitekey, continue_url))

    async def sorry_submit(self, request: Request) -> Response:
        form = await _form(request)
        continue_url = _safe_continue(form.get("continue"))
        token = form.get("g-recaptcha-response")
        ok = self.captcha is not None and self.captcha.verify_token(
            token, self.sitekey, sorry_url(continue_url)
        )
        if not ok:
            self.counters["challenges_rejected"] += 1
            return HTMLResponse(render_rejected_page(self.sitekey, continue_url), status_code=403)
        self.counters["challenges_passed"] += 1
        response = RedirectResponse(continue_url, status_code=302)
        response.set_cookie(
            EXEMPTION_COOKIE,
            self._grant_exemption(),
            max_age=int(self.exemption_seconds),
            path="/",
            httponly=True,
        )
        return response

    async def photo(self, request: Request) -> Response:
        # A flat placeholder "photo": thumbnails must resolve offline.
        svg = (
            '<svg xmlns="http://www.w3.org/2000/svg" width="408" height="408">'
            '<rect width="100%" height="100%" fill="#c8d6e5"/></svg>'
        )
        return Response(svg, media_type="image/svg+xml")

    async def recaptcha_js(self, request: Request) -> Response:
        return Response(_RECAPTCHA_JS, media_type="text/javascript")

    async def favicon(self, request: Request) -> Response:
        return Response(status_code=204)

    async def robots(self, request: Request) -> Response:
        return PlainTextResponse("User-agent: *\nAllow: /\n")

    # --- control ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            **self.counters,
            "places": len(self.index.places),
            "latency_ms": self.latency_ms,
            "captcha_share": self.captcha_share,
            "sitekey": self.sitekey,
            "exemptions_active": len(self._exemptions),
        }

    def control_app(self) -> Starlette:
        async def stats(request: Request) -> Response:
            return JSONResponse(self.stats())

        async def config(request: Request) -> Response:
            if request.method == "POST":
                try:
                    data = json.loads(await request.body() or b"{}")
                    if "latency_ms" in data:
                        self.latency_ms = max(0, int(data["latency_ms"]))
                    if "captcha_share" in data:
                        self.captcha_share = min(1.0, max(0.0, float(data["captcha_share"])))
                except (ValueError, TypeError, AttributeError) as exc:
                    return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse(
                {"latency_ms": self.latency_ms, "captcha_share": self.captcha_share}
            )

        return Starlette(
            routes=[Route("/stats", stats), Route("/config", config, methods=["GET", "POST"])]
        )


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form body (python-multipart is not installed, and not needed for this)."""
    body = (await request.body()).decode("utf-8", "replace")
    return dict(parse_qsl(body, keep_blank_values=True))


def maps_site_for(
    directory: Directory,
    mounts: Mapping[str, ASGIApp],
    *,
    seed: int,
    latency_ms: int,
    captcha_share: float,
    sitekey: str,
) -> MapsSite:
    """The site as `sandbox.server.build_app` wires it: tokens are checked by the 2captcha
    sandbox mounted at `/2captcha` in the same process (None: every token is refused)."""
    captcha_app = mounts.get("/2captcha")
    captcha = getattr(getattr(captcha_app, "state", None), "captcha", None)
    return MapsSite(
        directory,
        seed=seed,
        latency_ms=latency_ms,
        captcha_share=captcha_share,
        sitekey=sitekey,
        captcha=captcha,
    )
