"""Scrapy extensions for Leadflow crawls."""

from __future__ import annotations

import json
import os
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Self

from scrapy import Spider, signals
from scrapy.crawler import Crawler


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)


class StatsFileExtension:
    """Write the crawl's stats as JSON to `LEADFLOW_STATS_FILE` when the spider closes.

    A crawl subprocess exits 0 even when every request failed, so the pipeline judges a
    crawl by its item count and these stats (`finish_reason`, error counts).
    """

    def __init__(self, crawler: Crawler, path: str) -> None:
        self.crawler = crawler
        self.path = Path(path)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        from scrapy.exceptions import NotConfigured

        path = crawler.settings.get("LEADFLOW_STATS_FILE")
        if not path:
            raise NotConfigured("LEADFLOW_STATS_FILE not set")
        ext = cls(crawler, path)
        crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
        return ext

    def spider_closed(self, spider: Spider, reason: str) -> None:
        assert self.crawler.stats is not None
        stats = dict(self.crawler.stats.get_stats())
        stats["finish_reason"] = reason
        stats["spider"] = spider.name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(stats, default=_jsonable, indent=1, sort_keys=True))
        # Readers never see a half-written file.
        os.replace(tmp, self.path)
