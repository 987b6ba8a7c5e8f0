"""Stage `scrape`: run each source's spider as a subprocess and collect its raw items.

Scrapy runs in its own process per crawl (the Twisted reactor cannot restart in-process), with
items written to `<run folder>/<source>.jsonl` and kept there. The exit code says nothing
(0 even when every request failed), so success is decided from the item count and the stats
file the `spiders.extensions` extension writes at close.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from connectors.mongo import shared_store
from leadflow.settings import PROJECT_DIR, Settings, get_settings
from models.search import SearchSpec
from models.suppression import Suppressions, scrub_file

SPIDERS: dict[str, str] = {"directory": "directory", "google_maps": "google_maps"}


class CrawlFailed(RuntimeError):
    """A crawl produced nothing usable; the message says why, from its stats and log."""


@dataclass
class CrawlResult:
    source: str
    items_path: Path
    stats_path: Path
    log_path: Path
    item_count: int = 0
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return {
            "items": self.item_count,
            "requests": int(self.stats.get("downloader/request_count", 0)),
            "parse_errors": int(self.stats.get("leadflow/parse_errors", 0)),
        }

    def records(self) -> Iterator[dict[str, Any]]:
        """The crawl's items, read from its feed one at a time (a feed can be large)."""
        return iter_items(self.items_path, self.source)

    def slices(self, parts: int) -> list[FeedSlice]:
        return feed_slices(self.items_path, self.source, parts)


def crawl_command(
    source: str, spec: SearchSpec, *, items_path: Path, stats_path: Path, log_path: Path
) -> list[str]:
    spider = SPIDERS[source]
    args = [sys.executable, "-m", "scrapy", "crawl", spider, "-a", f"limit={spec.limit}"]
    if spec.category:
        args += ["-a", f"category={spec.category}"]
    if spec.location:
        args += ["-a", f"location={spec.location}"]
    if spec.bbox:
        args += ["-a", f"bbox={spec.bbox.model_dump_json()}"]
    return [
        *args,
        "-O", f"{items_path}:jsonlines",
        "-s", f"LEADFLOW_STATS_FILE={stats_path}",
        "-s", f"LOG_FILE={log_path}",
    ]  # fmt: skip


def crawl_env() -> dict[str, str]:
    """The environment of a crawl subprocess: ours (LEADFLOW_* configures it) plus the project."""
    return {
        **os.environ,
        "SCRAPY_SETTINGS_MODULE": "spiders.settings",
        "PYTHONPATH": str(PROJECT_DIR),
    }


def run_crawl_process(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a `scrapy crawl` subprocess; `subprocess.TimeoutExpired` (after killing it) when it
    outlives `timeout`. Its exit code says nothing: callers judge it by items and stats."""
    return subprocess.run(
        command,
        cwd=PROJECT_DIR,
        env=crawl_env(),
        timeout=timeout,
        capture_output=True,
        text=True,
        check=False,
    )


def failure_summary(stats: dict[str, Any]) -> str:
    """The stats that explain an empty crawl: errors by kind and responses by status."""
    interesting = {
        key: value
        for key, value in stats.items()
        if key.startswith(("downloader/exception_type_count/", "downloader/response_status_count/"))
        or key
        in ("finish_reason", "retry/max_reached", "robotstxt/forbidden", "leadflow/parse_errors")
    }
    if not interesting:
        return "no requests completed"
    return ", ".join(
        f"{k.rsplit('/', 1)[-1] if '/' in k else k}={v}" for k, v in sorted(interesting.items())
    )


def log_tail(path: Path, lines: int = 5) -> str:
    if not path.exists():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    errors = [line for line in text if " ERROR" in line or "Traceback" in line]
    return "\n".join((errors or text)[-lines:])


@dataclass(frozen=True)
class FeedSlice:
    """Whole lines `[start, end)` (bytes) of a JSONL feed; `first_line` numbers the first."""

    path: Path
    source: str
    start: int = 0
    end: int | None = None
    first_line: int = 1

    def records(self) -> Iterator[dict[str, Any]]:
        return iter_items(self.path, self.source, self.start, self.end, self.first_line)


def feed_slices(path: Path, source: str, parts: int) -> list[FeedSlice]:
    """Cut a feed into about `parts` slices of whole lines, for readers working in parallel."""
    if not path.exists():
        return []
    size = path.stat().st_size
    bounds = [0]
    lines_before = [0]
    with path.open("rb") as feed:
        for part in range(1, max(parts, 1)):
            target = max(size * part // parts, bounds[-1])
            feed.seek(target)
            feed.readline()  # to the end of the line the cut falls in
            bounds.append(min(feed.tell(), size))
        # Line numbers of the cuts, so a bad line is reported by its number in the whole feed.
        feed.seek(0)
        for previous, bound in pairwise(bounds):
            lines_before.append(lines_before[-1] + feed.read(bound - previous).count(b"\n"))
    bounds.append(size)
    return [
        FeedSlice(path, source, start, end, first_line=before + 1)
        for start, end, before in zip(bounds, bounds[1:], lines_before, strict=False)
        if end > start
    ]


def iter_items(
    path: Path, source: str, start: int = 0, end: int | None = None, first_line: int = 1
) -> Iterator[dict[str, Any]]:
    """Read a JSONL feed (or the lines of it from byte `start` to `end`); a line that is not
    JSON becomes a parse-error record, not a loss."""
    if not path.exists():
        return
    with path.open("rb") as feed:
        feed.seek(start)
        position = start
        for number, line in enumerate(feed, first_line):
            if end is not None and position >= end:
                return
            position += len(line)
            if not line.strip():
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield {
                    "source": source,
                    "source_id": f"{path.name}:{number}",
                    "parse_error": f"line {number} of {path.name} is not JSON: {exc}",
                    "raw_line": line[:2000].decode("utf-8", "replace"),
                }


def read_items(path: Path, source: str) -> list[dict[str, Any]]:
    return list(iter_items(path, source))


def count_items(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open(encoding="utf-8") as feed:
        return sum(1 for line in feed if line.strip())


def crawl(
    source: str, spec: SearchSpec, run_dir: Path, settings: Settings | None = None
) -> CrawlResult:
    """Run one spider to completion (or its time limit) and return its items and stats."""
    settings = settings or get_settings()
    if source not in SPIDERS:
        raise CrawlFailed(f"unknown source {source!r}; known: {', '.join(SPIDERS)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    result = CrawlResult(
        source=source,
        items_path=run_dir / f"{source}.jsonl",
        stats_path=run_dir / f"{source}.stats.json",
        log_path=run_dir / f"{source}.log",
    )
    command = crawl_command(
        source,
        spec,
        items_path=result.items_path,
        stats_path=result.stats_path,
        log_path=result.log_path,
    )
    try:
        completed = run_crawl_process(command, settings.crawl_timeout)
    except subprocess.TimeoutExpired as exc:
        # subprocess.run has already killed the crawl; keep what it wrote for inspection.
        raise CrawlFailed(
            f"crawl of {source} exceeded its time limit of {settings.crawl_timeout:g}s and was "
            f"stopped after {count_items(result.items_path)} items (LEADFLOW_CRAWL_TIMEOUT); log: {result.log_path}"
        ) from exc

    if result.stats_path.exists():
        result.stats = json.loads(result.stats_path.read_text(encoding="utf-8"))
    result.item_count = count_items(result.items_path)
    if fatal := result.stats.get("leadflow/fatal_error"):
        # The spider stopped itself for a reason that makes its output incomplete (e.g. the
        # CAPTCHA balance ran out): fail loudly rather than pass a partial crawl as a success.
        raise CrawlFailed(
            f"crawl of {source} for {spec.describe()} stopped "
            f"({result.stats.get('finish_reason', 'unknown')}): {fatal} "
            f"[{result.item_count} items kept in {result.items_path}]. Log: {result.log_path}"
        )
    if not result.item_count:
        detail = log_tail(result.log_path) or (completed.stderr or "").strip()[-1000:]
        raise CrawlFailed(
            f"crawl of {source} for {spec.describe()} produced no items "
            f"(exit code {completed.returncode}; {failure_summary(result.stats)}). "
            f"Log: {result.log_path}" + (f"\n{detail}" if detail else "")
        )
    return result


def scrape(spec: SearchSpec, run_id: str, settings: Settings | None = None) -> list[CrawlResult]:
    """Crawl every source the spec names, into the run's folder."""
    settings = settings or get_settings()
    run_dir = settings.runs_dir / run_id
    return [crawl(source, spec, run_dir, settings) for source in spec.sources]


def scrub_run_files(run_id: str, suppressed: Suppressions) -> list[Path]:
    """The run folder's files with suppressed emails replaced: an address someone had
    forgotten that a site still shows is not kept in the raw crawl output either."""
    run_dir = get_settings().runs_dir / run_id
    if not suppressed or not run_dir.exists():
        return []
    return [
        path
        for path in sorted(run_dir.iterdir())
        if path.is_file() and scrub_file(path, suppressed)
    ]


@task(name="scrape", cache_policy=NO_CACHE, persist_result=False)
def scrape_task(spec: SearchSpec, run_id: str) -> list[CrawlResult]:
    """Crawl the spec's sources; their feeds stay in the run folder for `normalize` to read."""
    logger = get_run_logger()
    results = scrape(spec, run_id)
    scrub_run_files(run_id, shared_store().suppressions())
    for result in results:
        logger.info("%s: %s (items in %s)", result.source, result.counts, result.items_path)
    shared_store().record_stage(run_id, "scrape", {r.source: r.counts for r in results})
    return results
