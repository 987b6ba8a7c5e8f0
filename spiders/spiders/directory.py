"""The `directory` spider: businesses from the (sandbox) business directory's search.

    scrapy crawl directory -a category=dentist -a location="Austin, TX" -a limit=50

Starts at `<LEADFLOW_DIRECTORY_URL>/search?category=..&location=..`, follows each result's
detail page and the rel=next pages until `limit` detail pages are scheduled (0 = all).
A detail page the parser cannot read still yields an item, with `parse_error` set, so the
pipeline can quarantine it with a reason instead of losing it silently.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlencode

import scrapy
from scrapy.http import Response
from twisted.python.failure import Failure

from spiders.directory.parse import ParseError, parse_detail_page, parse_listing_page
from spiders.items import RAW_FIELDS, BusinessItem
from spiders.search import SearchSpider

SOURCE = "directory"


class DirectorySpider(SearchSpider):
    name = "directory"

    def __init__(
        self,
        category: str = "",
        location: str = "",
        limit: str | int = "0",
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(category, location, limit, *args, **kwargs)
        self.scheduled = 0

    def start_url(self) -> str:
        base = str(self.settings.get("LEADFLOW_DIRECTORY_URL") or "http://directory.test")
        params = {k: v for k, v in (("category", self.category), ("location", self.location)) if v}
        query = urlencode(params)
        return f"{base.rstrip('/')}/search" + (f"?{query}" if query else "")

    async def start(self) -> AsyncIterator[scrapy.Request]:
        yield scrapy.Request(self.start_url(), callback=self.parse)

    def _room(self) -> bool:
        return self.limit == 0 or self.scheduled < self.limit

    def parse(self, response: Response, **kwargs: Any) -> Iterator[scrapy.Request]:
        try:
            page = parse_listing_page(response.text, response.url)
        except ParseError as exc:
            self.logger.error("listing page: %s", exc)
            self._inc("leadflow/listing_parse_errors")
            return
        for url in page.detail_urls:
            if not self._room():
                return
            self.scheduled += 1
            yield scrapy.Request(url, callback=self.parse_detail, errback=self.detail_failed)
        if page.next_url and self._room():
            # After this page's details, so a limited crawl does not fetch pages it won't use.
            yield scrapy.Request(page.next_url, callback=self.parse, priority=-1)

    def parse_detail(self, response: Response) -> Iterator[BusinessItem]:
        try:
            record = parse_detail_page(response.text, response.url)
        except ParseError as exc:
            self._inc("leadflow/parse_errors")
            self.logger.warning("detail page: %s", exc)
            record = dict.fromkeys(RAW_FIELDS)
            record.update(
                source=SOURCE,
                source_id=response.url.rstrip("/").rsplit("/", 1)[-1],
                url=response.url,
                parse_error=str(exc),
            )
        record["source"] = SOURCE
        yield BusinessItem(**{k: record.get(k) for k in RAW_FIELDS})

    def detail_failed(self, failure: Failure) -> None:
        self._inc("leadflow/detail_failures")
        self.logger.warning("detail page failed: %s", failure.getErrorMessage())

    def _inc(self, key: str) -> None:
        if self.crawler.stats is not None:
            self.crawler.stats.inc_value(key)
