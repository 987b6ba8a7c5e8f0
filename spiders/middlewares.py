"""Downloader middlewares for Leadflow crawls: proxy rotation and retries with back-off."""

from __future__ import annotations

import asyncio
import logging
from typing import Self

from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.http import Response
from scrapy.settings import BaseSettings
from scrapy.statscollectors import StatsCollector

from spiders.proxies import HTTP_SCHEMES, ProxyPool, mask_proxy

logger = logging.getLogger(__name__)

# Statuses that say "this proxy is blocked or broken", not "this page is bad".
_PROXY_FAILURE_STATUSES = frozenset({403, 407, 429, 502, 503, 504})
_PROXY_META = "leadflow_proxy"
_DELAY_META = "leadflow_retry_delay"


class ProxyRotationMiddleware:
    """Route each request through the next healthy proxy of `LEADFLOW_PROXIES`.

    In sandbox mode the list is the sandbox server, which is what lets crawls reach the
    sandbox's `.test` hosts without DNS. A request that already names a proxy (or `None`
    for none) keeps it, so spiders can opt out. Failures (connection errors, and statuses
    that mean a blocked proxy) are counted per proxy; a proxy that fails too often in a row
    cools down and the rotation skips it.
    """

    def __init__(self, pool: ProxyPool, stats: StatsCollector | None) -> None:
        self.pool = pool
        self.stats = stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        settings = crawler.settings
        pool = ProxyPool.for_schemes(
            settings.getlist("LEADFLOW_PROXIES"),
            HTTP_SCHEMES,
            max_failures=settings.getint("LEADFLOW_PROXY_MAX_FAILURES", 3),
            cooldown=settings.getfloat("LEADFLOW_PROXY_COOLDOWN", 60.0),
        )
        return cls(pool, crawler.stats)

    def process_request(self, request: Request) -> None:
        if self.pool and "proxy" not in request.meta:
            proxy = self.pool.acquire()
            request.meta["proxy"] = proxy
            request.meta[_PROXY_META] = proxy

    def process_response(self, request: Request, response: Response) -> Response:
        proxy = request.meta.get(_PROXY_META)
        if proxy:
            if response.status in _PROXY_FAILURE_STATUSES:
                self._failed(proxy, f"HTTP {response.status}")
            else:
                self.pool.report_success(proxy)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        proxy = request.meta.get(_PROXY_META)
        if proxy:
            self._failed(proxy, type(exception).__name__)
            # The retry (RetryMiddleware) must pick a proxy afresh, not repeat this one.
            request.meta.pop("proxy", None)

    def _failed(self, proxy: str, reason: str) -> None:
        if self.stats is not None:
            self.stats.inc_value(f"leadflow/proxy_failures/{mask_proxy(proxy)}")
        if self.pool.report_failure(proxy):
            logger.warning(
                "proxy %s cooling down after repeated failures (%s)", mask_proxy(proxy), reason
            )


class BackoffRetryMiddleware(RetryMiddleware):
    """Scrapy's retry middleware, but a retried request waits first: `Retry-After` when the
    site sends one, else exponential back-off (`LEADFLOW_RETRY_BACKOFF`, doubling per try,
    capped at `LEADFLOW_RETRY_BACKOFF_MAX`). Only the retried request waits; others go on."""

    def __init__(self, settings: BaseSettings) -> None:
        super().__init__(settings)
        self.backoff = settings.getfloat("LEADFLOW_RETRY_BACKOFF", 1.0)
        self.backoff_max = settings.getfloat("LEADFLOW_RETRY_BACKOFF_MAX", 60.0)

    def _delay(self, retry: Request, response: Response | None) -> float:
        tries = int(retry.meta.get("retry_times", 1))
        delay = self.backoff * 2 ** (tries - 1)
        retry_after = response.headers.get(b"Retry-After") if response is not None else None
        if retry_after and retry_after.strip().isdigit():
            delay = float(retry_after.strip())
        return min(delay, self.backoff_max)

    def process_response(  # type: ignore[override]
        self, request: Request, response: Response, spider: Spider | None = None
    ) -> Request | Response:
        result = super().process_response(request, response)
        if isinstance(result, Request):
            result.meta[_DELAY_META] = self._delay(result, response)
        return result

    def process_exception(  # type: ignore[override]
        self, request: Request, exception: Exception, spider: Spider | None = None
    ) -> Request | Response | None:
        result = super().process_exception(request, exception)
        if isinstance(result, Request):
            result.meta[_DELAY_META] = self._delay(result, None)
        return result


class RetryDelayMiddleware:
    """Waits out the delay `BackoffRetryMiddleware` put on a retried request."""

    async def process_request(self, request: Request) -> None:
        delay = request.meta.pop(_DELAY_META, 0)
        if delay:
            await asyncio.sleep(delay)
