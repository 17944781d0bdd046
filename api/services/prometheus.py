"""Request counts and latencies per route, and jobs by state, in Prometheus' text format."""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)


class PrometheusMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()  # one per app: tests build many apps in one process
        self.requests = Counter("rayac_http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)  # fmt: skip
        self.latency = Histogram("rayac_http_request_seconds", "HTTP request latency", ["method", "route"],
                                 registry=self.registry,
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5))  # fmt: skip
        self.jobs = Gauge("rayac_jobs", "Jobs by state", ["state"], registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self, jobs: Any) -> tuple[bytes, str]:
        counts = jobs.store.count_by_status()
        for state in ("pending", "running", "succeeded", "failed", "stopped"):
            self.jobs.labels(state).set(counts.get(state, 0))
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
