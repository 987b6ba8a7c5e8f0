"""Downloader middlewares for Leadflow crawls."""

from __future__ import annotations

from typing import Self

from scrapy import Request
from scrapy.crawler import Crawler


class LeadflowProxyMiddleware:
    """Send every request through `LEADFLOW_PROXY` (in sandbox mode: the sandbox server).

    The proxy is what lets crawls reach the sandbox's `.test` hosts without DNS. A request
    that already names a proxy (or `None` for none) keeps it, so spiders can opt out.
    """

    def __init__(self, proxy: str | None) -> None:
        self.proxy = proxy or None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler.settings.get("LEADFLOW_PROXY"))

    def process_request(self, request: Request) -> None:
        if self.proxy and "proxy" not in request.meta:
            request.meta["proxy"] = self.proxy
