"""The bench reads the functions' CPU from the EMF records they print, as powertools writes them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from cloud.bench.function_cpu import per_frame, read


def _emf(capsys: pytest.CaptureFixture[str], service: str, **values: list[float]) -> str:
    """One invocation's EMF record, written by powertools itself."""
    metrics = Metrics(namespace="facepipe", service=service)
    for name, added in values.items():
        for value in added:
            metrics.add_metric(name=name, unit=MetricUnit.Milliseconds, value=value)
    capsys.readouterr()
    metrics.flush_metrics()
    [line] = capsys.readouterr().out.splitlines()
    return line


def test_handler_and_model_cpu_are_summed_per_service_over_the_windows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "functions.log"
    lines = [
        json.dumps({"level": "INFO", "message": "frame queued", "HandlerCpuMs": "not a metric"}),  # a JSON log line
        _emf(capsys, "facepipe-detection", DetectMs=[60.0], DetectCpuMs=[50.0], HandlerCpuMs=[53.0]),
        "REPORT RequestId: 1f0c\tDuration: 61.00 ms\tBilled Duration: 61 ms",
        # a batch of two frames: one record, the handler's CPU once, the model's once
        _emf(capsys, "facepipe-recognition", RecogniseCpuMs=[80.0], HandlerCpuMs=[86.0], QueueWaitMs=[1.0, 2.0]),
        _emf(capsys, "facepipe-detection", DetectCpuMs=[40.0], HandlerCpuMs=[44.0]),
        _emf(capsys, "facepipe-detection", HandlerCpuMs=[2.0]),  # a refused frame: no model ran
    ]
    log.write_text("\n".join(lines) + "\n")
    invocations = read(log)
    assert [(i.service, i.handler_ms, i.model_ms) for i in invocations] == [
        ("facepipe-detection", 53.0, 50.0), ("facepipe-recognition", 86.0, 80.0),
        ("facepipe-detection", 44.0, 40.0), ("facepipe-detection", 2.0, 0.0)]
    now = time.time()
    assert all(now - 60 < i.at_s <= now for i in invocations)  # EMF's Timestamp, in seconds

    everything = per_frame(invocations, [(now - 60, now + 1)], frames=2)
    assert everything == {"facepipe-detection": {"handler": 49.5, "model": 45.0},
                          "facepipe-recognition": {"handler": 43.0, "model": 40.0}}
    assert per_frame(invocations, [(now - 120, now - 60), (now + 1, now + 60)], frames=2) == {}  # outside the runs


def test_an_emf_record_without_handler_cpu_is_not_an_invocation_of_ours(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "functions.log"
    log.write_text(_emf(capsys, "facepipe-detection", DetectMs=[60.0]) + "\n")
    assert read(log) == []
