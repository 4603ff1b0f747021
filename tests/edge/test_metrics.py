"""Prometheus metrics and the health endpoint, scraped over real HTTP; the summary reads the same counters."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from edge_client.metrics import EdgeMetrics, format_summary
from edge_client.server import MetricsServer, parse_listen


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[MetricsServer, str]]]:
    servers: list[MetricsServer] = []

    def start(metrics: EdgeMetrics, health: Callable[[], dict[str, Any]], listen: str = "127.0.0.1:0"):
        server = MetricsServer(metrics, listen, health)
        servers.append(server)
        host, port = server.address
        host = f"[{host}]" if ":" in host else host
        return server, f"http://{host}:{port}"

    yield start
    for server in servers:
        server.shutdown()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_scraped_over_http(serve: Callable[..., tuple[MetricsServer, str]]) -> None:
    # GIVEN a pipeline that counted some work
    metrics = EdgeMetrics()
    metrics.frames_captured.inc(3)
    metrics.frames_gated.labels(reason="still").inc(2)
    metrics.upload_errors.labels(kind="timeout").inc()
    metrics.rejections.labels(status="413").inc()
    metrics.faces.labels(name="alice").inc(2)
    metrics.observe_latency(0.42)
    metrics.observe_latency(2.5)
    _, base = serve(metrics, lambda: {"ok": True})
    # WHEN Prometheus scrapes /metrics
    response = requests.get(base + "/metrics", timeout=5)
    # THEN the exposition carries each value under the facepipe_edge_ prefix
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = _samples(response.text)
    assert samples[("facepipe_edge_frames_captured_total", ())] == 3
    assert samples[("facepipe_edge_frames_gated_total", (("reason", "still"),))] == 2
    assert samples[("facepipe_edge_frames_gated_total", (("reason", "busy"),))] == 0
    assert samples[("facepipe_edge_frames_answered_total", ())] == 0
    assert samples[("facepipe_edge_upload_errors_total", (("kind", "timeout"),))] == 1
    assert samples[("facepipe_edge_rejections_total", (("status", "413"),))] == 1
    assert samples[("facepipe_edge_faces_total", (("name", "alice"),))] == 2
    assert samples[("facepipe_edge_latency_seconds_count", ())] == 2
    assert samples[("facepipe_edge_latency_seconds_sum", ())] == pytest.approx(2.92)
    assert samples[("facepipe_edge_latency_seconds_bucket", (("le", "0.5"),))] == 1
    assert samples[("facepipe_edge_latency_seconds_bucket", (("le", "30.0"),))] == 2
    names = {name for name, _ in samples}
    assert all(name.startswith("facepipe_edge_") for name in names)


def test_health_status_follows_ok(serve: Callable[..., tuple[MetricsServer, str]]) -> None:
    state: dict[str, Any] = {"ok": True, "camera": "open", "spooled": 0}
    _, base = serve(EdgeMetrics(), lambda: dict(state))
    healthy = requests.get(base + "/healthz", timeout=5)
    assert healthy.status_code == 200
    assert healthy.json() == state

    state.update(ok=False, camera="lost")
    unhealthy = requests.get(base + "/healthz", timeout=5)
    assert unhealthy.status_code == 503
    assert unhealthy.json()["camera"] == "lost"


def test_health_callback_error_is_503_and_server_survives(serve: Callable[..., tuple[MetricsServer, str]]) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("spool unreadable")

    _, base = serve(EdgeMetrics(), broken)
    response = requests.get(base + "/healthz", timeout=5)
    assert response.status_code == 503
    assert "spool unreadable" in response.json()["error"]
    assert requests.get(base + "/metrics", timeout=5).status_code == 200
    assert requests.get(base + "/nope", timeout=5).status_code == 404


def test_instances_have_separate_registries() -> None:
    # Two daemons (or tests) in one process: no "Duplicated timeseries" error, no shared counts.
    first, second = EdgeMetrics(), EdgeMetrics()
    first.frames_sent.inc()
    assert b"facepipe_edge_frames_sent_total 1.0" in first.exposition()
    assert b"facepipe_edge_frames_sent_total 0.0" in second.exposition()


def test_shutdown_releases_the_port() -> None:
    server = MetricsServer(EdgeMetrics(), "127.0.0.1:0", lambda: {"ok": True})
    port = server.address[1]
    server.shutdown()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_ipv6_listen(serve: Callable[..., tuple[MetricsServer, str]]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    try:
        _, base = serve(EdgeMetrics(), lambda: {"ok": True}, "[::1]:0")
    except OSError as exc:
        pytest.skip(f"::1 not bindable here: {exc}")
    assert requests.get(base + "/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("127.0.0.1:9108", ("127.0.0.1", 9108)), ("[::]:9108", ("::", 9108)), (":9108", ("0.0.0.0", 9108))],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9108", "host:", "host:http", "host:70000"])
def test_parse_listen_rejects(listen: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_listen(listen)


def test_summary_and_exposition_read_the_same_counters() -> None:
    """One home for every figure: what the summary prints is what Prometheus scrapes."""
    metrics = EdgeMetrics()
    metrics.frames_captured.inc(10)
    for reason, amount in (("rate", 4), ("still", 2), ("busy", 1)):
        metrics.frames_gated.labels(reason=reason).inc(amount)
    metrics.frames_sent.inc(3)
    metrics.frames_answered.inc(3)
    metrics.rejections.labels(status="400").inc()
    metrics.rejections.labels(status="413").inc()
    metrics.late_answers.inc()
    metrics.events.labels(type="start").inc()
    metrics.output_errors.labels(output="mqtt", kind="disconnected").inc(2)
    for seconds in (0.2, 0.4, 0.6):
        metrics.observe_latency(seconds)
    summary = metrics.summary()
    assert {k: summary[k] for k in ("captured", "gated", "gated_rate", "gated_still", "gated_busy", "sent",
                                    "answered", "rejected", "late", "events", "output_errors")} == {
        "captured": 10, "gated": 7, "gated_rate": 4, "gated_still": 2, "gated_busy": 1, "sent": 3,
        "answered": 3, "rejected": 2, "late": 1, "events": 1, "output_errors": 2}
    assert summary["latency_median_s"] == pytest.approx(0.4)
    samples = _samples(metrics.exposition().decode())
    assert samples[("facepipe_edge_frames_captured_total", ())] == summary["captured"]
    assert sum(v for (name, _), v in samples.items() if name == "facepipe_edge_frames_gated_total") == 7
    assert samples[("facepipe_edge_output_errors_total", (("kind", "disconnected"), ("output", "mqtt")))] == 2
    line = format_summary(summary)
    assert "captured 10, gated out 7 (rate 4, still 2, busy 1), sent 3, answered 3" in line
    assert "rejected 2; events 1" in line
