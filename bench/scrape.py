"""Benchmark: the `google_maps` spider against the sandbox's maps.test.

    .venv/bin/python bench/scrape.py                      # 300 ms latency, 3 repeats
    .venv/bin/python bench/scrape.py --repeat 1 --latency-ms 300 --businesses 6000

Starts its own sandbox (on a free port, `--maps-latency-ms` = `--latency-ms`), then runs, each
`--repeat` times (the median is printed):

- (a) the browser path (Chromium scrolls the feeds of every grid cell) and (b) the fast path
  (the search payloads over plain HTTP), each with the CAPTCHA gate off and on
  (`--captcha-share`, 0.2 by default; solved through the sandbox 2captcha);
- (c) a bare scrapy-playwright spider (bench/bare_playwright.py) that only opens the same
  search pages and scrolls each to its end, for the browser path's page-rate baseline.

Every crawl is the pipeline's own command (`python -m scrapy crawl google_maps -a bbox=..`):
the whole box of one city, every place in it (limit 0), so the grid has to go past the
120-result cap. Rates are over the crawl's own elapsed time (spider open to close, from its
stats; Scrapy and Chromium start-up excluded), and the wall time of the subprocess is shown
too. Targets on the 2-core machine: browser >= 300 leads/min and >= 80 % of the bare page
rate; fast >= 5,000 leads/min.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

CITY = "austin"
RESULT_CAP = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Run:
    items: int
    pages: int  # browser feed pages opened (bare spider: pages scrolled)
    elapsed: float  # spider open to close (stats)
    wall: float  # the whole subprocess
    stats: dict[str, Any]

    @property
    def leads_per_min(self) -> float:
        return self.items / self.elapsed * 60 if self.elapsed else 0.0

    @property
    def pages_per_min(self) -> float:
        return self.pages / self.elapsed * 60 if self.elapsed else 0.0


class Sandbox:
    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        import httpx

        self.port = free_port()
        self.log = folder / "sandbox.log"
        env = {
            **os.environ,
            "LEADFLOW_SANDBOX_CAPTCHA_SOLVE_SECONDS": str(args.solve_seconds),
            # Enough money for every solve of every repeat.
            "LEADFLOW_SANDBOX_CAPTCHA_BALANCE": "1000",
        }
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "sandbox", "--host", "127.0.0.1", "--port", str(self.port),
                "--seed", str(args.seed), "--businesses", str(args.businesses),
                "--data-dir", str(folder / "sandbox"), "--latency-ms", "0",
                "--maps-latency-ms", str(args.latency_ms), "--captcha-share", "0",
            ],
            # A log file, not a pipe: an unread pipe fills up and freezes the server.
            cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("wb"),
        )  # fmt: skip
        self.http = httpx.Client(timeout=30)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"sandbox died: {self.log.read_text()[-2000:]}")
            try:
                if self.http.get(f"{self.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("sandbox did not answer /health")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def captcha_share(self, share: float) -> None:
        self.http.post(f"{self.url}/__sandbox/maps/config", json={"captcha_share": share})

    def maps_stats(self) -> dict[str, Any]:
        return self.http.get(f"{self.url}/__sandbox/maps/stats").json()

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def crawl_env(sandbox: Sandbox, poll: float) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("LEADFLOW_PROXY_URLS", "LEADFLOW_GOOGLE_MAPS_URL", "LEADFLOW_HOST"):
        env.pop(key, None)
    env.update(
        LEADFLOW_SANDBOX="1",
        LEADFLOW_SANDBOX_PORT=str(sandbox.port),
        LEADFLOW_CAPTCHA_POLL_INTERVAL=str(poll),
        SCRAPY_SETTINGS_MODULE="spiders.settings",
        PYTHONPATH=str(PROJECT),
    )
    return env


def run_crawl(cmd: list[str], env: dict[str, str], folder: Path, pages_key: str) -> Run:
    out, stats_path, log = folder / "out.jsonl", folder / "stats.json", folder / "crawl.log"
    for f in (out, stats_path, log):
        f.unlink(missing_ok=True)
    cmd = [
        *cmd,
        "-s", f"LEADFLOW_STATS_FILE={stats_path}", "-s", f"LOG_FILE={log}",
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=PROJECT, env=env, capture_output=True, timeout=1800)
    wall = time.monotonic() - started
    if not stats_path.exists():
        raise SystemExit(f"crawl wrote no stats: {done.stderr.decode()[-2000:]}")
    stats = json.loads(stats_path.read_text())
    items = sum(1 for _ in out.open()) if out.exists() else 0
    return Run(
        items=items,
        pages=int(stats.get(pages_key, 0)),
        elapsed=float(stats.get("elapsed_time_seconds", wall)),
        wall=wall,
        stats=stats,
    )


def bbox_of(city: str) -> dict[str, float]:
    from sandbox.maps.payload import CITY_VIEWPORTS

    vp = CITY_VIEWPORTS[city]
    return {"south": vp.south, "west": vp.west, "north": vp.north, "east": vp.east}


def leaf_pages(sandbox: Sandbox, bbox: dict[str, float], max_depth: int) -> list[str]:
    """The search pages the browser path opens for `bbox`: the grid's leaf cells, found the
    way the spider finds them (X-Total-In-Viewport > 120 splits a cell)."""
    from spiders.spiders.google_maps import Cell, GoogleMapsSpider

    spider = GoogleMapsSpider(bbox=json.dumps(bbox))
    spider.base_url = "http://maps.test"
    proxy = sandbox.url
    import httpx

    leaves: list[str] = []
    with httpx.Client(proxy=proxy, timeout=30) as http:
        todo: list[Cell] = [Cell.from_json(json.dumps(bbox))]
        while todo:
            cell = todo.pop()
            total = int(http.get(spider.search_url(cell, 0)).headers["X-Total-In-Viewport"])
            if total > RESULT_CAP and cell.depth < max_depth:
                todo.extend(cell.split(total, max_depth))
            elif total:
                leaves.append(spider.page_url(cell))
    return leaves


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--latency-ms", type=int, default=300)
    p.add_argument("--businesses", type=int, default=6000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--captcha-share", type=float, default=0.2)
    p.add_argument("--solve-seconds", type=float, default=1.0, help="sandbox 2captcha solve time")
    p.add_argument("--poll", type=float, default=0.5, help="LEADFLOW_CAPTCHA_POLL_INTERVAL")
    p.add_argument("--only", choices=["browser", "fast", "bare"], action="append")
    args = p.parse_args(argv)
    which = set(args.only or ["browser", "fast", "bare"])

    folder = Path(tempfile.mkdtemp(prefix="leadflow-bench-scrape-"))
    sandbox = Sandbox(args, folder)
    env = crawl_env(sandbox, args.poll)
    bbox = bbox_of(CITY)
    from leadflow.settings import get_settings

    max_depth = get_settings().google_maps_grid_max_depth
    results: dict[str, list[Run]] = {}
    try:
        configs: list[tuple[str, list[str], float, str]] = []
        for mode in ("browser", "fast"):
            if mode not in which:
                continue
            for share in (0.0, args.captcha_share):
                configs.append((
                    f"{mode:7s} captcha {'on ' if share else 'off'} (share {share:.1f})",
                    [sys.executable, "-m", "scrapy", "crawl", "google_maps",
                     "-a", f"bbox={json.dumps(bbox)}", "-a", "limit=0", "-a", f"mode={mode}",
                     "-O", f"{folder / 'out.jsonl'}:jsonlines"],
                    share,
                    "leadflow/feed_pages",
                ))  # fmt: skip
        if "bare" in which:
            urls = leaf_pages(sandbox, bbox, max_depth)
            urls_file = folder / "urls.txt"
            urls_file.write_text("\n".join(urls))
            configs.append((
                "bare scrapy-playwright (open + scroll)",
                [sys.executable, "-m", "scrapy", "runspider", str(PROJECT / "bench" / "bare_playwright.py"),
                 "-a", f"urls_file={urls_file}", "-a", f"contexts={get_settings().browser_contexts}"],
                0.0,
                "bare/pages_scrolled",
            ))  # fmt: skip
        for repeat in range(args.repeat):
            for name, cmd, share, pages_key in configs:
                sandbox.captcha_share(share)
                run = run_crawl(cmd, env, folder, pages_key)
                results.setdefault(name, []).append(run)
                solved = run.stats.get("leadflow/captcha/solved", 0)
                print(
                    f"  [{repeat + 1}/{args.repeat}] {name}: {run.items} leads, {run.pages} pages "
                    f"in {run.elapsed:.1f} s (wall {run.wall:.1f} s), captchas solved {solved}, "
                    f"finish {run.stats.get('finish_reason')}",
                    flush=True,
                )
    finally:
        sandbox.captcha_share(0.0)
        sandbox.close()

    print(
        f"\ngoogle_maps bench: {CITY} box, {args.businesses} businesses, maps latency "
        f"{args.latency_ms} ms, median of {args.repeat}, {os.cpu_count()} CPUs"
    )
    print(f"{'configuration':42s} {'leads':>6s} {'leads/min':>10s} {'pages/min':>10s} "
          f"{'secs':>6s} {'captchas':>8s} {'cost $':>8s}")  # fmt: skip
    medians: dict[str, tuple[float, float]] = {}
    for name, runs in results.items():
        leads = statistics.median(r.leads_per_min for r in runs)
        pages = statistics.median(r.pages_per_min for r in runs)
        medians[name] = (leads, pages)
        solved = statistics.median(r.stats.get("leadflow/captcha/solved", 0) for r in runs)
        cost = statistics.median(r.stats.get("leadflow/captcha/cost", 0.0) for r in runs)
        print(
            f"{name:42s} {statistics.median(r.items for r in runs):6.0f} {leads:10.0f} "
            f"{pages:10.1f} {statistics.median(r.elapsed for r in runs):6.1f} "
            f"{solved:8.0f} {cost:8.4f}"
        )
    bare = next((v for k, v in medians.items() if k.startswith("bare")), None)
    if bare and bare[1]:
        for name, (_, pages) in medians.items():
            if name.startswith("browser"):
                print(f"{name.strip()}: {pages / bare[1]:.0%} of the bare spider's page rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
