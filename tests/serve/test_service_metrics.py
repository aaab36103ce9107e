"""The service's counters and their Prometheus text."""
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from ofa_flexbert.serve.metrics import LATENCY_WINDOW, ServiceMetrics


def samples(metrics):
    text = metrics.exposition().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_counts_mean_batch_size_and_routes_are_exposed():
    m = ServiceMetrics()
    m.request(200, 0.010, rows=3, routes=("w0.5_d1",) * 2 + ("w1_d1",))
    m.request(422, 0.001)
    m.batch(2, 0.004)
    m.batch(1, 0.002)
    got = samples(m)
    assert got[("ofa_flexbert_requests_total", (("code", "200"),))] == 1
    assert got[("ofa_flexbert_requests_total", (("code", "422"),))] == 1
    assert got[("ofa_flexbert_rows_total", ())] == 3 and got[("ofa_flexbert_batches_total", ())] == 2
    assert got[("ofa_flexbert_mean_batch_size", ())] == 1.5
    assert got[("ofa_flexbert_route_rows_total", (("route", "w0.5_d1"),))] == 2
    assert got[("ofa_flexbert_request_latency_seconds_count", ())] == 2
    assert got[("ofa_flexbert_request_latency_seconds_sum", ())] == 0.011


def test_latency_quantiles_are_numpys_over_the_recent_window():
    m = ServiceMetrics()
    latencies = np.random.RandomState(0).exponential(0.02, size=LATENCY_WINDOW + 500)
    for t in latencies:
        m.request(200, float(t))
    want = np.quantile(latencies[-LATENCY_WINDOW:], [0.5, 0.95, 0.99])
    assert list(m.latency_quantiles().values()) == list(want)
    got = samples(m)
    assert [got[("ofa_flexbert_request_latency_seconds", (("quantile", q),))] for q in ("0.5", "0.95", "0.99")] \
        == list(want)
    assert got[("ofa_flexbert_request_latency_seconds_count", ())] == len(latencies)  # the count is not windowed


def test_before_any_request_the_quantiles_are_nan_and_the_mean_batch_size_zero():
    got = samples(ServiceMetrics())
    assert np.isnan(got[("ofa_flexbert_request_latency_seconds", (("quantile", "0.5"),))])
    assert got[("ofa_flexbert_mean_batch_size", ())] == 0.0
