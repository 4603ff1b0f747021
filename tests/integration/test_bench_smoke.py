"""`facepipe bench` end to end, tiny: its own local stack in a subprocess, real frames (the demo clip filmed from
the packaged photos), every JSON key present and the counts consistent. No timing assertions: figures are the
benchmark's to print, not the test's to judge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloud.bench.cores import autogroups_decide
from tests.photos import PACKAGED, REPO, models_dir, weights_path

KEYS = {"raw_fps", "pipeline_fps", "ratio_pipeline_raw", "burst", "workload", "cold_start_s", "aws_model"}
BURST_KEYS = {"sent", "answered", "duplicates", "rejected", "latency_mean_s", "latency_p95_s", "wall_s"}


def test_bench_smoke_writes_every_figure_and_a_png(tmp_path: Path) -> None:
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    # Not the test session's stack: the bench starts its own (and measures its cold starts).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEPIPE_", "AWS_"))}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-m", "cloud.operator.cli", "bench", "--limit", "3", "--burst", "4", "--workload", "3",
         "--pace", "0.2", "--concurrency", "1,2", "--repeat", "2",
         # a loaded machine may 429 a burst of 4 for a while: counted and retried, not given up
         "--attempts", "10", "--models-dir", str(models_dir()), "--photos", str(PACKAGED),
         "--json", str(out), "--chart", str(png)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| pipeline, concurrency 2 |" in result.stdout  # the table

    figures = json.loads(out.read_text())
    assert figures.keys() >= KEYS
    assert figures["raw_fps"] > 0 and figures["ratio_pipeline_raw"] > 0
    # The first level ran --repeat 2 passes, each between two raw runs; the reported ratio is one of them.
    passes = figures["ratio_passes"]
    assert len(passes) == figures["config"]["repeat"] == 2
    assert figures["ratio_pipeline_raw"] in {p["ratio"] for p in passes}
    assert passes[0]["raw_fps_after"] == passes[1]["raw_fps_before"]  # one raw run between two passes
    assert "pass by pass" in result.stdout
    assert set(figures["pipeline_fps"]) == {"1", "2"} and all(v > 0 for v in figures["pipeline_fps"].values())
    # Each level ran on a stack of its own (a second CloudFormation stack in the bench's moto), its workers
    # pinned to as many cores as the level, their CPU per frame counted.
    assert figures["config"]["pinned"] is True and figures["config"]["raw_cores"] == 1
    assert figures["config"]["raw_threads"] == figures["config"]["threads"] * figures["config"]["raw_cores"]
    # Recognition ran ahead of detection on the shared cores wherever the kernel's autogroups decide the order.
    assert figures["config"]["recognition_first"] is autogroups_decide(os.getpid())
    for level in ("1", "2"):
        cpu = figures["pipeline"][level]["cpu_ms_per_frame"]
        assert cpu.keys() == {"DetectionFunction", "RecognitionFunction", "stack_and_client"}
        assert cpu["DetectionFunction"] > 0 and cpu["RecognitionFunction"] > 0
        cores = figures["pipeline"][level]["cores_ms_per_frame"]  # where the level's core time went
        assert cores["cores"] == int(level) and cores["busy"] > 0 and cores["idle"] >= 0 and cores["other"] >= 0
    # The first level ran once more with cores of its own per function (there are 2 cores or more to split).
    apart = figures["pipeline"]["1"].get("cpu_ms_per_frame_core_per_function")
    assert (apart is not None) == (len(os.sched_getaffinity(0)) >= 2)
    assert apart is None or (apart.keys() == {"DetectionFunction", "RecognitionFunction"} and min(apart.values()) > 0)
    assert "cpu_ms_per_frame_core_per_function" not in figures["pipeline"]["2"]  # the first level only
    # The functions' own CPU metrics over the first level's passes: the model's part of each handler's CPU.
    own = figures["function_cpu_ms_per_frame"]
    assert own.keys() == {"facepipe-detection", "facepipe-recognition"}
    assert all(0 < cpu["model"] < cpu["handler"] for cpu in own.values())
    # The most the median pass's pipeline / raw could have been with no idle time: raw's time per frame over the
    # pass's workers' CPU per frame on its one core.
    workers = sum(ms for name, ms in figures["pipeline"]["1"]["cpu_ms_per_frame"].items() if name != "stack_and_client")
    assert figures["ratio_ceiling"] == pytest.approx(1000 / figures["raw_fps"] / workers, abs=0.002)
    assert "could be at most" in result.stdout
    assert figures["raw"]["cpu_ms"] > 0 and set(figures["raw"]["fps_by_cores"]) >= {"1"}
    burst = figures["burst"]
    assert burst.keys() >= BURST_KEYS
    assert burst["sent"] == burst["answered"] == 4 and burst["duplicates"] == 0 and burst["server_errors"] == 0
    assert burst["attempts_per_frame"] == 10
    assert burst["latency_mean_s"] <= burst["latency_p95_s"] <= burst["latency_max_s"]
    workload = figures["workload"]
    assert workload["requests"] == workload["answered"] == 3 and workload["average_s"] > 0
    # Both functions started a new worker for the first frame: each has a cold start.
    assert set(figures["cold_start_s"]) == {"DetectionFunction", "RecognitionFunction"}
    assert all(seconds > 0 for seconds in figures["cold_start_s"].values())
    # Detection's cold start is the frame's own invocation, in a new worker, not S3's test event's (it reaches the
    # ingest queue as the stack comes up, and starts a worker of its own); the frame was not throttled meanwhile.
    detection = figures["cold_start"]["DetectionFunction"]
    assert detection["request_id"] == detection["first_frame_request_id"] and detection["first_frame_attempts"] == 1
    for function in ("detection", "recognition"):
        sizes = [row["memory_mb"] for row in figures["aws_model"][function]]
        assert sizes[0] == 1024 and sizes[-1] == 10240
        assert all(row["latency_ms"] > 0 and row["cost_per_million_usd"] > 0 for row in figures["aws_model"][function])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_bench_puts_both_engines_side_by_side_in_one_run(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEPIPE_", "AWS_"))} | {"PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "cloud.operator.cli", "bench", "--engine", "onnx,torch", "--limit", "2", "--burst", "2",
         "--workload", "2", "--pace", "0.2", "--concurrency", "1", "--repeat", "1", "--attempts", "10",
         "--models-dir", str(models_dir()), "--weights", str(weights_path()), "--photos", str(PACKAGED),
         "--json", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "facepipe bench, engine onnx" in result.stdout and "facepipe bench, engine torch" in result.stdout
    assert "Engines side by side" in result.stdout and "| onnx's gain |" in result.stdout

    figures = json.loads(out.read_text())
    engines, rows = figures["engines"], figures["side_by_side"]
    assert set(engines) == set(rows) == {"onnx", "torch"}
    for engine, row in rows.items():
        assert engines[engine]["config"]["engine"] == engine and engines[engine]["raw_fps"] > 0
        # each engine's own cold stack: both functions' Init Duration, the first frame's answer, workers' peaks
        assert set(row["init_s"]) == set(row["max_memory_mb"]) == {"DetectionFunction", "RecognitionFunction"}
        assert all(v > 0 for v in (*row["init_s"].values(), *row["max_memory_mb"].values()))
        assert row["first_frame_latency_s"] > 0 and row["pipeline_fps"] > 0
        assert set(row["cost_per_million_usd"]) == {"detection", "recognition"}
    # The torch workers hold torch: more resident memory than the onnx ones, whatever the machine's speed.
    assert rows["torch"]["max_memory_mb"]["RecognitionFunction"] > rows["onnx"]["max_memory_mb"]["RecognitionFunction"]
