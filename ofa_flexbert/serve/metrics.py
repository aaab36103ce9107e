"""What the service did, for ``GET /metrics`` in the Prometheus text format.

Counts are kept here under one lock (requests by status code, rows, batches, rows per route) with a
window of recent request latencies for the quantiles; ``prometheus_client`` writes the exposition
format from them through a collector on a registry of the service's own (no process-global state).
Prometheus's Python client has no quantile summaries, so the quantiles are computed here over the
last :data:`LATENCY_WINDOW` requests and exposed as a summary's ``quantile`` samples.
"""
from __future__ import annotations

import threading
from collections import Counter, deque

import numpy as np

PREFIX = "ofa_flexbert"
QUANTILES = (0.5, 0.95, 0.99)
LATENCY_WINDOW = 10_000


class ServiceMetrics:
    """Thread-safe counters of one service (requests are counted on the event loop, batches on the worker)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Counter = Counter()  # status code -> requests answered
        self.rows = 0  # input rows answered
        self.batches = 0
        self.batched_rows = 0
        self.batch_seconds = 0.0
        self.routes: Counter = Counter()  # route label -> rows
        self.latency_sum = 0.0
        self._latencies: deque = deque(maxlen=LATENCY_WINDOW)

    def request(self, status: int, seconds: float, rows: int = 0, routes: tuple = ()) -> None:
        """One answered request: its status, time from arrival to answer, rows answered and their routes."""
        with self._lock:
            self.requests[status] += 1
            self.rows += rows
            self.routes.update(routes)
            self.latency_sum += seconds
            self._latencies.append(seconds)

    def batch(self, rows: int, seconds: float) -> None:
        """One batch run by the model."""
        with self._lock:
            self.batches += 1
            self.batched_rows += rows
            self.batch_seconds += seconds

    def latency_quantiles(self) -> dict[float, float]:
        """Request latency (seconds) at :data:`QUANTILES` over the recent window (NaN before any request)."""
        with self._lock:
            window = np.array(self._latencies, dtype="float64")
        if not len(window):
            return {q: float("nan") for q in QUANTILES}
        return {q: float(v) for q, v in zip(QUANTILES, np.quantile(window, QUANTILES))}

    def exposition(self) -> bytes:
        """The Prometheus text format of the counts, as ``prometheus_client`` writes it."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        return generate_latest(registry)


class _Collector:
    """Prometheus families of one :class:`ServiceMetrics`, read at scrape time."""

    def __init__(self, metrics: ServiceMetrics):
        self.metrics = metrics

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

        m = self.metrics
        quantiles = m.latency_quantiles()
        with m._lock:
            requests, rows, batches, batched = dict(m.requests), m.rows, m.batches, m.batched_rows
            routes, count, total, busy = dict(m.routes), sum(m.requests.values()), m.latency_sum, m.batch_seconds
        family = CounterMetricFamily(f"{PREFIX}_requests", "HTTP requests to /predict answered, by status code",
                                     labels=["code"])
        for code, n in sorted(requests.items()):
            family.add_metric([str(code)], n)
        yield family
        yield CounterMetricFamily(f"{PREFIX}_rows", "inputs answered", value=rows)
        yield CounterMetricFamily(f"{PREFIX}_batches", "batches run by the model", value=batches)
        yield CounterMetricFamily(f"{PREFIX}_batched_rows", "inputs run in those batches", value=batched)
        yield CounterMetricFamily(f"{PREFIX}_model_seconds", "time the model spent running batches", value=busy)
        yield GaugeMetricFamily(f"{PREFIX}_mean_batch_size", "inputs per batch, mean since start",
                                value=batched / batches if batches else 0.0)
        latency = Metric(f"{PREFIX}_request_latency_seconds",
                         f"/predict latency from arrival to answer; quantiles over the last {LATENCY_WINDOW} requests",
                         "summary")
        for q, value in quantiles.items():
            latency.add_sample(f"{PREFIX}_request_latency_seconds", {"quantile": str(q)}, value)
        latency.add_sample(f"{PREFIX}_request_latency_seconds_count", {}, count)
        latency.add_sample(f"{PREFIX}_request_latency_seconds_sum", {}, total)
        yield latency
        family = CounterMetricFamily(f"{PREFIX}_route_rows", "inputs answered, by the route they took",
                                     labels=["route"])
        for route, n in sorted(routes.items()):
            family.add_metric([route], n)
        yield family
