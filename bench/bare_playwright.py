"""The bench's baseline: a bare scrapy-playwright spider that only opens the given search pages
and scrolls each feed to its end-of-list marker; no payload reading, no items.

    scrapy runspider bench/bare_playwright.py -a urls_file=urls.txt

Run with `SCRAPY_SETTINGS_MODULE=spiders.settings`, so it gets the same Chromium, proxy,
context and page limits as the `google_maps` spider; bench/scrape.py compares page rates.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import scrapy
from scrapy.http import Response

_SCROLL_TO_END = """async (timeoutMs) => {
  const deadline = Date.now() + timeoutMs;
  while (!document.querySelector('.end-of-list') && Date.now() < deadline) {
    const feed = document.querySelector('[role="feed"]');
    if (feed) feed.scrollTop = feed.scrollHeight;
    await new Promise((r) => setTimeout(r, 50));
  }
  return !!document.querySelector('.end-of-list');
}"""


class BarePlaywrightSpider(scrapy.Spider):
    name = "bare_playwright"
    custom_settings = {
        "DOWNLOAD_HANDLERS": {
            "http": "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler",
            "https": "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler",
        },
        "ITEM_PIPELINES": {},
    }

    def __init__(self, urls_file: str = "", contexts: str = "2", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.urls = [u for u in Path(urls_file).read_text().splitlines() if u.strip()]
        self.contexts = max(1, int(contexts))

    async def start(self) -> AsyncIterator[scrapy.Request]:
        for n, url in enumerate(self.urls):
            yield scrapy.Request(
                url,
                callback=self.parse,
                dont_filter=True,
                meta={
                    "playwright": True,
                    "playwright_include_page": True,
                    "playwright_context": f"maps-{n % self.contexts}",
                    "playwright_page_goto_kwargs": {"wait_until": "domcontentloaded"},
                },
            )

    async def parse(self, response: Response, **kwargs: Any) -> None:
        page = response.meta["playwright_page"]
        try:
            ended = await page.evaluate(_SCROLL_TO_END, 30_000)
            self.crawler.stats.inc_value(
                "bare/pages_scrolled" if ended else "bare/pages_unfinished"
            )
        finally:
            await page.close()
