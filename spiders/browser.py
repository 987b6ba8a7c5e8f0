"""Browser-path (scrapy-playwright + Debian's Chromium) helpers shared by settings and spiders.

No Scrapy import: `spiders.settings` builds `PLAYWRIGHT_LAUNCH_OPTIONS` from these, and the
`google_maps` spider gives each browser context its own proxy with `playwright_proxy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from spiders.proxies import BROWSER_SCHEMES, proxy_scheme

# Playwright cannot download its browsers on this machine; Debian's Chromium runs headless as
# root only without its sandbox, and without GPU / background traffic it is lighter and quieter.
CHROMIUM_ARGS: tuple[str, ...] = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
)
# Nothing a payload is read from: images, fonts and media only cost bandwidth and CPU.
ABORTED_RESOURCE_TYPES = frozenset({"image", "font", "media"})


def browser_proxies(urls: Sequence[str]) -> list[str]:
    """The proxies Chromium can use (http, https and socks5), in configured order."""
    return [u for u in urls if proxy_scheme(u) in BROWSER_SCHEMES]


def playwright_proxy(url: str) -> dict[str, str]:
    """A proxy URL as Playwright wants it: the server without credentials, which go apart."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    server = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    proxy = {"server": server}
    if parts.username:
        proxy["username"] = unquote(parts.username)
        proxy["password"] = unquote(parts.password or "")
    return proxy


def launch_options(chromium_path: str, proxies: Sequence[str]) -> dict[str, Any]:
    """`PLAYWRIGHT_LAUNCH_OPTIONS`: Debian's Chromium, headless, through the first proxy.

    The launch-level proxy is the default for every context; the spider may give a context
    another one (Chromium then routes that context through it).
    """
    options: dict[str, Any] = {
        "executable_path": chromium_path,
        "headless": True,
        "args": list(CHROMIUM_ARGS),
    }
    usable = browser_proxies(proxies)
    if usable:
        options["proxy"] = playwright_proxy(usable[0])
    return options


def abort_heavy_request(request: Any) -> bool:
    """`PLAYWRIGHT_ABORT_REQUEST`: drop images, fonts and media (a playwright Request), and
    the reCAPTCHA widget script: the spider submits 2captcha's token itself, and the widget
    would only wait on (or, offline, fail to reach) google.com."""
    return request.resource_type in ABORTED_RESOURCE_TYPES or "/recaptcha/" in request.url
