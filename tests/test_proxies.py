"""Proxy rotation: round robin, failure counting, cool-down, scheme filtering."""

from __future__ import annotations

import pytest

from spiders.proxies import BROWSER_SCHEMES, HTTP_SCHEMES, ProxyPool, mask_proxy
from tests.clock import FakeClock


def test_round_robin() -> None:
    pool = ProxyPool(["http://a:1", "http://b:1", "http://a:1"])
    assert [pool.acquire() for _ in range(4)] == [
        "http://a:1",
        "http://b:1",
        "http://a:1",
        "http://b:1",
    ]


def test_failing_proxy_cools_down_then_returns() -> None:
    clock = FakeClock(start=0.0)
    pool = ProxyPool(["http://a:1", "http://b:1"], max_failures=2, cooldown=30, clock=clock)
    assert pool.report_failure("http://a:1") is False
    pool.report_success("http://a:1")  # a success resets the run of failures
    assert pool.report_failure("http://a:1") is False
    assert pool.report_failure("http://a:1") is True
    assert pool.cooling() == ["http://a:1"]
    assert {pool.acquire() for _ in range(3)} == {"http://b:1"}
    clock.now = 31
    assert "http://a:1" in {pool.acquire() for _ in range(2)}


def test_all_cooling_uses_the_one_that_recovers_first() -> None:
    clock = FakeClock(start=0.0)
    pool = ProxyPool(["http://a:1", "http://b:1"], max_failures=1, cooldown=30, clock=clock)
    pool.report_failure("http://a:1")
    clock.now = 10
    pool.report_failure("http://b:1")
    assert pool.acquire() == "http://a:1"


def test_scheme_filtering_and_clear_error() -> None:
    urls = ["socks5://s:1080", "http://h:3128"]
    assert ProxyPool.for_schemes(urls, HTTP_SCHEMES).acquire() == "http://h:3128"
    browser = ProxyPool.for_schemes(urls, BROWSER_SCHEMES)
    assert {browser.acquire() for _ in range(2)} == set(urls)
    with pytest.raises(ValueError, match="none of the proxies"):
        ProxyPool.for_schemes(["socks5://s:1080"], HTTP_SCHEMES)
    assert not ProxyPool([])


def test_passwords_never_shown() -> None:
    assert mask_proxy("http://user:secret@proxy:3128") == "http://user:***@proxy:3128"
    assert mask_proxy("http://proxy:3128") == "http://proxy:3128"
