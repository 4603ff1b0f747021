"""`facepipe bench` against a stack it did not start (the environment `facepipe local up` exports): here the test
session's stack. Each level is warmed up before it is measured, so the detection workers its requests in flight need
start outside the measurement. (Recognition's follow the queue: a second one starts when two messages happen to wait at
once, which no client can force.) No timing assertions: only when the stack's workers started, against when each
measured run ran."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.photos import PACKAGED, REPO, weights_path

REPORT = re.compile(r"^(\w+) REPORT RequestId: \S+\tDuration: ([\d.]+) ms.*\tInit Duration: ([\d.]+) ms")


class WorkerStarts(logging.Handler):
    """When each function's new workers started, epoch seconds: the first REPORT line's time less its Init Duration
    and its first invocation's Duration."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.at: dict[str, list[float]] = {"DetectionFunction": [], "RecognitionFunction": []}

    def emit(self, record: logging.LogRecord) -> None:
        if match := REPORT.match(record.getMessage()):
            self.at[match[1]].append(record.created - (float(match[2]) + float(match[3])) / 1000)


def test_bench_against_a_running_stack_starts_no_worker_inside_a_measured_run(local_stack: Any,
                                                                              tmp_path: Path) -> None:
    for pool in local_stack.functions.values():
        pool.reclaim_idle()  # no warm worker left: every one the bench needs starts during the bench
    started = WorkerStarts()
    log = logging.getLogger("cloud.emulator.environment")
    log.addHandler(started)
    level_before = log.level
    log.setLevel(logging.INFO)
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEPIPE_", "AWS_"))}
    env |= local_stack.client_env() | {"PYTHONPATH": str(REPO)}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "cloud.operator.cli", "bench", "--limit", "3", "--burst", "2", "--workload", "2",
             "--pace", "0.2", "--concurrency", "1,2", "--repeat", "1", "--attempts", "10",
             "--weights", str(weights_path()), "--photos", str(PACKAGED), "--json", str(out)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    finally:
        log.removeHandler(started)
        log.setLevel(level_before)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cold start: not measured (the bench used a stack it did not start)" in result.stdout

    figures = json.loads(out.read_text())
    assert figures["config"]["stack"] == "external" and figures["config"]["pinned"] is False
    assert figures["cold_start_s"] == {}
    measured = [(p["started_at"], p["started_at"] + p["wall_s"]) for p in figures["ratio_passes"]]
    measured.append((figures["pipeline"]["2"]["started_at"],
                     figures["pipeline"]["2"]["started_at"] + figures["pipeline"]["2"]["wall_s"]))
    assert all(start > 0 and end > start for start, end in measured)
    # The first frame and the warm-ups started workers: a recognition worker, and as many detection workers as
    # concurrency 2 keeps busy where the stack allows them (its limit is the core count), none while measured.
    detection_workers = min(2, local_stack.functions["DetectionFunction"].concurrency)
    assert len(started.at["DetectionFunction"]) >= detection_workers and started.at["RecognitionFunction"], started.at
    assert not [at for at in started.at["DetectionFunction"] for start, end in measured if start <= at <= end]
