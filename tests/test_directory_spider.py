"""The `directory` spider end to end: a sandbox subprocess, and the exact crawl command the
pipeline runs (through the sandbox as HTTP proxy), compared with the generator's ground truth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.directory.generate import Directory, generate, raw_record
from tests.servers import free_port, sandbox_process

REPO = Path(__file__).resolve().parent.parent
SEED, BUSINESSES = 42, 500


@pytest.fixture(scope="module")
def world() -> Directory:
    return generate(SEED, BUSINESSES)


@pytest.fixture(scope="module")
def sandbox_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    data = tmp_path_factory.mktemp("sandbox")
    with sandbox_process(
        data, seed=SEED, businesses=BUSINESSES, args=["--latency-ms", "0"]
    ) as port:
        assert (data / "ground_truth.json").exists()
        yield port


def crawl(port: int, workdir: Path, *args: str) -> tuple[list[dict], dict]:
    """Run the crawl exactly as tasks/scrape does and return (items, stats)."""
    # The session's LEADFLOW_* environment is kept; only what routes the crawl is pinned.
    env = dict(os.environ)
    for key in ("LEADFLOW_PROXY_URLS", "LEADFLOW_DIRECTORY_URL", "LEADFLOW_HOST"):
        env.pop(key, None)
    env.update(
        LEADFLOW_SANDBOX="1",
        LEADFLOW_SANDBOX_PORT=str(port),
        SCRAPY_SETTINGS_MODULE="spiders.settings",
    )
    out, stats, log = workdir / "out.jsonl", workdir / "stats.json", workdir / "crawl.log"
    cmd = [
        sys.executable, "-m", "scrapy", "crawl", "directory", *args,
        "-O", f"{out}:jsonlines", "-s", f"LEADFLOW_STATS_FILE={stats}", "-s", f"LOG_FILE={log}",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert stats.exists(), log.read_text()[-3000:] if log.exists() else "no log"
    items = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return items, json.loads(stats.read_text())


def test_crawl_yields_every_listing_of_the_filter(
    sandbox_port: int, world: Directory, tmp_path: Path
) -> None:
    # A city with a malformed page in it, so the error path is exercised too; a category
    # filter is checked through the slug below.
    cities = Counter(lst.city_key for lst in world.listings if lst.malformed)
    city = min(cities, key=lambda c: sum(1 for x in world.listings if x.city_key == c))
    location = {"austin": "Austin, TX", "seattle": "Seattle, WA", "london": "London, UK",
                "berlin": "Berlin, Germany", "athens": "Athens, Greece"}[city]  # fmt: skip
    expected = {x.listing_id: raw_record(x) for x in world.listings if x.city_key == city}
    assert len(expected) > 20  # more than one results page

    items, stats = crawl(sandbox_port, tmp_path, "-a", f"location={location}", "-a", "limit=0")

    assert len(items) == len(expected)
    assert {i["source_id"] for i in items} == set(expected)
    errors = [i for i in items if i.get("parse_error")]
    assert errors and len(errors) == sum(1 for r in expected.values() if r["parse_error"])
    for item in errors:
        assert item["source"] == "directory"
        assert item["url"] == f"http://directory.test/biz/{item['source_id']}"
        assert item["url"] in item["parse_error"] and "no business block" in item["parse_error"]
    for item in items:
        if not item.get("parse_error"):
            assert item == expected[item["source_id"]]

    assert stats["finish_reason"] == "finished"
    assert stats["item_scraped_count"] == len(expected)
    assert stats["leadflow/items/directory"] == len(expected)
    assert stats["leadflow/parse_errors"] == len(errors)
    assert stats["robotstxt/response_status_count/200"] == 1
    assert "T" in stats["start_time"] and "T" in stats["finish_time"]  # ISO strings


def test_the_pipeline_command_respects_limit(
    sandbox_port: int, world: Directory, tmp_path: Path
) -> None:
    items, stats = crawl(
        sandbox_port, tmp_path, "-a", "category=dentist", "-a", "location=Austin, TX",
        "-a", "limit=5",
    )  # fmt: skip
    assert len(items) == 5
    assert all(i["source"] == "directory" for i in items)
    austin_dentists = {
        x.listing_id
        for x in world.listings
        if x.city_key == "austin" and x.category_slug == "dentist"
    }
    assert {i["source_id"] for i in items} <= austin_dentists
    assert stats["item_scraped_count"] == 5
    assert stats.get("downloader/response_status_count/404", 0) == 0


def test_a_dead_proxy_is_rotated_out_and_the_crawl_completes(
    sandbox_port: int, world: Directory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("LEADFLOW_PROXY_URLS", f"{dead},http://127.0.0.1:{sandbox_port}")
    monkeypatch.setenv("LEADFLOW_PROXY_MAX_FAILURES", "1")
    monkeypatch.setenv("LEADFLOW_CRAWL_RETRY_BACKOFF", "0.05")
    expected = sum(1 for x in world.listings if x.city_key == "seattle")
    env = dict(os.environ)
    env.update(
        LEADFLOW_SANDBOX="1",
        LEADFLOW_SANDBOX_PORT=str(sandbox_port),
        SCRAPY_SETTINGS_MODULE="spiders.settings",
    )
    out, stats_path = tmp_path / "out.jsonl", tmp_path / "stats.json"
    subprocess.run(
        [sys.executable, "-m", "scrapy", "crawl", "directory", "-a", "location=Seattle, WA", "-a", "limit=0",
         "-O", f"{out}:jsonlines", "-s", f"LEADFLOW_STATS_FILE={stats_path}", "-s", f"LOG_FILE={tmp_path / 'log'}"],
        cwd=REPO, env=env, check=True, timeout=120,
    )  # fmt: skip
    items = out.read_text(encoding="utf-8").splitlines()
    stats = json.loads(stats_path.read_text())
    assert len(items) == expected
    assert stats[f"leadflow/proxy_failures/{dead}"] >= 1
    assert stats.get("retry/count", 0) >= 1
