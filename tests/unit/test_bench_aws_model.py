"""The bench's paper model of Lambda: CPU share by memory, Amdahl's fit, billed milliseconds and price."""

from __future__ import annotations

import logging

import pytest

from cloud.bench.aws_model import (
    ASSUMPTIONS,
    DEFAULT_MEMORY_MB,
    MEMORY_SIZES_MB,
    PRICE_PER_GB_S,
    PRICE_PER_MILLION_REQUESTS,
    assumptions,
    predict,
    serial_fraction,
)
from cloud.bench.cli import ReportLines


def test_serial_fraction_is_fitted_from_the_largest_thread_count() -> None:
    assert serial_fraction({1: 100.0, 2: 50.0}) == pytest.approx(0.0)  # perfect scaling
    assert serial_fraction({1: 100.0, 2: 100.0}) == pytest.approx(1.0)  # no gain from a second thread
    assert serial_fraction({1: 100.0, 2: 75.0}) == pytest.approx(0.5)
    assert serial_fraction({1: 100.0, 2: 120.0}) == 1.0  # slower with more threads: clamped
    assert serial_fraction({1: 100.0}) == 0.0


def test_latency_follows_the_cpu_share_and_cost_the_billed_milliseconds() -> None:
    times = {1: 100.0, 2: 75.0}  # serial fraction 0.5
    below = predict(times, 1024)
    assert below.vcpus == pytest.approx(0.58, abs=0.01)
    assert below.latency_ms == pytest.approx(100 * 1769 / 1024, abs=0.1)
    one = predict(times, 1769)
    assert one.latency_ms == pytest.approx(100.0)
    assert one.cost_per_million_usd == pytest.approx(
        1e6 * 0.100 * 1769 / 1024 * PRICE_PER_GB_S + PRICE_PER_MILLION_REQUESTS, abs=0.01)
    two = predict(times, 3538)
    assert two.latency_ms == pytest.approx(75.0)
    top = predict(times, 10240)
    assert top.vcpus == 6 and top.latency_ms == pytest.approx(100 * (0.5 + 0.5 / 6), abs=0.1)


def test_cold_starts_are_read_from_report_lines() -> None:
    handler = ReportLines()
    log = logging.getLogger("test-bench-report-lines")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    line = ("REPORT RequestId: 1f0c\tDuration: 412.31 ms\tBilled Duration: 413 ms\tMemory Size: 2048 MB\t"
            "Max Memory Used: 1044 MB")
    log.info("%s %s", "DetectionFunction", line + "\tInit Duration: 3000.00 ms")  # before arming: S3's test event
    assert handler.cold == {}
    handler.armed = True
    log.info("%s %s", "DetectionFunction", line)  # warm: no Init Duration
    log.info("%s %s", "DetectionFunction", line + "\tInit Duration: 5400.00 ms")
    log.info("%s %s", "DetectionFunction", line + "\tInit Duration: 9000.00 ms")  # a later cold start
    log.info("%s %s", "DetectionFunction", line.replace("1044 MB", "1100 MB"))  # a later, larger peak
    assert handler.cold == {"DetectionFunction": {"init_s": 5.4, "duration_s": 0.412, "first_invocation_s": 5.81,
                                                  "request_id": "1f0c", "max_memory_mb": 1044}}
    assert handler.max_memory_mb == {"DetectionFunction": 1100}  # the largest of every armed REPORT


def test_with_one_measured_core_the_assumptions_say_that_scaling_above_one_vcpu_is_assumed_perfect() -> None:
    assert serial_fraction({1: 100.0}) == 0.0
    assert predict({1: 100.0}, 10240).latency_ms == pytest.approx(100 / 6, abs=0.1)
    assert "Only one core was measured" in assumptions(1) and assumptions(1).startswith(ASSUMPTIONS)
    assert assumptions(2) == ASSUMPTIONS  # fitted: nothing more to say


def test_the_onnx_defaults_are_the_templates_and_every_default_is_modelled() -> None:
    from cloud.emulator.template import load_template

    parameters = load_template()["Parameters"]
    assert DEFAULT_MEMORY_MB["onnx"] == {"detection": parameters["DetectionMemorySize"]["Default"],
                                         "recognition": parameters["RecognitionMemorySize"]["Default"]}
    assert all(mb in MEMORY_SIZES_MB for sizes in DEFAULT_MEMORY_MB.values() for mb in sizes.values())
