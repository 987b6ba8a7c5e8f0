"""The `google_maps` spider end to end against the sandbox's maps.test, run exactly as the
pipeline runs it (a `scrapy crawl` subprocess through the sandbox proxy): the fast path, the
grid past the 120-result cap, the browser path with Debian's Chromium, CAPTCHAs solved through
the 2captcha sandbox, and the refusal to start on an empty balance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import sandbox_process

REPO = Path(__file__).resolve().parent.parent
SEED, BUSINESSES = 42, 1500
AUSTIN = {"south": 30.1772, "west": -97.8631, "north": 30.3572, "east": -97.6231}
KEY_FIELDS = (
    "name", "category", "address", "city", "country", "phone", "website", "rating",
    "review_count", "latitude", "longitude", "open_hours", "place_id", "cid", "data_id", "url",
)  # fmt: skip


# The maps stand-in answers in 20 ms, with no CAPTCHA unless a test asks; solves take 0.2 s.
SANDBOX_ARGS = ["--latency-ms", "0", "--maps-latency-ms", "20", "--captcha-share", "0"]
SANDBOX_ENV = {"LEADFLOW_SANDBOX_CAPTCHA_SOLVE_SECONDS": "0.2"}


@pytest.fixture(scope="module")
def sandbox_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    data = tmp_path_factory.mktemp("maps-sandbox")
    with sandbox_process(
        data, seed=SEED, businesses=BUSINESSES, args=SANDBOX_ARGS, env=SANDBOX_ENV
    ) as port:
        yield port


def set_captcha_share(port: int, share: float) -> None:
    answer = httpx.post(
        f"http://127.0.0.1:{port}/__sandbox/maps/config", json={"captcha_share": share}
    )
    assert answer.json()["captcha_share"] == share


def crawl_env(port: int) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("LEADFLOW_PROXY_URLS", "LEADFLOW_GOOGLE_MAPS_URL", "LEADFLOW_HOST"):
        env.pop(key, None)
    env.update(
        LEADFLOW_SANDBOX="1",
        LEADFLOW_SANDBOX_PORT=str(port),
        LEADFLOW_CAPTCHA_POLL_INTERVAL="0.1",
        SCRAPY_SETTINGS_MODULE="spiders.settings",
    )
    return env


def crawl(port: int, workdir: Path, *args: str) -> tuple[list[dict], dict, str]:
    """Run the crawl as tasks/scrape does; (items, stats, log text)."""
    out, stats, log = workdir / "out.jsonl", workdir / "stats.json", workdir / "crawl.log"
    cmd = [
        sys.executable, "-m", "scrapy", "crawl", "google_maps", *args,
        "-O", f"{out}:jsonlines", "-s", f"LEADFLOW_STATS_FILE={stats}", "-s", f"LOG_FILE={log}",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, env=crawl_env(port), capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    log_text = log.read_text() if log.exists() else ""
    assert stats.exists(), log_text[-3000:]
    items = (
        [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        if out.exists()
        else []
    )
    return items, json.loads(stats.read_text()), log_text


def check_places(items: list[dict]) -> None:
    assert all(i["source"] == "google_maps" for i in items)
    place_ids = [i["place_id"] for i in items]
    assert len(set(place_ids)) == len(place_ids), "duplicate places"
    for field in KEY_FIELDS:
        # Every field is filled for most places (a few businesses have no website/phone).
        filled = sum(1 for i in items if i.get(field) not in (None, "", [], {}))
        assert filled >= 0.6 * len(items), f"{field} missing too often ({filled}/{len(items)})"
    for item in items:
        assert item["place_id"].startswith("ChIJ") and item["data_id"].startswith("0x")
        assert item["parse_error"] is None
        assert "plus_code_global" in item  # the parser's Google-only extras are kept


def test_fast_path_yields_the_limit_with_all_fields(sandbox_port: int, tmp_path: Path) -> None:
    items, stats, _ = crawl(
        sandbox_port, tmp_path, "-a", "location=Austin, TX", "-a", "limit=50", "-a", "mode=fast"
    )
    assert len(items) == 50
    check_places(items)
    assert all(i["city"] == "Austin" for i in items)
    assert stats["finish_reason"] == "finished"
    assert stats["leadflow/items/google_maps"] == 50
    assert not any(k.startswith("playwright/") for k in stats)  # no browser in fast mode


def test_grid_goes_past_the_120_cap(sandbox_port: int, tmp_path: Path) -> None:
    items, stats, _ = crawl(
        sandbox_port, tmp_path, "-a", f"bbox={json.dumps(AUSTIN)}", "-a", "limit=1000",
        "-a", "mode=fast",
    )  # fmt: skip
    truth = httpx.get(
        f"http://maps.test/search?tbm=map&q=&vp={','.join(str(v) for v in AUSTIN.values())}",
        proxy=f"http://127.0.0.1:{sandbox_port}",
    ).headers["X-Total-In-Viewport"]
    assert int(truth) > 120
    assert len(items) == int(truth)  # every place in the box, each once
    check_places(items)
    assert all(
        AUSTIN["south"] <= i["latitude"] <= AUSTIN["north"]
        and AUSTIN["west"] <= i["longitude"] <= AUSTIN["east"]
        for i in items
    )
    assert stats["leadflow/grid/splits"] >= 1


def test_browser_path_scrolls_the_feed(sandbox_port: int, tmp_path: Path) -> None:
    items, stats, _ = crawl(
        sandbox_port, tmp_path, "-a", "location=Austin, TX", "-a", "limit=30",
        "-a", "mode=browser",
    )  # fmt: skip
    assert len(items) == 30
    check_places(items)
    assert stats["playwright/page_count"] >= 1
    assert stats["leadflow/feed_pages"] >= 1


@pytest.mark.parametrize("mode", ["fast", "browser"])
def test_captchas_are_solved_and_every_place_still_comes(
    sandbox_port: int, tmp_path: Path, mode: str
) -> None:
    set_captcha_share(sandbox_port, 0.3)
    try:
        items, stats, _ = crawl(
            sandbox_port, tmp_path, "-a", "location=Austin, TX", "-a", "limit=150",
            "-a", f"mode={mode}",
        )  # fmt: skip
    finally:
        set_captcha_share(sandbox_port, 0.0)
    assert len(items) == 150
    check_places(items)
    assert stats["leadflow/captcha/solved"] > 0
    assert stats["leadflow/captcha/passed"] > 0
    assert stats["leadflow/captcha/cost"] > 0
    assert stats["leadflow/captcha/seconds"] > 0
    assert stats.get("leadflow/captcha/challenges_failed", 0) == 0


def test_a_forged_token_is_refused(sandbox_port: int) -> None:
    proxy = f"http://127.0.0.1:{sandbox_port}"
    answer = httpx.post(
        "http://maps.test/sorry/index",
        data={"g-recaptcha-response": "03Aforged", "continue": "http://maps.test/maps"},
        proxy=proxy,
    )
    assert answer.status_code == 403
    assert "GOOGLE_ABUSE_EXEMPTION" not in answer.cookies


def test_zero_balance_refuses_to_start_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**SANDBOX_ENV, "LEADFLOW_SANDBOX_CAPTCHA_BALANCE": "0"}
    with sandbox_process(
        tmp_path / "sandbox", seed=SEED, businesses=BUSINESSES, args=SANDBOX_ARGS, env=env
    ) as port:
        items, stats, log = crawl(
            port, tmp_path, "-a", "location=Austin, TX", "-a", "limit=20", "-a", "mode=fast"
        )
        assert items == []
        assert stats["finish_reason"] == "captcha_balance"
        assert "balance" in stats["leadflow/fatal_error"]
        assert "LEADFLOW_CAPTCHA_MIN_BALANCE" in stats["leadflow/fatal_error"]
        assert stats.get("downloader/request_count", 0) <= 1  # nothing but robots.txt, if that
        assert "ERROR" in log and "balance" in log

        # ...and the pipeline's scrape stage fails the run with that message.
        from leadflow.settings import Settings
        from models.search import SearchSpec
        from tasks.scrape import CrawlFailed
        from tasks.scrape import crawl as pipeline_crawl

        for key, value in crawl_env(port).items():
            monkeypatch.setenv(key, value)
        spec = SearchSpec(location="Austin, TX", sources=["google_maps"], limit=20)
        with pytest.raises(CrawlFailed, match="balance"):
            pipeline_crawl("google_maps", spec, tmp_path / "run", Settings())
