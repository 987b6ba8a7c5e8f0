"""Prometheus metrics of one API instance (prometheus-client, its own registry).

Request counts and latencies are recorded by `RequestContextMiddleware`; runs started by the
runs router; the lead and run totals are read from MongoDB when `/metrics` is scraped (two
queries per scrape, none per request).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from connectors.mongo import LeadStore

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)


class StoreTotals(Collector):
    """Live leads and runs per state, counted at scrape time."""

    def __init__(self, store: Callable[[], LeadStore]) -> None:
        self.store = store  # the app's store exists only while the app runs

    def collect(self) -> Iterator[GaugeMetricFamily]:
        store = self.store()
        leads = GaugeMetricFamily("leadflow_leads", "Stored leads (tombstones excluded).")
        leads.add_metric([], store.count_live_leads())
        yield leads
        runs = GaugeMetricFamily("leadflow_runs", "Pipeline runs by state.", labels=["state"])
        for row in store.runs.aggregate([{"$group": {"_id": "$state", "n": {"$sum": 1}}}]):
            runs.add_metric([str(row["_id"] or "UNKNOWN")], row["n"])
        yield runs


class ApiMetrics:
    def __init__(self, store: Callable[[], LeadStore]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "leadflow_api_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "leadflow_api_request_duration_seconds",
            "Time from request to the end of the response, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.runs_started = Counter(
            "leadflow_api_runs_started",
            "Pipeline runs started through POST /runs (idempotent replays not counted).",
            registry=self.registry,
        )
        self.registry.register(StoreTotals(store))
