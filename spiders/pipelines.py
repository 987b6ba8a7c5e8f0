"""Item pipelines for Leadflow crawls: light clean-up and per-source counts, never drops."""

from __future__ import annotations

from typing import Any, Self

from itemadapter import ItemAdapter
from scrapy.crawler import Crawler


def _strip(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list):
        return [s for s in (_strip(v) for v in value) if s is not None]
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items()}
    return value


class CleanAndCountPipeline:
    """Strip whitespace in string fields ('' becomes None) and count items per source.

    Counts go to the crawl stats as `leadflow/items/<source>`; the pipeline reads them from
    the stats file to decide whether a crawl worked.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        for key in list(adapter.keys()):
            adapter[key] = _strip(adapter[key])
        stats = self.crawler.stats
        if stats is not None:
            stats.inc_value(f"leadflow/items/{adapter.get('source') or 'unknown'}")
            if adapter.get("parse_error"):
                stats.inc_value("leadflow/items_with_parse_error")
        return item
