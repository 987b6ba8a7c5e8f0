"""Benchmark: the trigger and review API under concurrent load, on loopback.

    .venv/bin/python bench/api.py                   # 100 requests per scenario run, 3 repeats
    .venv/bin/python bench/api.py --seconds 20 --repeat 5 --concurrency 10

Starts its own stack (`leadflow up`: nx-27017, Prefect server, sandbox, worker, API) on free
ports under a temporary LEADFLOW_HOME, and stops it at the end (also on Ctrl-C). It stores
10,000 synthetic scored leads through `LeadStore.upsert_leads` (about 2.5 minutes: the
embedded server's upserts slow down as the collection grows) and creates a rate-limit-exempt
key, then drives `--concurrency` clients, each on its own keep-alive connection, through
each scenario `--repeat` times after a warm-up (medians printed):

- (a) `GET /leads?category=..&min_score=..&sort=-score&limit=50`: each client walks the
  filters in turn, the first page of each and then its next page by `next_cursor`; every
  filter matches at least 1,000 leads (printed);
- (b) `POST /runs` with a small SearchSpec and a fresh Idempotency-Key each time. The API
  sends its runs to a work queue (LEADFLOW_API_WORK_QUEUE) that is created paused before
  the first request, so no crawl starts. After each run of the scenario, Prefect must hold
  exactly one flow run per 2xx answer, all still SCHEDULED; then they are deleted.

Only 2xx answers count towards the rate and the figures. The MongoDB and Prefect waits and
the API's own time come from the `Server-Timing` header of each answer (api/timing.py): the
embedded MongoDB-wire server and Prefect's SQLite-backed server are far slower than their
production counterparts, so the API's own time (end to end minus those waits) is the figure
with a target. Targets on the 2-core machine: own time p95 < 20 ms for both scenarios;
`GET /leads` at most 2 MongoDB round trips per request. Each run also reports how much of the
machine's CPU other programs took meanwhile: their load inflates the API's own time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

if TYPE_CHECKING:
    from prefect.client.schemas.filters import FlowRunFilter

    from connectors.mongo import LeadStore
    from leadflow.settings import Settings
    from models.lead import Lead

LEADS = 10_000
CATEGORIES = ("dentist", "restaurant", "plumber", "lawyer")
CITIES = ("Austin", "Dallas", "Houston", "San Antonio", "El Paso")
# Scores are uniform on 0-100 and each category holds a quarter of the leads, so
# min_score 50 still matches about 1,250 of a category's 2,500.
MIN_SCORES = (30, 50)
MIN_MATCHES = 1_000
PAGE_SIZE = 50
PAGES_PER_FILTER = 2  # the first page, then one `next_cursor` page
WORK_QUEUE = "bench-api-paused"
KEY_SCOPES = ("ratelimit:exempt", "leads:read", "runs:write")
OWN_TIME_TARGET_MS = 20.0
LEADS_ROUND_TRIPS_TARGET = 2
TIMING_ENTRY = re.compile(r'(\w+);dur=([0-9.]+)(?:;desc="(\d+)")?')


# --- environment, stack and data ------------------------------------------------------------


def prepare_environment(home: Path) -> None:
    """The env of a private stack; set before Prefect is imported or Settings are built, as
    Prefect snapshots its settings at import (same as tests/conftest.py)."""
    from leadflow.services import free_ports

    mongo_port, prefect_port, sandbox_port, api_port, smtp_port = free_ports(5)
    # A developer's own external services must not be used (or written to) by the bench.
    for key in ("LEADFLOW_MONGODB_URI", "LEADFLOW_PREFECT_API_URL", "PREFECT_API_URL"):
        os.environ.pop(key, None)
    os.environ.update(
        {
            # Telemetry tries DNS on this offline machine and logs an error per process.
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_HOME": str(home / "prefect"),
            "LEADFLOW_HOME": str(home),
            "LEADFLOW_MONGO_PORT": str(mongo_port),
            "LEADFLOW_PREFECT_PORT": str(prefect_port),
            "LEADFLOW_SANDBOX_PORT": str(sandbox_port),
            "LEADFLOW_API_PORT": str(api_port),
            "LEADFLOW_SMTP_PORT": str(smtp_port),  # the sandbox mail server's
            # The API process reads it from its env at start; the queue itself is created
            # (paused) before the first POST /runs.
            "LEADFLOW_API_WORK_QUEUE": WORK_QUEUE,
            # The runs wait on a paused queue, where Prefect's late-runs service would re-state
            # each one Late after 15 s: thousands of writes that SQLite serialises with the
            # creates being measured. Deployed, a worker starts the runs before that.
            "PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS": "3600",
        }
    )
    # Prefect warns at import if its home does not exist yet.
    (home / "prefect").mkdir(parents=True, exist_ok=True)


@contextmanager
def running_stack(settings: Settings) -> Iterator[None]:
    """`leadflow up` for these settings, and `leadflow down` however the block ends."""
    from leadflow import services

    # SIGTERM ends the bench like Ctrl-C does, through the `finally` that stops the stack.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.perf_counter()
    try:
        services.up(settings, echo=lambda line: print(f"  {line}", flush=True))
        print(f"stack up in {time.perf_counter() - started:.1f} s", flush=True)
        yield
    finally:
        services.down(settings)


def create_paused_queue(settings: Settings) -> None:
    from leadflow.prefect_setup import client_for

    with client_for(settings) as client:
        # Created paused in one call: there is no moment in which a worker could take a run.
        client.create_work_queue(
            name=WORK_QUEUE,
            work_pool_name=settings.work_pool,
            is_paused=True,
            description="bench/api.py: takes POST /runs runs without starting them",
        )
        queue = client.read_work_queue_by_name(WORK_QUEUE, work_pool_name=settings.work_pool)
    if not queue.is_paused:
        raise SystemExit(f"work queue {WORK_QUEUE} is not paused; refusing to start runs")


def synthetic_leads(count: int, seed: int) -> list[Lead]:
    from models.lead import Address, Lead, Score, new_lead_id

    rng = random.Random(seed)
    leads = []
    for index in range(count):
        category = CATEGORIES[index % len(CATEGORIES)]
        city = rng.choice(CITIES)
        value = round(rng.uniform(0, 100), 1)
        has_email = rng.random() < 0.6
        leads.append(
            Lead(
                lead_id=new_lead_id(),
                name=f"{city} {category} {index}",
                category=category,
                address=Address(city=city, state="TX", country="US"),
                score=Score(
                    value=value,
                    reasons=["verified email" if has_email else "no email", f"{city} market"],
                    model_version="bench-1",
                ),
                best_email=f"info{index}@example.com" if has_email else None,
            )
        )
    return leads


def store_leads(store: LeadStore, seed: int) -> list[tuple[str, int]]:
    """10,000 leads, and the (category, min_score) filters of GET /leads with their matches."""
    from api.queries import LeadFilters, lead_query
    from connectors.mongo import count

    store.create_indexes()  # what a first pipeline run would have made
    started = time.perf_counter()
    loaded = store.upsert_leads(synthetic_leads(LEADS, seed))
    print(
        f"stored {loaded.inserted} leads in {time.perf_counter() - started:.1f} s "
        f"({len(CATEGORIES)} categories x {len(CITIES)} cities, scores 0-100)"
    )
    filters = [(category, score) for score in MIN_SCORES for category in CATEGORIES]
    matches = []
    for category, score in filters:
        # The API's own query for the filter; `count` ($match + $count), because the embedded
        # server's count_documents is wrong for the null filter on merged_into.
        query = lead_query(LeadFilters(category=category, min_score=score))
        matches.append(count(store.leads, query))
    print(
        "GET /leads filters (category, min_score) and the leads each matches: "
        + ", ".join(f"{c}>={s}: {n}" for (c, s), n in zip(filters, matches, strict=True))
    )
    if min(matches) < MIN_MATCHES:
        raise SystemExit(f"every filter must match at least {MIN_MATCHES} leads")
    return filters


# --- load -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One request: its status (0 = transport error), end-to-end time and Server-Timing."""

    status: int
    seconds: float
    mongo_ms: float = math.nan
    mongo_round_trips: int = 0
    prefect_ms: float = math.nan
    prefect_calls: int = 0
    app_ms: float = math.nan

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def sample_of(response: httpx.Response, seconds: float) -> Sample:
    entries = {
        name: (float(duration), int(desc or 0))
        for name, duration, desc in TIMING_ENTRY.findall(response.headers.get("server-timing", ""))
    }
    if not {"mongo", "prefect", "app"} <= entries.keys():
        # Every answer of the API's middleware has it; this one came from somewhere else.
        return Sample(response.status_code, seconds)
    return Sample(
        response.status_code,
        seconds,
        mongo_ms=entries["mongo"][0],
        mongo_round_trips=entries["mongo"][1],
        prefect_ms=entries["prefect"][0],
        prefect_calls=entries["prefect"][1],
        app_ms=entries["app"][0],
    )


async def timed(send: Callable[[], Any]) -> tuple[httpx.Response | None, Sample]:
    started = time.perf_counter()
    try:
        response: httpx.Response = await send()
    except httpx.HTTPError:
        return None, Sample(0, time.perf_counter() - started)
    return response, sample_of(response, time.perf_counter() - started)


class LeadsClient:
    """One client's walk over the filters: a filter's pages by cursor, then the next filter.

    Clients start at different filters, so the concurrent requests differ."""

    def __init__(self, filters: list[tuple[str, int]], start: int) -> None:
        self.filters = filters
        self.position = start
        self.page = 0
        self.cursor: str | None = None

    async def request(self, http: httpx.AsyncClient) -> Sample:
        category, min_score = self.filters[self.position % len(self.filters)]
        params: dict[str, Any] = {
            "category": category,
            "min_score": min_score,
            "sort": "-score",
            "limit": PAGE_SIZE,
        }
        if self.cursor:
            params["cursor"] = self.cursor
        response, sample = await timed(lambda: http.get("/leads", params=params))
        self.page += 1
        # Decoded outside the timed part, and only when the next page is wanted.
        if response is not None and sample.ok and self.page < PAGES_PER_FILTER:
            self.cursor = response.json()["next_cursor"]
        else:
            self.cursor = None
        if self.cursor is None:
            self.position += 1
            self.page = 0
        return sample


class RunsClient:
    """POST /runs with a fresh Idempotency-Key each time; keeps the run ids of 2xx answers."""

    def __init__(self, start: int, run_ids: list[str]) -> None:
        self.counter = start
        self.run_ids = run_ids

    async def request(self, http: httpx.AsyncClient) -> Sample:
        self.counter += 1
        spec = {
            "category": CATEGORIES[self.counter % len(CATEGORIES)],
            "location": f"{CITIES[self.counter % len(CITIES)]}, TX",
            "sources": ["directory"],
            "limit": 50,
        }
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        response, sample = await timed(lambda: http.post("/runs", json=spec, headers=headers))
        if response is not None and sample.ok:
            self.run_ids.append(response.json()["run_id"])
        return sample


Client = LeadsClient | RunsClient


@dataclass
class Budget:
    """A fixed number of requests, or as many as fit in a fixed time (all clients share it)."""

    requests: int | None
    seconds: float | None
    deadline: float = field(init=False, default=math.inf)

    def start(self) -> None:
        if self.seconds is not None:
            self.deadline = time.perf_counter() + self.seconds

    def take(self) -> bool:
        if self.requests is not None:
            self.requests -= 1
            return self.requests >= 0
        return time.perf_counter() < self.deadline


@dataclass(frozen=True)
class Run:
    """One run of a scenario: every request's sample, its wall time, and the CPU share (of
    the whole machine) that programs other than the bench and its stack used meanwhile."""

    samples: list[Sample]
    wall: float
    others_cpu_percent: float


class CpuMeter:
    """CPU used by other programs during a run: on a shared 2-core machine their load
    inflates the API's own time, so it is printed next to the figures."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def ours(self) -> float:
        """CPU seconds of the bench process and every process of its stack."""
        from leadflow import services

        processes = [psutil.Process()]
        for name in services.SERVICE_NAMES:
            pid = services.read_pid(self.settings, name)
            with contextlib.suppress(psutil.Error):
                if pid is not None:
                    root = psutil.Process(pid)
                    processes += [root, *root.children(recursive=True)]
        seconds = 0.0
        for process in processes:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                seconds += times.user + times.system
        return seconds

    @staticmethod
    def machine() -> float:
        """CPU seconds the whole machine has been busy (every core)."""
        times = psutil.cpu_times()
        return (
            times.user
            + times.nice
            + times.system
            + getattr(times, "irq", 0.0)
            + getattr(times, "softirq", 0.0)
            + getattr(times, "steal", 0.0)
        )

    def run(self, base_url: str, key: str, clients: list[Client], budget: Budget) -> Run:
        machine, ours = self.machine(), self.ours()
        samples, wall = asyncio.run(drive(base_url, key, clients, budget))
        others = (self.machine() - machine) - (self.ours() - ours)
        return Run(samples, wall, max(0.0, others) / (wall * (psutil.cpu_count() or 1)) * 100)


async def drive(
    base_url: str, key: str, clients: list[Client], budget: Budget
) -> tuple[list[Sample], float]:
    """Run the clients until the budget is spent: (every request's sample, wall seconds)."""
    samples: list[Sample] = []

    async def loop(client: Client) -> None:
        # One HTTP client and one keep-alive connection per bench client, like separate callers.
        async with httpx.AsyncClient(
            base_url=base_url,
            headers={"X-API-Key": key},
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            # The API's Prefect client retries a 503 with back-off for about a minute.
            timeout=120.0,
        ) as http:
            while budget.take():
                samples.append(await client.request(http))

    budget.start()
    started = time.perf_counter()
    await asyncio.gather(*(loop(client) for client in clients))
    return samples, time.perf_counter() - started


# --- figures --------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (NaN when there are no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def figures(run: Run) -> dict[str, float]:
    samples, wall = run.samples, run.wall
    ok = [s for s in samples if s.ok]
    latency = [s.seconds * 1000 for s in ok]
    timed_ok = [s for s in ok if not math.isnan(s.app_ms)]
    return {
        "requests": len(samples),
        "2xx": len(ok),
        "requests/s (2xx)": len(ok) / wall if wall else math.nan,
        "latency p50 ms": percentile(latency, 50),
        "latency p95 ms": percentile(latency, 95),
        "latency p99 ms": percentile(latency, 99),
        "mongo wait mean ms": mean([s.mongo_ms for s in timed_ok]),
        "mongo wait p95 ms": percentile([s.mongo_ms for s in timed_ok], 95),
        "mongo round trips mean": mean([s.mongo_round_trips for s in timed_ok]),
        "mongo round trips max": max((s.mongo_round_trips for s in timed_ok), default=math.nan),
        "prefect wait mean ms": mean([s.prefect_ms for s in timed_ok]),
        "prefect wait p95 ms": percentile([s.prefect_ms for s in timed_ok], 95),
        "prefect calls mean": mean([s.prefect_calls for s in timed_ok]),
        "prefect calls max": max((s.prefect_calls for s in timed_ok), default=math.nan),
        "own time p50 ms": percentile([s.app_ms for s in timed_ok], 50),
        "own time p95 ms": percentile([s.app_ms for s in timed_ok], 95),
        "2xx without Server-Timing": len(ok) - len(timed_ok),
        "other programs' CPU %": run.others_cpu_percent,
    }


def failures(samples: list[Sample]) -> str:
    counts = Counter("error" if s.status == 0 else str(s.status) for s in samples if not s.ok)
    return ", ".join(f"{status} x{n}" for status, n in sorted(counts.items())) or "none"


@dataclass(frozen=True)
class Target:
    text: str
    met: Callable[[float], bool]


def print_table(title: str, runs: list[Run], targets: dict[str, Target]) -> dict[str, float]:
    """Per-repeat figures, their medians and the targets; returns the medians."""
    per_run = [figures(run) for run in runs]
    medians = {name: statistics.median(run[name] for run in per_run) for name in per_run[0]}
    width = 10
    print(f"\n{title}")
    header = "".join(f"{f'repeat {i + 1}':>{width}}" for i in range(len(runs)))
    print(f"{'figure':<26}{header}{'median':>{width}}   target")
    for name, value in medians.items():
        # Counts as integers, means of counts with two decimals, times and rates with one.
        digits = 2 if name.endswith(" mean") else 1 if name.endswith(("ms", "(2xx)", "%")) else 0
        cells = "".join(f"{run[name]:>{width}.{digits}f}" for run in per_run)
        target = targets.get(name)
        verdict = f"   {target.text}  {'ok' if target.met(value) else 'MISSED'}" if target else ""
        print(f"{name:<26}{cells}{value:>{width}.{digits}f}{verdict}")
    print(
        "non-2xx by status: "
        + "; ".join(f"repeat {i}: {failures(run.samples)}" for i, run in enumerate(runs, 1))
    )
    return medians


# --- Prefect checks -------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchRuns:
    """The flow runs the bench's key made through the API: the API's deployment, the paused
    queue, and the `api-key:<id>` tag the API puts on every run."""

    settings: Settings
    key_id: str
    deployment_id: uuid.UUID

    @classmethod
    def of(cls, settings: Settings, key_id: str) -> BenchRuns:
        from leadflow.prefect_setup import client_for

        with client_for(settings) as client:
            deployment = client.read_deployment_by_name(settings.api_deployment)
        return cls(settings, key_id, deployment.id)

    def filter(self, **extra: Any) -> FlowRunFilter:
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterDeploymentId,
            FlowRunFilterTags,
            FlowRunFilterWorkQueueName,
        )

        return FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[self.deployment_id]),
            work_queue_name=FlowRunFilterWorkQueueName(any_=[WORK_QUEUE]),
            tags=FlowRunFilterTags(all_=[f"api-key:{self.key_id}"]),
            **extra,
        )

    def check(self, ok: int, run_ids: list[str]) -> tuple[str, bool]:
        """Prefect holds one flow run per 2xx answer, and none has left SCHEDULED."""
        from prefect.client.schemas.filters import (
            FlowRunFilterId,
            FlowRunFilterState,
            FlowRunFilterStateName,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        from leadflow.prefect_setup import client_for

        distinct = {uuid.UUID(run_id) for run_id in run_ids}
        with client_for(self.settings) as client:
            held = client.count_flow_runs(flow_run_filter=self.filter())
            answered = client.count_flow_runs(
                flow_run_filter=self.filter(id=FlowRunFilterId(any_=list(distinct)))
            )
            scheduled = client.count_flow_runs(
                flow_run_filter=self.filter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                    )
                )
            )
            # Prefect's late-runs service renames runs that wait past their start time; they
            # stay SCHEDULED, and their state writes are part of the server's load.
            late = client.count_flow_runs(
                flow_run_filter=self.filter(
                    state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Late"]))
                )
            )
        good = ok == len(distinct) == answered == held == scheduled
        return (
            f"{ok} 2xx, {len(distinct)} distinct run ids; Prefect holds {held} flow runs of "
            f"{self.settings.api_deployment} in {WORK_QUEUE} with the bench key's tag, "
            f"{answered} of them answered, {scheduled} still SCHEDULED ({late} marked Late)",
            good,
        )

    def delete(self) -> int:
        """Delete them, so every repeat starts from the same Prefect database."""
        from leadflow.prefect_setup import client_for

        deleted = 0
        # Through the Prefect client, for its retries: the SQLite-backed server answers 503
        # to writes that meet a locked database.
        with client_for(self.settings) as client:
            while runs := client.read_flow_runs(flow_run_filter=self.filter(), limit=200):
                for run in runs:
                    client.delete_flow_run(run.id)
                deleted += len(runs)
        return deleted


# --- main -----------------------------------------------------------------------------------


def prepare_data(settings: Settings, seed: int) -> tuple[list[tuple[str, int]], str, str]:
    """Leads and an exempt key in MongoDB, and the paused queue in Prefect: (the GET /leads
    filters, the key's id, the key)."""
    from api.keys import ApiKeys
    from connectors.mongo import LeadStore

    store = LeadStore.from_settings(settings)
    try:
        filters = store_leads(store, seed)
        keys = ApiKeys(store.db)
        record, key = keys.create("bench-api", KEY_SCOPES, allow_exempt=True)
        keys.close()
    finally:
        store.close()
    create_paused_queue(settings)
    print(f"exempt key {record.key_id}; POST /runs runs go to the paused work queue {WORK_QUEUE}")
    return filters, record.key_id, key


def own_time_target() -> Target:
    return Target(f"< {OWN_TIME_TARGET_MS:g}", lambda value: value < OWN_TIME_TARGET_MS)


def run_scenarios(args: argparse.Namespace, settings: Settings) -> None:
    filters, key_id, key = prepare_data(settings, args.seed)
    url = settings.api_url

    def budget() -> Budget:
        return Budget(None, args.seconds) if args.seconds else Budget(args.requests, None)

    def leads_clients() -> list[Client]:
        return [LeadsClient(filters, i) for i in range(args.concurrency)]

    amount = f"{args.seconds:g} s" if args.seconds else f"{args.requests} requests"
    setup = (
        f"concurrency {args.concurrency}, {amount} per repeat after {args.warmup} warm-up requests"
    )

    meter = CpuMeter(settings)
    meter.run(url, key, leads_clients(), Budget(args.warmup, None))
    leads_runs = [meter.run(url, key, leads_clients(), budget()) for _ in range(args.repeat)]
    leads = print_table(
        f"GET /leads (category + min_score, sort -score, limit {PAGE_SIZE}; every other request "
        f"follows next_cursor); {setup}; figures of 2xx answers",
        leads_runs,
        {
            "own time p95 ms": own_time_target(),
            "mongo round trips max": Target(
                f"<= {LEADS_ROUND_TRIPS_TARGET}", lambda value: value <= LEADS_ROUND_TRIPS_TARGET
            ),
        },
    )

    bench_runs = BenchRuns.of(settings, key_id)
    warmup: list[Client] = [RunsClient(i, []) for i in range(args.concurrency)]
    meter.run(url, key, warmup, Budget(args.warmup, None))
    bench_runs.delete()
    runs_runs = []
    checks = []
    for _ in range(args.repeat):
        run_ids: list[str] = []
        clients: list[Client] = [RunsClient(i, run_ids) for i in range(args.concurrency)]
        run = meter.run(url, key, clients, budget())
        runs_runs.append(run)
        line, good = bench_runs.check(sum(s.ok for s in run.samples), run_ids)
        checks.append(f"{line}; deleted {bench_runs.delete()}: {'ok' if good else 'MISMATCH'}")
    runs = print_table(
        f"POST /runs (SearchSpec body, fresh Idempotency-Key, paused queue); {setup}; "
        "figures of 2xx answers",
        runs_runs,
        {"own time p95 ms": own_time_target()},
    )
    print("one flow run in Prefect per 2xx answer:")
    for repeat, line in enumerate(checks, 1):
        print(f"  repeat {repeat}: {line}")

    print(
        f"\nmedians: GET /leads p95 {leads['latency p95 ms']:.0f} ms at "
        f"{leads['requests/s (2xx)']:.1f} req/s, own time p95 {leads['own time p95 ms']:.1f} ms, "
        f"at most {leads['mongo round trips max']:.0f} round trips; POST /runs p95 "
        f"{runs['latency p95 ms']:.0f} ms at {runs['requests/s (2xx)']:.1f} req/s, own time "
        f"p95 {runs['own time p95 ms']:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--requests", type=int, default=100, help="requests per scenario run")
    amount.add_argument("--seconds", type=float, help="seconds per scenario run, instead")
    parser.add_argument("--concurrency", type=int, default=10, help="concurrent clients")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (medians)")
    parser.add_argument("--warmup", type=int, default=20, help="uncounted requests first")
    parser.add_argument("--seed", type=int, default=7, help="of the synthetic leads")
    args = parser.parse_args()
    if min(args.requests, args.concurrency, args.repeat) < 1 or (args.seconds or 1) <= 0:
        parser.error("--requests, --seconds, --concurrency and --repeat must be positive")

    root = Path(tempfile.mkdtemp(prefix="leadflow-bench-api-"))
    try:
        prepare_environment(root / "home")
        from leadflow.settings import Settings

        settings = Settings()
        with running_stack(settings):
            run_scenarios(args, settings)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
