"""`facepipe bench`: raw models vs. the pipeline on the same frames, a burst, a paced client, cold starts and
an AWS paper model; a table at the end, every figure in `--json`, a chart in `--chart`.

Runs against the local stack it starts itself (its workers get `--threads` torch threads, as the raw run
does), or against the stack `FACEPIPE_FUNCTION_URL` and the other variables `facepipe local up` exports point
at (then cold starts are not measured: their workers are not ours to start).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cloud.bench.drive import RunResult, drive
from cloud.bench.frames import cycle, demo_clip_frames, load_frames
from cloud.bench.report import chart, table

DEFAULT_WEIGHTS = Path(".cache/models/facenet-casia-webface.pt")
DEFAULT_PHOTOS = Path(".cache/photos")
_REPORT = re.compile(r"^(\w+) REPORT RequestId: \S+\tDuration: ([\d.]+) ms.*\tInit Duration: ([\d.]+) ms")


def _levels(text: str) -> list[int]:
    try:
        levels = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of whole numbers, e.g. 1,2") from None
    if not levels or levels[0] < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be at least 1")
    return levels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cores = os.cpu_count() or 1
    parser.add_argument("--frames", type=Path, nargs="+", metavar="PATH",
                        help="a video, photos or folders (default: the demo clip, filmed from --photos)")
    parser.add_argument("--every", type=int, default=3, help="every Nth frame of a video (default %(default)s)")
    parser.add_argument("--limit", type=int, default=30, help="frames used at most (default %(default)s)")
    parser.add_argument("--concurrency", type=_levels, default=list(range(1, cores + 1)),
                        help="pipeline concurrency levels, e.g. 1,2 (default: 1 to the core count)")
    parser.add_argument("--burst", type=int, default=100, help="frames posted at once (default %(default)s)")
    parser.add_argument("--attempts", type=int, choices=range(1, 21), metavar="1..20",
                        help="POST attempts per frame, as the edge's retries.max_attempts (default: the edge's, 4)")
    parser.add_argument("--workload", type=int, default=100,
                        help="requests of the paced client (default %(default)s)")
    parser.add_argument("--pace", type=float, default=1.0, help="seconds between its requests (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per worker and in the raw run (default %(default)s)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="packaged sample photos (make photos)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for answers after a run's "
                        "last send (default %(default)s)")
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="write every figure here")
    parser.add_argument("--chart", type=Path, metavar="OUT.png", help="throughput and burst latency chart")


class ReportLines(logging.Handler):
    """The first REPORT line with an Init Duration per function: its cold start."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.cold: dict[str, dict[str, float]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        match = _REPORT.match(record.getMessage())
        if match and match[1] not in self.cold:
            init_s, duration_s = float(match[3]) / 1000, float(match[2]) / 1000
            self.cold[match[1]] = {"init_s": round(init_s, 2), "duration_s": round(duration_s, 3),
                                   "first_invocation_s": round(init_s + duration_s, 2)}


def run(args: argparse.Namespace) -> int:
    if min(args.every, args.limit, args.burst, args.workload, args.threads) < 1 or args.pace < 0:
        print("facepipe bench: --every, --limit, --burst, --workload and --threads must be at least 1", file=sys.stderr)
        return 2
    try:
        frames = load_frames(args.frames, args.every, args.limit) if args.frames else \
            demo_clip_frames(args.photos, args.every, args.limit)
    except (ValueError, OSError) as exc:
        print(f"facepipe bench: {exc}", file=sys.stderr)
        return 2
    figures = bench(frames, args)
    print(table(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if args.chart:
        chart(figures, args.chart)
    return 0


def bench(frames: list[bytes], args: argparse.Namespace) -> dict[str, Any]:
    from cloud.bench.aws_model import model
    from cloud.bench.raw import RawModels, RawResult

    cores = os.cpu_count() or 1
    models = RawModels(args.weights)
    raw = {t: models.run(frames, t) for t in sorted({args.threads, *range(1, cores + 1)})}
    print(f"raw: {raw[args.threads].fps:.2f} frames/s at {args.threads} thread(s)", file=sys.stderr)

    reports = ReportLines()
    env_log = logging.getLogger("cloud.local.environment")
    env_log.addHandler(reports)
    env_log.setLevel(logging.INFO)
    external = bool(os.environ.get("FACEPIPE_FUNCTION_URL"))
    try:
        with (nullcontext() if external else _stack(args)) as stack:
            from cloud.submit import target_from_env

            target = target_from_env(dict(os.environ) if stack is None else stack.client_env())
            first = drive(frames[:1], target, concurrency=1, timeout_s=args.timeout, label="cold start")
            if stack is not None:
                for pool in stack.functions.values():  # the rest pre-started: no cold start inside a measurement
                    while len(pool.environments) < pool.concurrency:
                        pool.prestart()
                workers = max(args.concurrency)  # and each has served a frame: first-call allocations are paid
                drive(cycle(frames, 2 * workers), target, concurrency=workers, timeout_s=args.timeout, label="warm-up")
            pipeline: dict[str, RunResult] = {}
            for level in args.concurrency:
                pipeline[str(level)] = drive(frames, target, concurrency=level, timeout_s=args.timeout,
                                             label=f"pipeline x{level}")
            burst = drive(cycle(frames, args.burst), target, concurrency=args.burst, timeout_s=args.timeout,
                          label=f"burst of {args.burst}", attempts=args.attempts)
            workload = drive(cycle(frames, args.workload), target, concurrency=min(args.workload, 16),
                             pace_s=args.pace, timeout_s=args.timeout, label=f"1 per {args.pace:g} s")
    finally:
        env_log.removeHandler(reports)
    # Raw again, now the pipeline is done: on a shared machine the load changes during a run; the ratio is
    # taken against the mean of the two raw runs, and both are kept.
    raw_after = models.run(frames, args.threads)
    before = raw[args.threads]
    chosen = RawResult(args.threads, before.frames, before.faces, (before.wall_s + raw_after.wall_s) / 2,
                       (before.detect_ms + raw_after.detect_ms) / 2, (before.recognise_ms + raw_after.recognise_ms) / 2)

    pipeline_fps = {level: round(run.fps(), 3) for level, run in pipeline.items()}
    w = workload.summary()
    cold = {name: {**c, "first_frame_latency_s": round(first.latencies_s()[0], 2) if first.answered else None}
            for name, c in reports.cold.items()}
    return {
        "config": {"frames": len(frames), "source": " ".join(map(str, args.frames)) if args.frames else "demo clip",
                   "faces_per_frame": chosen.faces / chosen.frames, "cores": cores, "threads": args.threads,
                   "stack": "external" if external else "started by the bench"},
        "raw_fps": round(chosen.fps, 3),
        "raw": asdict(chosen) | {"fps_by_threads": {str(t): round(r.fps, 3) for t, r in raw.items()},
                                 "fps_before": round(before.fps, 3), "fps_after": round(raw_after.fps, 3)},
        "pipeline_fps": pipeline_fps,
        "pipeline": {level: run.summary() for level, run in pipeline.items()},
        "ratio_pipeline_raw": round(pipeline_fps[str(args.concurrency[0])] / chosen.fps, 3),
        "scaling": {level: round(fps / (int(level) * pipeline_fps[str(args.concurrency[0])]), 3)
                    for level, fps in pipeline_fps.items()},
        "burst": burst.summary() | {"attempts_per_frame": args.attempts or _edge_attempts(),
                                    "latencies_s": [round(x, 3) for x in burst.latencies_s()]},
        "workload": {"requests": args.workload, "pace_s": args.pace, **w,
                     "average_s": round(workload.wall_s / w["answered"], 3) if w["answered"] else None},
        "cold_start_s": {name: c["first_invocation_s"] for name, c in cold.items()},
        "cold_start": cold,
        "aws_model": {name: [asdict(p) for p in predictions] for name, predictions in model(
            {t: r.detect_ms for t, r in raw.items()}, {t: r.recognise_ms for t, r in raw.items()}).items()},
    }


def _stack(args: argparse.Namespace) -> AbstractContextManager[Any]:
    from cloud.local.stack import LocalStack, StackConfig

    workers = max(args.concurrency)
    quiet = {"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}
    return LocalStack(StackConfig(weights_path=args.weights, torch_threads=args.threads, prestart=False,
                                  detection_concurrency=workers, recognition_concurrency=workers, extra_env=quiet))


def _edge_attempts() -> int:
    from edge_client.config import RetriesConfig

    return RetriesConfig().max_attempts
