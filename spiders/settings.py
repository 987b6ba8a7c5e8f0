"""Scrapy settings for Leadflow crawls, read from Leadflow's settings.

Crawls run as `python -m scrapy crawl ...` subprocesses that inherit the LEADFLOW_* environment,
so `leadflow.settings.get_settings()` here configures every crawl (politeness, time-outs, the
proxy). `-s NAME=value` on the command line still overrides any of them.
"""

from __future__ import annotations

from leadflow.settings import get_settings
from spiders.browser import launch_options

_s = get_settings()

BOT_NAME = "leadflow"
SPIDER_MODULES = ["spiders.spiders"]
NEWSPIDER_MODULE = "spiders.spiders"

USER_AGENT = _s.user_agent
ROBOTSTXT_OBEY = _s.crawl_obey_robots

CONCURRENT_REQUESTS = _s.crawl_concurrency
CONCURRENT_REQUESTS_PER_DOMAIN = _s.crawl_concurrency_per_domain
DOWNLOAD_TIMEOUT = _s.crawl_download_timeout
# AutoThrottle never goes below it.
DOWNLOAD_DELAY = _s.crawl_download_delay

AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = _s.autothrottle_start_delay
AUTOTHROTTLE_MAX_DELAY = _s.autothrottle_max_delay
AUTOTHROTTLE_TARGET_CONCURRENCY = _s.autothrottle_target_concurrency

# Google Maps grid probes (one tiny search per cell, asking only the cell's size) get their own
# download slot: each split level waits on the one before, so AutoThrottle's spacing would
# add up level after level while the browser's feed pages wait for their cells. The slot's
# concurrency is the politeness cap (`LEADFLOW_GOOGLE_MAPS_PROBE_CONCURRENCY`).
PROBE_SLOT = "google-maps-probes"
DOWNLOAD_SLOTS = {PROBE_SLOT: {"concurrency": _s.google_maps_probe_concurrency, "delay": 0}}

RETRY_ENABLED = True
RETRY_TIMES = _s.crawl_retry_times
RETRY_HTTP_CODES = [429, 500, 502, 503, 504, 522, 524, 408]

# No listening ports from a crawl subprocess.
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False

LOG_LEVEL = "INFO"
FEED_EXPORT_ENCODING = "utf-8"

DOWNLOADER_MIDDLEWARES = {
    # Before Scrapy's HttpProxyMiddleware (750), which acts on meta["proxy"].
    "spiders.middlewares.ProxyRotationMiddleware": 350,
    # Replaces Scrapy's RetryMiddleware (550): the same retries, with back-off.
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "spiders.middlewares.BackoffRetryMiddleware": 550,
    # Closest to the downloader, so a retried request waits right before it is sent.
    "spiders.middlewares.RetryDelayMiddleware": 950,
}
ITEM_PIPELINES = {
    "spiders.pipelines.CleanAndCountPipeline": 100,
}
EXTENSIONS = {
    "spiders.extensions.StatsFileExtension": 900,
}

# Leadflow's own Scrapy settings (overridable with -s).
LEADFLOW_PROXIES = _s.crawl_proxies
LEADFLOW_PROXY_MAX_FAILURES = _s.proxy_max_failures
LEADFLOW_PROXY_COOLDOWN = _s.proxy_cooldown
LEADFLOW_RETRY_BACKOFF = _s.crawl_retry_backoff
LEADFLOW_RETRY_BACKOFF_MAX = _s.crawl_retry_backoff_max
LEADFLOW_DIRECTORY_URL = _s.directory_url
LEADFLOW_STATS_FILE = ""  # path for the stats JSON written at spider close; empty = none
LEADFLOW_GOOGLE_MAPS_URL = _s.google_maps_url
LEADFLOW_GOOGLE_MAPS_MODE = _s.google_maps_mode
LEADFLOW_GOOGLE_MAPS_GRID_MAX_DEPTH = _s.google_maps_grid_max_depth
LEADFLOW_GOOGLE_MAPS_SCROLL_TIMEOUT = _s.google_maps_scroll_timeout
LEADFLOW_CAPTCHA_ENABLED = _s.captcha_enabled

# The browser path (scrapy-playwright). Inert unless a spider installs the Playwright download
# handler in its custom_settings (only `google_maps` does), so other crawls never start Chromium.
PLAYWRIGHT_BROWSER_TYPE = "chromium"
PLAYWRIGHT_LAUNCH_OPTIONS = launch_options(_s.chromium_path, _s.crawl_proxies)
PLAYWRIGHT_MAX_CONTEXTS = _s.browser_contexts
PLAYWRIGHT_MAX_PAGES_PER_CONTEXT = _s.browser_pages_per_context
PLAYWRIGHT_ABORT_REQUEST = "spiders.browser.abort_heavy_request"
