"""Prometheus metrics of the model server, in a registry of its own (one per server)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServingMetrics:
    """Requests, latency, errors and predictions per route and version; swaps; the log queue."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ctloop_requests", "HTTP requests", ["route", "status", "version"], registry=r
        )
        self.latency = Histogram(
            "ctloop_request_latency_seconds",
            "Request latency, body read to response",
            ["route", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "ctloop_errors",
            "Requests answered 4xx or 5xx",
            ["route", "status", "version"],
            registry=r,
        )
        self.predictions = Counter(
            "ctloop_predictions", "Records scored", ["version", "role"], registry=r
        )
        self.shadow_errors = Counter(
            "ctloop_shadow_errors", "Shadow scorings that failed", ["version"], registry=r
        )
        self.swaps = Counter(
            "ctloop_swaps", "Model swaps by outcome (ok, warmup_failed)", ["result"], registry=r
        )
        self.live_version = Gauge(
            "ctloop_live_version", "Version live behind each target", ["target"], registry=r
        )
        self.traffic = Gauge(
            "ctloop_traffic_share", "Traffic share by target", ["target"], registry=r
        )
        self.log_rows = Gauge(
            "ctloop_prediction_log_rows", "Prediction log rows by state", ["state"], registry=r
        )

    def observe(self, route: str, status: int, version: str, seconds: float) -> None:
        code = str(status)
        self.requests.labels(route, code, version).inc()
        self.latency.labels(route, version).observe(seconds)
        if status >= 400:
            self.errors.labels(route, code, version).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
