"""Proxy rotation shared by the plain-HTTP (Scrapy) and browser (Playwright) crawl paths.

Pure Python, no Scrapy import: round robin over the configured proxies, skipping one that
failed `max_failures` times in a row until its cool-down has passed. When every proxy is
cooling down the one that recovers soonest is used rather than stalling the crawl.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

HTTP_SCHEMES = frozenset({"http", "https"})
BROWSER_SCHEMES = frozenset({"http", "https", "socks5"})


def proxy_scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()


def mask_proxy(url: str) -> str:
    """The proxy URL without its password, for logs and stats."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.username}:***@{host}{port}"


@dataclass
class _ProxyState:
    url: str
    failures: int = 0
    cooling_until: float = 0.0
    used: int = 0


@dataclass
class ProxyPool:
    """Round-robin proxies with per-proxy failure counting and cool-down."""

    urls: Sequence[str]
    max_failures: int = 3
    cooldown: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _states: list[_ProxyState] = field(init=False)
    _next: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._states = [_ProxyState(url) for url in dict.fromkeys(self.urls)]

    @classmethod
    def for_schemes(
        cls, urls: Sequence[str], schemes: frozenset[str], **kwargs: float
    ) -> ProxyPool:
        """Only the proxies a crawl path can use (Scrapy's downloader speaks no SOCKS)."""
        unusable = [mask_proxy(u) for u in urls if proxy_scheme(u) not in schemes]
        usable = [u for u in urls if proxy_scheme(u) in schemes]
        if urls and not usable:
            raise ValueError(
                f"none of the proxies {unusable} can be used here (supported: {sorted(schemes)})"
            )
        return cls(usable, **kwargs)  # type: ignore[arg-type]

    def __bool__(self) -> bool:
        return bool(self._states)

    def acquire(self) -> str | None:
        if not self._states:
            return None
        now = self.clock()
        count = len(self._states)
        for offset in range(count):
            state = self._states[(self._next + offset) % count]
            if state.cooling_until <= now:
                self._next = (self._next + offset + 1) % count
                state.used += 1
                return state.url
        soonest = min(self._states, key=lambda s: s.cooling_until)
        soonest.used += 1
        return soonest.url

    def _state(self, url: str) -> _ProxyState | None:
        return next((s for s in self._states if s.url == url), None)

    def report_failure(self, url: str) -> bool:
        """Count a failure; True when this one put the proxy into cool-down."""
        state = self._state(url)
        if state is None:
            return False
        state.failures += 1
        if state.failures >= self.max_failures:
            state.failures = 0
            state.cooling_until = self.clock() + self.cooldown
            return True
        return False

    def report_success(self, url: str) -> None:
        state = self._state(url)
        if state is not None:
            state.failures = 0

    def cooling(self) -> list[str]:
        now = self.clock()
        return [s.url for s in self._states if s.cooling_until > now]
