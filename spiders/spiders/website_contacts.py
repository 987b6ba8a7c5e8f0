"""The `website_contacts` spider: emails, phones and social profiles from businesses' own sites.

    scrapy crawl website_contacts -a input=sites.jsonl -O contacts.jsonl:jsonlines

`input` is a JSONL file of `{"lead_id": ..., "website": ...}` lines (tasks/contacts writes it).
For each site: the home page, then up to `LEADFLOW_CONTACTS_MAX_PAGES - 1` contact-like pages
it links to (contact, about, impressum, team...) on the same registered domain; depth 1, so
those pages' own links are not followed. A site gets `LEADFLOW_CONTACTS_SITE_TIME_LIMIT`
seconds from its first request: after that its queued requests are dropped and in-flight
ones time out (the crawl's throughput must not hinge on one slow host).

One item per lead, when the last request of its site has finished:
`{"source", "lead_id", "website", "emails", "phones", "socials", "pages", "error"}`.
A site that fails entirely (DNS, refused, 404, time-out, robots.txt) still yields its items,
with `error` set, so the stage can tell "no emails" from "could not look".
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import scrapy
from scrapy import Request, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response, TextResponse
from scrapy.settings import BaseSettings
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.internet.error import (
    ConnectionRefusedError,
    DNSLookupError,
    TCPTimedOutError,
)
from twisted.internet.error import (
    TimeoutError as TwistedTimeoutError,
)
from twisted.python.failure import Failure

from leadflow.settings import get_settings
from spiders.contacts.extract import contact_links, extract_contacts, same_site, site_key

SOURCE = "website_contacts"
TIME_LIMIT_MESSAGE = "site time limit reached"


def usable_website(raw: Any) -> str | None:
    """An http(s) URL for the site's home page, or None."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    url = raw.strip()
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in url:
        return None
    return url


@dataclass
class Site:
    """Everything found on one website so far, and its outstanding requests."""

    website: str
    lead_ids: list[str] = field(default_factory=list)
    pending: int = 0
    started: float | None = None  # monotonic time of its first request reaching the downloader
    requested: set[str] = field(default_factory=set)
    pages: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    socials: dict[str, str] = field(default_factory=dict)
    home_error: str | None = None
    done: bool = False

    def add(self, url: str, html: str) -> None:
        found = extract_contacts(html, url)
        self.emails += [e for e in found.emails if e not in self.emails]
        self.phones += [p for p in found.phones if p not in self.phones]
        for network, profile in found.socials.items():
            self.socials.setdefault(network, profile)


def failure_message(failure: Failure) -> str:
    """A short reason a page could not be fetched, for the item's `error`."""
    if failure.check(HttpError):
        return f"HTTP {failure.value.response.status}"
    if failure.check(DNSLookupError):
        return "DNS lookup failed"
    if failure.check(ConnectionRefusedError):
        return "connection refused"
    if failure.check(TwistedTimeoutError, TCPTimedOutError):
        return "timed out"
    if failure.check(IgnoreRequest):
        return str(failure.value) or "request ignored"
    message = failure.getErrorMessage() or ""
    return f"{failure.type.__name__}: {message}"[:300] if failure.type else message[:300]


class SiteTimeLimitMiddleware:
    """Downloader middleware: start each site's clock, drop its requests once time is up.

    Placed before RobotsTxtMiddleware, so waiting for a site's robots.txt counts too. A
    request that may still go gets a `download_timeout` no longer than the time left.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def process_request(self, request: Request) -> None:
        spider = self.crawler.spider
        key = request.meta.get("contacts_site")
        if key is None or not isinstance(spider, WebsiteContactsSpider):
            return
        left = spider.time_left(key)
        if left <= 0:
            spider.inc("leadflow/contacts/dropped_by_time_limit")
            raise IgnoreRequest(TIME_LIMIT_MESSAGE)
        default = float(self.crawler.settings.getfloat("DOWNLOAD_TIMEOUT", 180))
        request.meta["download_timeout"] = min(
            float(request.meta.get("download_timeout") or default), max(left, 1.0)
        )


class WebsiteContactsSpider(scrapy.Spider):
    name = "website_contacts"
    # Business pages are small; a multi-megabyte "home page" is a download, not a page.
    custom_settings = {"DOWNLOAD_MAXSIZE": 4 * 1024 * 1024, "DOWNLOAD_WARNSIZE": 0}

    # `input` shadows a builtin, but it is the spider argument's name (`-a input=PATH`).
    def __init__(self, input: str = "", *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not input:
            raise ValueError("website_contacts needs -a input=PATH (a JSONL of lead_id, website)")
        self.input_path = Path(input)
        self.sites: dict[str, Site] = {}
        self.max_pages = 4
        self.time_limit = 20.0

    @classmethod
    def update_settings(cls, settings: BaseSettings) -> None:
        super().update_settings(settings)
        # Added to the project's middlewares (a custom_settings dict would replace them).
        middlewares = dict(settings.getdict("DOWNLOADER_MIDDLEWARES"))
        middlewares[f"{__name__}.SiteTimeLimitMiddleware"] = 50
        settings.set("DOWNLOADER_MIDDLEWARES", middlewares, priority="spider")

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        # `-s LEADFLOW_CONTACTS_...` (what tasks/contacts passes) wins over the environment.
        defaults = get_settings()
        spider.max_pages = max(
            1,
            crawler.settings.getint(
                "LEADFLOW_CONTACTS_MAX_PAGES", defaults.contacts_max_pages_per_site
            ),
        )
        spider.time_limit = crawler.settings.getfloat(
            "LEADFLOW_CONTACTS_SITE_TIME_LIMIT", defaults.contacts_site_time_limit
        )
        crawler.signals.connect(spider.on_closed, signal=signals.spider_closed)
        return spider

    # --- input ---------------------------------------------------------------------------

    def read_input(self) -> Iterator[dict[str, Any]]:
        """Group the input's leads by site; yield an error item for each unusable line."""
        with self.input_path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    self.logger.error("input line %d is not JSON: %.200s", number, line)
                    self.inc("leadflow/contacts/bad_input")
                    continue
                lead_id = str(row.get("lead_id") or "") if isinstance(row, dict) else ""
                website = usable_website(row.get("website")) if lead_id else None
                if not lead_id or website is None:
                    self.inc("leadflow/contacts/bad_input")
                    if lead_id:
                        yield self._item(lead_id, Site(website=str(row.get("website") or "")),
                                         error="not an http(s) website")  # fmt: skip
                    continue
                site = self.sites.setdefault(site_key(website), Site(website=website))
                if lead_id not in site.lead_ids:
                    site.lead_ids.append(lead_id)

    async def start(self) -> AsyncIterator[dict[str, Any] | Request]:
        for item in self.read_input():
            yield item
        self.logger.info(
            "%d sites, up to %d pages and %gs each",
            len(self.sites), self.max_pages, self.time_limit,
        )  # fmt: skip
        for key, site in self.sites.items():
            self.inc("leadflow/contacts/sites")
            yield self._request(key, site, site.website, self.parse_home, home=True)

    # --- crawling ------------------------------------------------------------------------

    def _request(
        self, key: str, site: Site, url: str, callback: Any, *, home: bool = False
    ) -> Request:
        site.pending += 1
        site.requested.add(url)
        return Request(
            url,
            callback=callback,
            errback=self.page_failed,
            # The spider de-duplicates per site; the global filter would drop a request
            # without calling back, and the site would never finish.
            dont_filter=True,
            meta={"contacts_site": key, "contacts_home": home},
        )

    def time_left(self, key: str) -> float:
        site = self.sites.get(key)
        if site is None:
            return float("inf")
        if site.started is None:
            site.started = time.monotonic()
        return self.time_limit - (time.monotonic() - site.started)

    def _site(self, meta: dict[str, Any]) -> tuple[str, Site]:
        key = meta["contacts_site"]
        return key, self.sites[key]

    def _read_page(self, site: Site, response: Response) -> str | None:
        site.pages.append(response.url)
        self.inc("leadflow/contacts/pages")
        if not isinstance(response, TextResponse):
            return None  # an image or PDF where a page was expected: nothing to read
        try:
            html = response.text
            site.add(response.url, html)
        except Exception:
            # A page the extractors choke on must not stall its site (the item would never
            # be yielded): log it, count it, and carry on with the other pages.
            self.logger.exception("could not read %s", response.url)
            self.inc("leadflow/contacts/extract_errors")
            return None
        return html

    def parse_home(self, response: Response) -> Iterator[Any]:
        key, site = self._site(response.meta)
        html = self._read_page(site, response)
        room = self.max_pages - 1
        if html is not None and room > 0:
            if self.time_left(key) <= 0:
                self.inc("leadflow/contacts/sites_out_of_time")
            else:
                for url in self._contact_links(html, response.url):
                    if room == 0:
                        break
                    # Same registered domain as the lead's website, not merely as wherever
                    # the home page redirected to (a parked or sold domain is not the lead).
                    if url in site.requested or not same_site(url, site.website):
                        continue
                    room -= 1
                    yield self._request(key, site, url, self.parse_page)
        yield from self._done(site)

    def _contact_links(self, html: str, url: str) -> list[str]:
        try:
            return contact_links(html, url)
        except Exception:  # as in _read_page: the site must still finish
            self.logger.exception("could not read the links of %s", url)
            self.inc("leadflow/contacts/extract_errors")
            return []

    def parse_page(self, response: Response) -> Iterator[dict[str, Any]]:
        _, site = self._site(response.meta)
        self._read_page(site, response)
        yield from self._done(site)

    def page_failed(self, failure: Failure) -> Iterator[dict[str, Any]]:
        request: Request = failure.request  # type: ignore[attr-defined]  # set by Scrapy
        key, site = self._site(request.meta)
        message = failure_message(failure)
        if request.meta.get("contacts_home"):
            site.home_error = message
        self.logger.info("%s: %s (%s)", key, message, request.url)
        self.inc("leadflow/contacts/page_failures")
        yield from self._done(site)

    def _done(self, site: Site) -> Iterator[dict[str, Any]]:
        """Count one finished request; when it was the site's last, yield its items."""
        site.pending -= 1
        if site.pending > 0 or site.done:
            return
        site.done = True
        error = None
        if not site.pages:
            error = site.home_error or "no page could be fetched"
            self.inc("leadflow/contacts/sites_failed")
        self.inc("leadflow/contacts/emails", len(site.emails))
        for lead_id in site.lead_ids:
            yield self._item(lead_id, site, error)

    def _item(self, lead_id: str, site: Site, error: str | None) -> dict[str, Any]:
        return {
            "source": SOURCE,
            "lead_id": lead_id,
            "website": site.website,
            "emails": list(site.emails),
            "phones": list(site.phones),
            "socials": dict(site.socials),
            "pages": list(site.pages),
            "error": error,
        }

    def on_closed(self, spider: scrapy.Spider, reason: str) -> None:
        # Sites cut off by a close (CLOSESPIDER_TIMEOUT, shutdown) yield nothing; the stage
        # marks their leads. Logged here so the log says which and why.
        unfinished = [key for key, site in self.sites.items() if not site.done]
        if unfinished:
            self.inc("leadflow/contacts/sites_unfinished", len(unfinished))
            self.logger.warning(
                "closed (%s) with %d unfinished sites, e.g. %s",
                reason, len(unfinished), ", ".join(unfinished[:5]),
            )  # fmt: skip

    def inc(self, key: str, count: int = 1) -> None:
        if self.crawler.stats is not None:
            self.crawler.stats.inc_value(key, count)
