"""The `google_maps` spider: places from a Google Maps search, read from the JSON payloads.

    scrapy crawl google_maps -a category=dentist -a location="Austin, TX" -a limit=300
    scrapy crawl google_maps -a category=cafe -a bbox='{"south":..,"west":..,"north":..,"east":..}'
    scrapy crawl google_maps ... -a mode=fast        # no browser (LEADFLOW_GOOGLE_MAPS_MODE)

Places always come from the payloads Google serves (parsed by `spiders.google_maps.parse`),
never from the rendered HTML, whose CSS classes change every few weeks.

- browser mode: scrapy-playwright opens `<maps>/maps/search/<query>?vp=..` in Chromium,
  scrolls the result feed until enough places (or the end-of-list marker) and reads the raw
  pages the app received from `window.__LEADFLOW_PAYLOADS`.
- fast mode: the same `/search?tbm=map&...&offset=n&num=20` payload pages over plain HTTP.

One search shows at most 120 places. A "cell" (a viewport; the whole `bbox`, or the query's
own area when there is none) whose `X-Total-In-Viewport` says more is split into quadrants,
recursively up to `LEADFLOW_GOOGLE_MAPS_GRID_MAX_DEPTH`. Deciding that takes one plain HTTP
probe of the cell's first payload page (in fast mode that page is used, in browser mode only
its header). Places are de-duplicated across cells by place_id, then cid, then data_id, and
the crawl stops at `limit`.

CAPTCHA: a challenged request is redirected to `/sorry/index?continue=..`. The spider solves
the reCAPTCHA through 2captcha (`connectors.captcha`) in a worker thread, submits the token
(an HTTP POST on the plain path, the page's form in the browser), and on rejection reports the
token bad and tries a new one, at most `captcha_max_attempts` times. With CAPTCHA solving on
(`LEADFLOW_CAPTCHA_ENABLED`), the 2captcha balance is checked before anything is requested: too
little closes the spider at once with reason `captcha_balance` and the message in the log and
in the stats (`leadflow/fatal_error`), which tasks/scrape turns into the run's failure message.
Solve figures go to the stats as `leadflow/captcha/*`.
"""

from __future__ import annotations

import asyncio
import heapq
import json
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import scrapy
from playwright.async_api import Error as PlaywrightError
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import CloseSpider
from scrapy.http import Response
from twisted.python.failure import Failure

from connectors.captcha import (
    CaptchaAuthError,
    CaptchaBalanceError,
    CaptchaClient,
    CaptchaError,
    Solution,
    find_recaptcha_sitekey,
)
from leadflow.settings import get_settings
from spiders.browser import browser_proxies, playwright_proxy
from spiders.google_maps.parse import NotGoogleMapsPayload, parse_payload
from spiders.search import SearchSpider
from spiders.settings import PROBE_SLOT

SOURCE = "google_maps"
# Grid probes go to their own download slot (see spiders/settings.py), free of AutoThrottle.
PROBE_META = {"download_slot": PROBE_SLOT, "autothrottle_dont_adjust_delay": True}
PAGE_SIZE = 20  # places per payload page (`num`), as the Maps app asks for
MAX_RESULTS = 120  # what one Google Maps search shows at most, however many places match
# A feed sent to the challenge page more often than this is given up (a site that challenges
# every load would otherwise keep the tab, and the 2captcha balance, busy forever).
MAX_CHALLENGES_PER_FEED = 10
TOTAL_HEADER = "X-Total-In-Viewport"
_XSSI = ")]}'"
Mode = Literal["browser", "fast"]

# Browser side. The feed grows when it is scrolled to its bottom; the app appends each raw
# payload page to window.__LEADFLOW_PAYLOADS and adds `.end-of-list` when nothing is left.
# The whole scroll, in the page: one round trip per feed instead of one per payload page
# (each round trip costs CPU on both sides, and on 2 cores that is what limits the page rate).
# Scroll the feed to its bottom every 25 ms (a scroll while the app is still loading is
# ignored by it) until the list ended, `want` places arrived, or it stopped growing for
# `stallMs`; then hand back the payload pages from `start` on, as JSON text (Playwright's own
# serialisation of big nested arrays costs ~10x more than JSON.stringify + json.loads).
_JS_SCROLL_FEED = """async ([start, want, stallMs]) => {
  const list = () => window.__LEADFLOW_PAYLOADS || [];
  const ended = () => !!document.querySelector('.end-of-list');
  const places = (p) => {
    const items = Array.isArray(p) && Array.isArray(p[0]) && Array.isArray(p[0][1]) ? p[0][1] : [];
    return items.filter((i) => Array.isArray(i) && Array.isArray(i[14])).length;
  };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  let seen = -1, grewAt = Date.now(), count = 0, stalled = false;
  while (!ended()) {
    const n = list().length;
    if (n !== seen) {
      for (let i = Math.max(seen, start); i < n; i++) count += places(list()[i]);
      seen = n;
      grewAt = Date.now();
      if (count >= want) break;
    } else if (Date.now() - grewAt > stallMs) {
      stalled = true;
      break;
    }
    const feed = document.querySelector('[role="feed"]');
    if (feed) feed.scrollTop = feed.scrollHeight;
    await sleep(25);
  }
  const text = (p) => (typeof p === 'string' ? p : JSON.stringify(p));
  return { payloads: list().slice(start).map(text), end: ended(), stalled };
}"""
# What the reCAPTCHA widget's callback does on a real challenge page: put the token into the
# form (creating the fields when the page has none) and post it.
_JS_SUBMIT_TOKEN = """([token, cont]) => {
  let form = document.querySelector('form[action*="sorry"]') || document.querySelector('form');
  if (!form) { form = document.createElement('form'); document.body.appendChild(form); }
  form.method = 'POST';
  form.action = '/sorry/index';
  const put = (name, value) => {
    let el = form.querySelector(`[name="${name}"]`);
    if (!el) {
      el = document.createElement('input');
      el.type = 'hidden';
      el.name = name;
      form.appendChild(el);
    }
    el.value = value;
  };
  put('g-recaptcha-response', token);
  put('continue', cont);
  HTMLFormElement.prototype.submit.call(form);
}"""


# --------------------------------------------------------------------------------------
# Grid cells
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cell:
    """One search viewport (degrees); `depth` counts the splits that made it."""

    south: float
    west: float
    north: float
    east: float
    depth: int = 0

    @classmethod
    def from_json(cls, text: str) -> Cell:
        try:
            data = json.loads(text)
            cell = cls(
                float(data["south"]), float(data["west"]), float(data["north"]), float(data["east"])
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f'bbox must be JSON {{"south","west","north","east"}} in degrees, got {text!r}'
            ) from exc
        if not (cell.south < cell.north and cell.west < cell.east):
            raise ValueError(f"bbox must have south < north and west < east, got {text!r}")
        return cell

    @property
    def vp(self) -> str:
        return ",".join(f"{v:.6f}" for v in (self.south, self.west, self.north, self.east))

    def split(self, total: int, max_depth: int) -> list[Cell]:
        """The cells to probe for a cell holding `total` places: as many quadrant levels at
        once as it takes for 120-place lists to cover `total` if spread evenly (at least one,
        never past `max_depth`). Each level skipped saves a round trip of probes; a cell that
        still holds too many is split again."""
        levels = 1
        while 4**levels * MAX_RESULTS < total and self.depth + levels < max_depth:
            levels += 1
        cells = [self]
        for _ in range(levels):
            cells = [child for cell in cells for child in cell.quadrants()]
        return cells

    def quadrants(self) -> list[Cell]:
        mid_lat, mid_lng = (self.south + self.north) / 2, (self.west + self.east) / 2
        d = self.depth + 1
        return [
            Cell(self.south, self.west, mid_lat, mid_lng, d),
            Cell(self.south, mid_lng, mid_lat, self.east, d),
            Cell(mid_lat, self.west, self.north, mid_lng, d),
            Cell(mid_lat, mid_lng, self.north, self.east, d),
        ]


def cell_around(points: Iterable[tuple[float, float]], margin: float = 0.1) -> Cell | None:
    """The box around some places (plus a margin): the query's own area, seen from its results.

    Used only when a search without a bbox reports more places than one list shows and the
    site did not say which viewport it searched.
    """
    pts = list(points)
    if len(pts) < 2:
        return None
    lats, lngs = [p[0] for p in pts], [p[1] for p in pts]
    dlat = max((max(lats) - min(lats)) * margin, 1e-3)
    dlng = max((max(lngs) - min(lngs)) * margin, 1e-3)
    return Cell(min(lats) - dlat, min(lngs) - dlng, max(lats) + dlat, max(lngs) + dlng)


# --------------------------------------------------------------------------------------
# Payload decoding
# --------------------------------------------------------------------------------------


def load_payload(raw: Any) -> Any:
    """One raw payload page -> its JSON: text (maybe `)]}'`-guarded), bytes, or decoded JSON,
    with Google's XHR envelope `{"c": 0, "d": ")]}'\\n[...]"}` opened."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if isinstance(raw, dict) and isinstance(raw.get("d"), str):
        raw = raw["d"]
    if isinstance(raw, str):
        text = raw.lstrip("\ufeff").lstrip()
        if text.startswith(_XSSI):
            text = text[len(_XSSI) :]
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NotGoogleMapsPayload(f"payload is not JSON: {exc}") from None
        if isinstance(raw, dict) and isinstance(raw.get("d"), str):
            return load_payload(raw["d"])
    return raw


def decode_payload(raw: Any) -> list[dict[str, Any]]:
    """One raw payload page -> its places."""
    return parse_payload(load_payload(raw))


def payload_viewport(payload: Any, margin: float = 1.25) -> Cell | None:
    """The area a search payload says it showed (its camera, `payload[1]`), with a margin.

    The camera is [[altitude, lng, lat], [heading, tilt, ?], [width, height], zoom]; the span
    is taken as 360 / 2**zoom degrees of latitude (and that / 0.75 of longitude, a 4:3
    window). The zoom is rounded, so the box is widened by `margin`: a cell too big only
    costs a few empty probes, one too small loses places.
    """
    camera = payload[1] if isinstance(payload, list) and len(payload) > 1 else None
    try:
        _, lng, lat = camera[0]
        zoom = float(camera[3])
    except (TypeError, ValueError, IndexError):
        return None
    if not all(isinstance(v, int | float) for v in (lat, lng)) or not 0 < zoom < 30:
        return None
    half_lat = 360.0 / 2**zoom / 2 * margin
    half_lng = half_lat / 0.75
    return Cell(
        max(-90.0, lat - half_lat),
        max(-180.0, lng - half_lng),
        min(90.0, lat + half_lat),
        min(180.0, lng + half_lng),
    )


def union(a: Cell | None, b: Cell | None) -> Cell | None:
    if a is None or b is None:
        return a or b
    return Cell(
        min(a.south, b.south), min(a.west, b.west), max(a.north, b.north), max(a.east, b.east)
    )


def place_keys(record: dict[str, Any]) -> list[tuple[str, str]]:
    """The ids one place is known by, strongest first (place_id, cid, data_id)."""
    return [(k, str(record[k])) for k in ("place_id", "cid", "data_id") if record.get(k)]


def _header_int(response: Response, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None:
        return None
    try:
        return int(value.decode("latin-1").strip())
    except ValueError:
        return None


def _continue_url(sorry_url: str, fallback: str) -> str:
    return parse_qs(urlsplit(sorry_url).query).get("continue", [fallback])[0]


def is_challenge(url: str) -> bool:
    return urlsplit(url).path.startswith("/sorry/")


class ChallengeFailed(Exception):
    """One CAPTCHA challenge could not be passed (its request's places are lost)."""


# --------------------------------------------------------------------------------------
# The spider
# --------------------------------------------------------------------------------------


class GoogleMapsSpider(SearchSpider):
    name = "google_maps"
    # The Playwright handler only for this spider, so other crawls never load it. Chromium
    # itself starts on the first browser request, so fast mode never launches it either.
    custom_settings = {
        "DOWNLOAD_HANDLERS": {
            "http": "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler",
            "https": "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler",
        },
    }

    def __init__(
        self,
        category: str = "",
        location: str = "",
        limit: str | int = "0",
        bbox: str = "",
        mode: str = "",
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(category, location, limit, *args, **kwargs)
        self.root: Cell | None = Cell.from_json(bbox) if bbox and bbox.strip() else None
        if mode and mode not in ("browser", "fast"):
            raise ValueError(f"mode must be 'browser' or 'fast', got {mode!r}")
        self._mode_arg = mode
        # Defaults; from_crawler sets them from the Scrapy settings (LEADFLOW_GOOGLE_MAPS_*).
        self.base_url = "http://maps.test"
        self.mode: str = mode or "browser"
        self.max_depth = 4
        self.scroll_timeout = 20.0
        self.captcha_enabled = True
        self.contexts = 1
        self.proxies: list[str] = []
        self.seen: set[tuple[str, str]] = set()
        self.emitted = 0
        # Places promised by requests in flight: new requests go out only while
        # emitted + promised < limit, so a small limit does not fetch the whole grid.
        self.promised = 0
        # Work not yet requested, taken last-in-first-out: a split cell's quadrants are
        # searched before its siblings, so the first leaf (and its places) comes soon.
        self.frontier: list[tuple[str, Cell | None, int]] = []
        # Leaf cells waiting for a browser tab, biggest list first (a heap of (-size, order,
        # cell)): the longest scrolls start first, so the crawl does not end on one long feed
        # while the other tabs idle. Tabs = contexts x pages per context.
        self.ready_feeds: list[tuple[int, int, Cell | None]] = []
        self.browser_tabs = 1
        self.feeds_in_flight = 0
        self.captcha: CaptchaClient | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._feed_order = 0
        self._feed_no = 0
        self._fatal_reason: str | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> GoogleMapsSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        s = crawler.settings
        spider.base_url = str(s.get("LEADFLOW_GOOGLE_MAPS_URL") or "http://maps.test").rstrip("/")
        spider.mode = spider._mode_arg or s.get("LEADFLOW_GOOGLE_MAPS_MODE") or "browser"
        spider.max_depth = s.getint("LEADFLOW_GOOGLE_MAPS_GRID_MAX_DEPTH", 8)
        spider.scroll_timeout = s.getfloat("LEADFLOW_GOOGLE_MAPS_SCROLL_TIMEOUT", 20.0)
        spider.captcha_enabled = s.getbool("LEADFLOW_CAPTCHA_ENABLED", True)
        spider.contexts = max(1, s.getint("PLAYWRIGHT_MAX_CONTEXTS", 1))
        spider.browser_tabs = spider.contexts * max(
            1, s.getint("PLAYWRIGHT_MAX_PAGES_PER_CONTEXT", 1)
        )
        spider.proxies = browser_proxies(s.getlist("LEADFLOW_PROXIES"))
        crawler.signals.connect(spider._closed, signal=signals.spider_closed)
        return spider

    # --- what to search ----------------------------------------------------------------

    @property
    def query(self) -> str:
        if self.category and self.location:
            return f"{self.category} in {self.location}"
        return self.category or self.location

    def search_url(self, cell: Cell | None, offset: int, num: int = PAGE_SIZE) -> str:
        params = {"tbm": "map", "q": self.query}
        if cell is not None:
            params["vp"] = cell.vp
        params.update(offset=str(offset), num=str(num))
        return f"{self.base_url}/search?{urlencode(params)}"

    def page_url(self, cell: Cell | None) -> str:
        url = f"{self.base_url}/maps/search/{quote(self.query, safe='')}"
        return url + (f"?{urlencode({'vp': cell.vp})}" if cell is not None else "")

    # --- start: balance first ---------------------------------------------------------

    async def start(self) -> AsyncIterator[scrapy.Request]:
        if not self.query and self.root is None:
            # Neither what nor where: Google would search the whole world. Refuse loudly.
            self._fatal("no_query", "google_maps needs a category, a location or a bbox")
        self.logger.info(
            "google_maps: %r, mode=%s, limit=%s, bbox=%s",
            self.query,
            self.mode,
            self.limit or "all",
            self.root.vp if self.root else "-",
        )
        if self.captcha_enabled:
            await self._check_balance()
        if self.mode == "browser" and self.limit and self.limit <= MAX_RESULTS:
            # One result list holds everything asked for: no need to probe the cell's size.
            self.frontier.append(("feed", self.root, self.limit))
        else:
            self.frontier.append(("probe", self.root, 0))
            if self.mode == "browser":
                # Chromium starts on the first browser request; start it (and its contexts)
                # now, while the grid is probed over plain HTTP, not after.
                for index in range(self.contexts):
                    yield self._warm_up_request(index)
        for request in self._pump():
            yield request

    def _warm_up_request(self, index: int) -> scrapy.Request:
        return scrapy.Request(
            f"{self.base_url}/robots.txt",
            callback=self._warmed_up,
            errback=self._warmed_up,
            meta={
                "playwright": True,
                "playwright_context": f"maps-{index}",
                # It fetches robots.txt itself: waiting for the robots.txt middleware's own
                # fetch first would delay Chromium's start by a whole round trip.
                "dont_obey_robotstxt": True,
                **self._context_kwargs(index),
            },
            dont_filter=True,
            priority=100,
        )

    def _warmed_up(self, response_or_failure: Response | Failure) -> None:
        self._inc("leadflow/browser_warm_ups")

    async def _check_balance(self) -> None:
        """Refuse to start (reason `captcha_balance`) when 2captcha cannot pay for CAPTCHAs."""
        try:
            self.captcha = CaptchaClient.from_settings(get_settings())
            # 2captcha answers in a few hundred ms, but never block the reactor on it.
            balance: float = await self._in_thread(self.captcha.ensure_balance)
        except CaptchaBalanceError as exc:
            self._fatal("captcha_balance", f"CAPTCHA balance check failed: {exc}")
        except CaptchaAuthError as exc:
            self._fatal("captcha_auth", f"CAPTCHA solving is not usable: {exc}")
        except CaptchaError as exc:
            self._fatal(
                "captcha_unavailable", f"2captcha could not be asked for the balance: {exc}"
            )
        else:
            self._set("leadflow/captcha/balance_start", round(balance, 5))

    def _fatal(self, reason: str, message: str) -> None:
        """Log and record why the crawl cannot go on, then close the spider with `reason`."""
        self.logger.error(message)
        self._set("leadflow/fatal_error", message)
        self._fatal_reason = reason
        raise CloseSpider(reason)

    # --- scheduling ---------------------------------------------------------------------

    def _room(self) -> bool:
        return self._fatal_reason is None and (self.limit == 0 or self.emitted < self.limit)

    def _pump(self) -> list[scrapy.Request]:
        """Requests for queued work while the places in flight may still be needed."""
        out: list[scrapy.Request] = []
        while self.frontier and self._room():
            if self.limit and self.emitted + self.promised >= self.limit:
                break
            kind, cell, arg = self.frontier.pop()
            if kind == "feed":
                promise = min(arg or MAX_RESULTS, MAX_RESULTS)
                self._feed_order += 1
                heapq.heappush(self.ready_feeds, (-promise, self._feed_order, cell))
            else:
                promise = PAGE_SIZE
                out.append(self._search_request(cell, arg, kind == "probe", promise))
            self.promised += promise
        while self.ready_feeds and self.feeds_in_flight < self.browser_tabs and self._room():
            size, _, cell = heapq.heappop(self.ready_feeds)
            self.feeds_in_flight += 1
            out.append(self._feed_request(cell, -size))
        return out

    def _search_request(
        self, cell: Cell | None, offset: int, probe: bool, promise: int
    ) -> scrapy.Request:
        # A browser-mode probe only needs the cell's size (the header), not its places.
        num = 1 if probe and self.mode == "browser" else PAGE_SIZE
        return scrapy.Request(
            self.search_url(cell, offset, num),
            callback=self.parse_search,
            errback=self.request_failed,
            cb_kwargs={"cell": cell, "offset": offset, "probe": probe},
            meta={"promise": promise, **(PROBE_META if probe else {})},
            # Probes first: they open up the grid; then pages in the order they were queued.
            priority=10 if probe else 0,
        )

    def _feed_request(self, cell: Cell | None, want: int) -> scrapy.Request:
        # Round robin over the contexts; each context has its own proxy when several are
        # configured (the launch-level proxy otherwise) and its own cookies.
        self._feed_no += 1
        index = self._feed_no % self.contexts
        meta: dict[str, Any] = {
            "playwright": True,
            "playwright_include_page": True,
            "playwright_context": f"maps-{index}",
            "playwright_page_goto_kwargs": {"wait_until": "domcontentloaded"},
            "promise": want,
            "feed": True,
            **self._context_kwargs(index),
        }
        return scrapy.Request(
            self.page_url(cell),
            callback=self.parse_feed,
            errback=self.feed_failed,
            cb_kwargs={"cell": cell, "want": want},
            meta=meta,
            dont_filter=True,
        )

    def _context_kwargs(self, index: int) -> dict[str, Any]:
        """Context options (used when the context is created): its own proxy, when several."""
        if len(self.proxies) <= 1:
            return {}  # the launch-level proxy
        proxy = playwright_proxy(self.proxies[index % len(self.proxies)])
        return {"playwright_context_kwargs": {"proxy": proxy}}

    def _settle(self, response_or_failure: Response | Failure) -> None:
        request = response_or_failure.request
        if request is not None:
            self.promised = max(0, self.promised - int(request.meta.pop("promise", 0)))
            if request.meta.pop("feed", False):
                self.feeds_in_flight -= 1

    # --- places -------------------------------------------------------------------------

    def _new_places(self, records: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
        """Places not seen before (by any of their ids), until the limit."""
        for record in records:
            if not self._room():
                return
            keys = place_keys(record)
            if not keys:
                self._inc("leadflow/places_without_id")
            elif any(k in self.seen for k in keys):
                self._inc("leadflow/duplicates_skipped")
                continue
            self.seen.update(keys)
            self.emitted += 1
            yield {**record, "source": SOURCE}

    def _parse_raw(self, raw: Any, where: str) -> tuple[Any, list[dict[str, Any]]]:
        """(decoded payload, its places); a payload that is not Google's counts as an error."""
        try:
            payload = load_payload(raw)
            return payload, parse_payload(payload)
        except NotGoogleMapsPayload as exc:
            self._inc("leadflow/parse_errors")
            self.logger.warning("payload from %s: %s", where, exc)
            return None, []

    def _plan_cell(
        self, cell: Cell | None, total: int | None, payload: Any, places: list[dict[str, Any]]
    ) -> None:
        """After a cell's first page: split it into quadrants, or queue the rest of its list."""
        more_needed = self.limit == 0 or self.limit - self.emitted > 0
        if total is not None and total > MAX_RESULTS and more_needed:
            area = cell
            if area is None:
                # The site searched the query's own area (the city) without naming it: take
                # the area its camera shows, grown to cover every place it returned.
                area = union(
                    payload_viewport(payload),
                    cell_around(
                        (p["latitude"], p["longitude"])
                        for p in places
                        if p.get("latitude") is not None and p.get("longitude") is not None
                    ),
                )
            wants_more = self.limit == 0 or self.limit - self.emitted > MAX_RESULTS - len(places)
            if area is not None and area.depth < self.max_depth and wants_more:
                self._inc("leadflow/grid/splits")
                children = area.split(total, self.max_depth)
                self.frontier.extend(("probe", q, 0) for q in reversed(children))
                return
            if area is not None and area.depth >= self.max_depth:
                self._inc("leadflow/grid/truncated_cells")
                self.logger.warning(
                    "cell %s has %d places but the grid is at its depth limit (%d): only %d "
                    "are reachable there (LEADFLOW_GOOGLE_MAPS_GRID_MAX_DEPTH)",
                    area.vp,
                    total,
                    self.max_depth,
                    MAX_RESULTS,
                )
        self._inc("leadflow/grid/leaf_cells")
        size = min(total if total is not None else MAX_RESULTS, MAX_RESULTS)
        if self.mode == "browser":
            self.frontier.append(("feed", cell, size))
        elif total is not None:
            # The list's size is known: queue its remaining pages, first page on top.
            self.frontier.extend(
                ("page", cell, off) for off in reversed(range(PAGE_SIZE, size, PAGE_SIZE))
            )
        elif len(places) >= PAGE_SIZE:
            self.frontier.append(("page", cell, PAGE_SIZE))  # unknown size: page by page

    # --- the fast path (and the probes) --------------------------------------------------

    async def parse_search(
        self, response: Response, cell: Cell | None, offset: int, probe: bool
    ) -> AsyncIterator[Any]:
        self._settle(response)
        self._inc("leadflow/search_pages")
        if is_challenge(response.url):
            try:
                response = await self._pass_http_challenge(response)
            except ChallengeFailed:
                for request in self._pump():
                    yield request
                return
        payload, places = self._parse_raw(response.text, response.url)
        if probe:
            total = _header_int(response, TOTAL_HEADER)
            self._plan_cell(cell, total, payload, places)
        elif (
            self.mode == "fast"
            and _header_int(response, TOTAL_HEADER) is None
            and len(places) >= PAGE_SIZE
            and offset + PAGE_SIZE < MAX_RESULTS
        ):
            # No size header: the list goes on while pages come back full.
            self.frontier.append(("page", cell, offset + PAGE_SIZE))
        if self.mode == "fast":
            for item in self._new_places(places):
                yield item
        for request in self._pump():
            yield request

    def request_failed(self, failure: Failure) -> list[scrapy.Request]:
        self._settle(failure)
        self._inc("leadflow/search_failures")
        self.logger.warning(
            "search page %s failed: %s", failure.request.url, failure.getErrorMessage()
        )
        return self._pump()

    # --- the browser path ---------------------------------------------------------------

    async def parse_feed(
        self, response: Response, cell: Cell | None, want: int
    ) -> AsyncIterator[Any]:
        """Scroll one result feed and yield its places as the payload pages arrive."""
        page = response.meta["playwright_page"]
        # The feed's own URL: response.url is the challenge page when the first load was
        # challenged, and coming back there after passing would only loop.
        url = response.request.url if response.request is not None else self.page_url(cell)
        self._inc("leadflow/feed_pages")
        try:
            async for item in self._scroll(page, url, want):
                yield item
        except ChallengeFailed:
            pass
        except Exception as exc:  # a Playwright error must not end the crawl: log, go on
            self._inc("leadflow/feed_errors")
            self.logger.warning("feed %s failed: %s: %s", url, type(exc).__name__, exc)
        finally:
            self._settle(response)
            await page.close()
        for request in self._pump():
            yield request

    async def _scroll(self, page: Any, url: str, want: int) -> AsyncIterator[dict[str, Any]]:
        timeout_ms = self.scroll_timeout * 1000
        read = challenges = lost_contexts = 0
        found: set[tuple[str, str]] = set()  # this feed's places, however often it reloads
        while True:
            if is_challenge(page.url):
                challenges += 1
                if challenges > MAX_CHALLENGES_PER_FEED:
                    self._challenge_lost(page.url, f"feed challenged {challenges} times")
                await self._pass_browser_challenge(page, url)
                if not urlsplit(page.url).path.startswith("/maps/search/"):
                    # Sent somewhere else than the feed: open it again (the places
                    # already taken are skipped by id).
                    await page.goto(url, wait_until="domcontentloaded")
                read = 0  # the feed was reloaded: its payload list starts again
                continue
            try:
                # Places this feed may still have to bring: its list, or what the limit
                # leaves (other feeds run at the same time, so that is only an upper bound).
                room = want - len(found)
                if self.limit:
                    room = min(room, self.limit - self.emitted)
                step = await page.evaluate(_JS_SCROLL_FEED, [read, max(1, room), timeout_ms])
            except PlaywrightError:
                # The app navigated mid-step (its /search call was sent to the challenge
                # page, which it then shows): look where the tab is now.
                lost_contexts += 1
                if lost_contexts > MAX_CHALLENGES_PER_FEED:
                    raise
                await page.wait_for_load_state("domcontentloaded")
                continue
            for raw in step["payloads"]:
                read += 1
                _, places = self._parse_raw(raw, url)
                found.update(k for p in places for k in place_keys(p)[:1])
                for item in self._new_places(places):
                    yield item
            if step["end"] or len(found) >= want or not self._room():
                return
            if step["stalled"] and not is_challenge(page.url):
                self._inc("leadflow/feed_timeouts")
                self.logger.warning(
                    "feed %s stopped growing at %d payload pages (%d places) after %.0f s",
                    url,
                    read,
                    len(found),
                    self.scroll_timeout,
                )
                return

    async def feed_failed(self, failure: Failure) -> list[scrapy.Request]:
        self._settle(failure)
        self._inc("leadflow/feed_failures")
        page = failure.request.meta.get("playwright_page")
        if page is not None:
            await page.close()
        self.logger.warning("feed %s failed: %s", failure.request.url, failure.getErrorMessage())
        return self._pump()

    # --- CAPTCHA ------------------------------------------------------------------------

    async def _in_thread(self, func: Any, *args: Any) -> Any:
        # The client is synchronous (httpx + sleep between polls); its own pool lets several
        # challenges be solved at once without starving asyncio's default executor.
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="captcha")
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def _solve(self, sitekey: str, sorry_url: str) -> Solution:
        """A token for this challenge page; fatal 2captcha errors close the spider."""
        assert self.captcha is not None
        try:
            return await self._in_thread(self.captcha.solve_recaptcha_v2, sitekey, sorry_url)
        except CaptchaBalanceError as exc:
            self._fatal("captcha_balance", f"CAPTCHA solving stopped: {exc}")
        except CaptchaAuthError as exc:
            self._fatal("captcha_auth", f"CAPTCHA solving stopped: {exc}")
        raise AssertionError("unreachable")

    def _challenge_start(self, sorry_url: str, html: str) -> str:
        """The challenge's sitekey, or ChallengeFailed when it cannot be solved here."""
        self._inc("leadflow/captcha/challenges")
        if not self.captcha_enabled or self.captcha is None:
            self._challenge_lost(sorry_url, "CAPTCHA solving is off (LEADFLOW_CAPTCHA_ENABLED)")
        sitekey = find_recaptcha_sitekey(html)
        if not sitekey:
            self._challenge_lost(sorry_url, "the challenge page shows no reCAPTCHA sitekey")
        assert sitekey is not None
        return sitekey

    def _challenge_lost(self, sorry_url: str, why: str) -> None:
        self._inc("leadflow/captcha/challenges_failed")
        self.logger.error("CAPTCHA challenge %s not passed: %s", sorry_url, why)
        raise ChallengeFailed(why)

    async def _tokens(self, sitekey: str, sorry_url: str) -> AsyncIterator[Solution]:
        """Up to captcha_max_attempts tokens; unsolvable/time-outs count as attempts."""
        assert self.captcha is not None
        attempts = self.captcha.max_attempts
        last = ""
        for attempt in range(1, attempts + 1):
            try:
                yield await self._solve(sitekey, sorry_url)
            except CaptchaError as exc:  # unsolvable, time-out, network: try a new task
                last = str(exc)
                self.logger.warning("CAPTCHA attempt %d/%d: %s", attempt, attempts, exc)
        self._challenge_lost(sorry_url, f"no accepted token after {attempts} attempts {last}")

    async def _rejected(self, solution: Solution, sorry_url: str, status: int) -> None:
        """A submitted token did not pass: 403 is the site refusing it (reported as bad to
        2captcha, whose workers are paid per correct token); other errors are the site's."""
        assert self.captcha is not None
        if status != 403:
            self._inc("leadflow/captcha/submit_errors")
            self.logger.warning("submitting a CAPTCHA token for %s: HTTP %d", sorry_url, status)
            return
        self._inc("leadflow/captcha/rejected")
        self.logger.warning("site rejected CAPTCHA token %s for %s", solution.captcha_id, sorry_url)
        try:
            await self._in_thread(self.captcha.report_bad, solution.captcha_id)
        except CaptchaError as exc:  # a lost report must not lose the page
            self.logger.warning("reportbad %s failed: %s", solution.captcha_id, exc)

    async def _pass_http_challenge(self, response: Response) -> Response:
        """Solve and submit until the original content comes back (plain-HTTP path)."""
        assert self.crawler.engine is not None
        original = (response.meta.get("redirect_urls") or [response.url])[0]
        for _ in range(self.captcha.max_attempts + 1 if self.captcha else 1):
            sorry_url = response.url
            sitekey = self._challenge_start(sorry_url, response.text)
            async for solution in self._tokens(sitekey, sorry_url):
                submit = scrapy.FormRequest(
                    f"{self.base_url}/sorry/index",
                    formdata={
                        "g-recaptcha-response": solution.token,
                        "continue": _continue_url(sorry_url, original),
                    },
                    dont_filter=True,
                    # A rejected token is an answer to read, not an error to retry.
                    meta={"handle_httpstatus_list": [403]},
                )
                # Inline: the redirect to `continue` is followed, the exemption cookie kept.
                answer = await self.crawler.engine.download_async(submit)
                if answer.status >= 400:
                    await self._rejected(solution, sorry_url, answer.status)
                    continue
                self._inc("leadflow/captcha/passed")
                if not is_challenge(answer.url):
                    return answer
                response = answer  # the continued request was challenged again
                break
        self._challenge_lost(response.url, "challenged again after every accepted token")
        raise AssertionError("unreachable")

    async def _pass_browser_challenge(self, page: Any, feed_url: str) -> None:
        """Solve and submit through the page's form until the tab leaves /sorry/."""
        for _ in range(self.captcha.max_attempts + 1 if self.captcha else 1):
            sorry_url = page.url
            sitekey = self._challenge_start(sorry_url, await page.content())
            async for solution in self._tokens(sitekey, sorry_url):
                if not is_challenge(page.url):
                    await page.goto(sorry_url, wait_until="domcontentloaded")
                async with page.expect_navigation(wait_until="domcontentloaded") as navigation:
                    await page.evaluate(
                        _JS_SUBMIT_TOKEN, [solution.token, _continue_url(sorry_url, feed_url)]
                    )
                answer = await navigation.value
                if answer is not None and answer.status >= 400:
                    await self._rejected(solution, sorry_url, answer.status)
                    await page.goto(sorry_url, wait_until="domcontentloaded")
                    continue
                self._inc("leadflow/captcha/passed")
                if not is_challenge(page.url):
                    return
                break  # challenged again right away: a new challenge, new tokens
        self._challenge_lost(page.url, "challenged again after every accepted token")

    # --- stats ----------------------------------------------------------------------------

    def _inc(self, key: str, by: int = 1) -> None:
        if self.crawler.stats is not None:
            self.crawler.stats.inc_value(key, by)

    def _set(self, key: str, value: Any) -> None:
        if self.crawler.stats is not None:
            self.crawler.stats.set_value(key, value)

    def _closed(self, spider: scrapy.Spider, reason: str) -> None:
        """Put the run's CAPTCHA figures into the stats (the run summary shows them)."""
        if self.captcha is not None:
            solve = self.captcha.stats
            self._set("leadflow/captcha/attempted", solve.attempted)
            self._set("leadflow/captcha/solved", solve.solved)
            self._set("leadflow/captcha/failed", solve.failed)
            self._set("leadflow/captcha/reported_bad", solve.reported_bad)
            self._set("leadflow/captcha/cost", round(solve.cost, 5))
            self._set("leadflow/captcha/seconds", round(solve.seconds, 2))
            self._set("leadflow/captcha/solve_rate", round(solve.solve_rate, 4))
            if solve.attempted:
                self.captcha.log_stats(self.logger.logger)
            self.captcha.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._set("leadflow/places", self.emitted)
        if self.limit and self.emitted < self.limit and self._fatal_reason is None:
            self.logger.info(
                "google_maps: %d of %d places (the search has no more%s)",
                self.emitted,
                self.limit,
                ""
                if not self._stat("leadflow/captcha/challenges_failed")
                else ", or some were behind CAPTCHAs that were not passed",
            )

    def _stat(self, key: str) -> Any:
        return self.crawler.stats.get_value(key) if self.crawler.stats is not None else None
