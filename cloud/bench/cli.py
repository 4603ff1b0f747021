"""`facepipe bench`: raw models vs. the pipeline on the same frames, a burst, a paced client, cold starts and
an AWS paper model; a table at the end, every figure in `--json`, a chart in `--chart`.

Runs against local stacks it starts itself, one per concurrency level k with k environments per function at
`--threads` intra-op threads, as the raw run has, on each `--engine` in turn (side by side: the same frames, cores
and run); or against the stack `FACEPIPE_FUNCTION_URL` and the other
variables `facepipe local up` exports point at (then cold starts are not measured and nothing is pinned: its
workers are not ours).

At equal cores: raw runs pinned to the first level's cores (cloud/bench/cores.py), and level k's workers to k
cores while it is measured, so "pipeline / raw" compares the same CPU and "scaling" adds one core per level. The
stack's own process (moto, the URL, the SQS trigger) and the client then run on the other cores, if any: on AWS
they are the services around the functions and the edge, not the functions' vCPUs. On the cores they share,
recognition's workers run ahead of detection's (`_sharing`), one model at a time, as in raw.

The first level is measured `--repeat` times, each pass between two raw runs on the same cores, and the ratio is
the median pass's: on a shared machine whose speed drifts, both sides of a ratio are measured within seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloud.bench import function_cpu
from cloud.bench.cores import CAN_PIN, available, busy_seconds, cpu_seconds, first, pin, pinned_self, set_group_nice
from cloud.bench.drive import RunResult, drive
from cloud.bench.frames import cycle, filmed_frames, load_frames
from cloud.bench.report import chart, side_by_side, side_by_side_table, table

if TYPE_CHECKING:  # torch and the local stack are imported only when the bench runs
    from cloud.bench.raw import RawModels, RawResult
    from cloud.emulator.pool import FunctionPool
    from cloud.emulator.stack import LocalStack

DEFAULT_WEIGHTS = Path(".cache/models/facenet-casia-webface.pt")
DEFAULT_MODELS = Path(os.environ.get("FACEPIPE_MODELS_DIR") or ".cache/models")  # as `facepipe local up`
ENGINES = ("onnx", "torch")
DEFAULT_PHOTOS = Path(".cache/photos")
_REPORT = re.compile(r"^(\w+) REPORT RequestId: (\S+)\tDuration: ([\d.]+) ms.*\tMax Memory Used: (\d+) MB"
                     r"(?:\tInit Duration: ([\d.]+) ms)?")


def _levels(text: str) -> list[int]:
    try:
        levels = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of whole numbers, e.g. 1,2") from None
    if not levels or levels[0] < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be at least 1")
    return levels


def _engines(text: str) -> list[str]:
    engines = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if not engines or unknown or len(set(engines)) != len(engines):
        raise argparse.ArgumentTypeError(f"one or both of {', '.join(ENGINES)}, comma-separated, each once")
    return engines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cores = len(available())  # a taskset around the bench narrows the default levels too
    parser.add_argument("--frames", type=Path, nargs="+", metavar="PATH",
                        help="a video, photos or folders (default: the demo clip, filmed from --photos)")
    parser.add_argument("--film", type=Path, nargs="+", metavar="PHOTO",
                        help="a clip filmed from these photos, as the demo films its own (default: the demo's, "
                             "from --photos)")
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
    parser.add_argument("--repeat", type=int, default=5,
                        help="passes of the first concurrency level, each between two raw runs on its cores; the "
                             "ratio is the median pass's (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="the engine's threads per worker and in the raw run (default %(default)s)")
    parser.add_argument("--engine", type=_engines, default=["onnx"], metavar="ENGINE[,ENGINE]",
                        help="what runs the networks, in the stack and in raw: onnx, torch, or both side by side in "
                             "one run, e.g. onnx,torch (default onnx)")
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS,
                        help="the exported .onnx files (default: $FACEPIPE_MODELS_DIR or .cache/models; make models)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="the torch engine's state_dict")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="packaged sample photos (make photos)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for answers after a run's "
                        "last send (default %(default)s)")
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="write every figure here")
    parser.add_argument("--function-log", type=Path, metavar="FILE",
                        default=Path(tempfile.gettempdir()) / "facepipe-bench-functions.log",
                        help="the functions' logs and EMF metrics of this run (default %(default)s)")
    parser.add_argument("--chart", type=Path, metavar="OUT.png", help="throughput and burst latency chart")


class ReportLines(logging.Handler):
    """Once armed, per function: the first REPORT line with an Init Duration (the cold start of the frame sent next)
    and the largest Max Memory Used of any REPORT (a worker's resident peak, as Lambda's). Lines before are not the
    bench's frames' (S3's test event starts a detection worker as the stack comes up)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.cold: dict[str, dict[str, Any]] = {}
        self.max_memory_mb: dict[str, int] = {}
        self.armed = False

    def emit(self, record: logging.LogRecord) -> None:
        match = _REPORT.match(record.getMessage())
        if not (self.armed and match):
            return
        function = match[1]
        self.max_memory_mb[function] = max(self.max_memory_mb.get(function, 0), int(match[4]))
        if match[5] and function not in self.cold:
            init_s, duration_s = float(match[5]) / 1000, float(match[3]) / 1000
            self.cold[function] = {"init_s": round(init_s, 2), "duration_s": round(duration_s, 3),
                                   "first_invocation_s": round(init_s + duration_s, 2), "request_id": match[2],
                                   "max_memory_mb": int(match[4])}


def run(args: argparse.Namespace) -> int:
    if min(args.every, args.limit, args.burst, args.workload, args.threads, args.repeat) < 1 or args.pace < 0:
        print("facepipe bench: --every, --limit, --burst, --workload, --threads and --repeat must be at least 1, "
              "--pace 0 or more", file=sys.stderr)
        return 2
    unwritable = _unwritable_outputs(args)
    if unwritable:
        print(f"facepipe bench: cannot write {unwritable} (the run takes minutes: checked first)", file=sys.stderr)
        return 2
    from cloud.bench.raw import RawModels
    from cloud.emulator.demo import FILMED
    from cloud.functions.recognition.network import WeightsInvalid, WeightsMissing
    from cloud.operator.submit import SubmitError

    try:
        frames = load_frames(args.frames, args.every, args.limit) if args.frames else \
            filmed_frames(args.film or [args.photos / name for name in FILMED], args.every, args.limit)
    except (ValueError, OSError, SubmitError) as exc:
        hint = "" if args.frames or args.film else \
            f" (the demo clip is filmed from the photos in --photos {args.photos}; `make photos` fetches them)"
        print(f"facepipe bench: {exc}{hint}", file=sys.stderr)
        return 2
    args.function_log.unlink(missing_ok=True)  # this run's only
    try:  # every engine's models, before any stack starts: a missing file fails now, not after a first engine's run
        models = {engine: RawModels(args.weights, engine, args.models_dir) for engine in args.engine}
    except (WeightsMissing, WeightsInvalid, FileNotFoundError, ValueError) as exc:
        print(f"facepipe bench: {exc}", file=sys.stderr)
        return 2
    by_engine: dict[str, dict[str, Any]] = {}
    for engine, raw_models in models.items():
        by_engine[engine] = bench(frames, args, raw_models)
        print(table(by_engine[engine]) + "\n")
    figures: dict[str, Any] = by_engine[args.engine[0]]
    if len(by_engine) > 1:
        figures = {"engines": by_engine, "side_by_side": side_by_side(by_engine)}
        print(side_by_side_table(figures["side_by_side"]))
    if not os.environ.get("FACEPIPE_FUNCTION_URL"):
        print(f"\nthe functions' logs and metrics: {args.function_log}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if args.chart:
        chart(by_engine[args.engine[0]], args.chart)
    return 0


def _unwritable_outputs(args: argparse.Namespace) -> str:
    """The first of --json, --chart and --function-log whose folder is missing or not writable, as `--json PATH`."""
    for option, path in (("--json", args.json), ("--chart", args.chart), ("--function-log", args.function_log)):
        if path is not None and not (path.parent.is_dir() and os.access(path.parent, os.W_OK)):
            return f"{option} {path}: no writable folder {path.parent}"
    return ""


def bench(frames: list[bytes], args: argparse.Namespace, models: RawModels) -> dict[str, Any]:
    """Every figure of one engine's run: raw on `models`, then the stacks on the same engine."""
    from cloud.bench.aws_model import model

    cores = len(available())
    engine = models.engine
    # k threads on k cores, as `taskset -c 0..k-1` would: for the AWS model's thread scaling.
    raw = {k: _raw_on(models, frames, k, k) for k in range(1, cores + 1)}
    # The reference: the cores and threads of the first concurrency level's workers ("at equal cores").
    ref_cores = len(first(args.concurrency[0]))
    print(f"raw: {raw[1].fps:.2f} frames/s on 1 core, 1 thread", file=sys.stderr)

    # As many threads as the level's workers run on those cores: with 1 thread, raw could use one of them only.
    ref_threads = args.threads * ref_cores

    def probe() -> RawResult:
        return _raw_on(models, frames, ref_cores, ref_threads)

    reports = ReportLines()
    env_log = logging.getLogger("cloud.emulator.environment")
    env_log.addHandler(reports)
    env_log.setLevel(logging.INFO)
    external = bool(os.environ.get("FACEPIPE_FUNCTION_URL"))
    try:
        runs = _external_runs(frames, args, probe) if external else \
            _own_stack_runs(frames, args, probe, reports, engine)
    finally:
        env_log.removeHandler(reports)
    first_level = str(args.concurrency[0])
    # The ratio is the median pass's; its raw, the mean of the raw runs just before and after it.
    median = sorted(runs.first_passes, key=Paired.ratio)[len(runs.first_passes) // 2]
    chosen = _mean(median.raw_before, median.raw_after)
    pipeline = {first_level: median.measured, **runs.pipeline}  # by level, in order

    pipeline_fps = {level: round(p.run.fps(), 3) for level, p in pipeline.items()}
    # The first level's passes; a recognition batch flushes its metrics just after its last answer is sent.
    windows = [(p.measured.run.started_at, p.measured.run.started_at + p.measured.run.wall_s + 1.0)
               for p in runs.first_passes]
    workers_ms = _workers_ms(median.measured.cpu_ms)
    w = runs.workload.summary()
    # The frame's own Lambda request id (the URL's x-amzn-RequestId), beside the REPORT's: detection's cold start
    # was the frame's when they are the same.
    frame = runs.cold.shots[0]
    cold = {name: {**c, "first_frame_latency_s": round(runs.cold.latencies_s()[0], 2) if runs.cold.answered else None,
                   "first_frame_request_id": frame.invocation_id, "first_frame_attempts": frame.attempts}
            for name, c in reports.cold.items()}
    return {
        "config": {"engine": engine, "frames": len(frames), "source": _source(args),
                   "faces_per_frame": chosen.faces / chosen.frames, "cores": cores, "threads": args.threads,
                   "stack": "external" if external else "started by the bench",
                   # pinned: raw on the first level's cores, each level's workers on its first `level` cores
                   "pinned": CAN_PIN and not external, "raw_cores": ref_cores, "raw_threads": ref_threads,
                   "recognition_first": runs.recognition_first, "repeat": args.repeat},
        "raw_fps": round(chosen.fps, 3),
        "raw": asdict(chosen) | {"fps_by_cores": {str(k): round(r.fps, 3) for k, r in raw.items()},
                                 "fps_before": round(median.raw_before.fps, 3),
                                 "fps_after": round(median.raw_after.fps, 3)},
        "pipeline_fps": pipeline_fps,
        # Per frame: the CPU of each function's workers and of the bench's own process (moto, URL, trigger, client),
        # against raw's `cpu_ms`; their cores' busy and idle time; and at the first level the workers' CPU with a
        # core (set) per function. What the plumbing costs in CPU, in sharing cores, and in waiting.
        "pipeline": {level: p.run.summary() | {"cpu_ms_per_frame": p.cpu_ms, "cores_ms_per_frame": p.cores_ms}
                     | ({"cpu_ms_per_frame_core_per_function": runs.apart_cpu_ms[level]}
                        if level in runs.apart_cpu_ms else {})
                     for level, p in pipeline.items()},
        "ratio_pipeline_raw": round(median.ratio(), 3),
        # The functions' own EMF figures over the first level's passes: CPU per frame in each handler and in its
        # model. And the most the median pass's pipeline / raw could have been with no idle time: raw's time per
        # frame over that pass's workers' CPU per frame on the same cores.
        "function_cpu_ms_per_frame": {} if external else function_cpu.per_frame(
            function_cpu.read(args.function_log), windows, len(frames) * len(runs.first_passes)),
        "ratio_ceiling": round(1000 / chosen.fps / (workers_ms / ref_cores), 3) if workers_ms else None,
        # Every pass of the first level, in order: its frames/s, the raw runs around it, and their ratio.
        "ratio_passes": [{"pipeline_fps": round(p.measured.run.fps(), 3), "raw_fps_before": round(p.raw_before.fps, 3),
                          "raw_fps_after": round(p.raw_after.fps, 3), "ratio": round(p.ratio(), 3),
                          "started_at": round(p.measured.run.started_at, 3), "wall_s": round(p.measured.run.wall_s, 3)}
                         for p in runs.first_passes],
        "scaling": {level: round(fps / (int(level) * pipeline_fps[first_level]), 3)
                    for level, fps in pipeline_fps.items()},
        "burst": runs.burst.summary() | {"attempts_per_frame": args.attempts or _edge_attempts(),
                                         "latencies_s": [round(x, 3) for x in runs.burst.latencies_s()]},
        "workload": {"requests": args.workload, "pace_s": args.pace, **w,
                     "average_s": round(runs.workload.wall_s / w["answered"], 3) if w["answered"] else None},
        "cold_start_s": {name: c["first_invocation_s"] for name, c in cold.items()},
        "cold_start": cold,
        # Each function's largest REPORT Max Memory Used over the whole run (the burst included): its workers' peak.
        "max_memory_mb": dict(reports.max_memory_mb),
        "aws_model": {name: [asdict(p) for p in predictions] for name, predictions in model(
            {t: r.detect_ms for t, r in raw.items()}, {t: r.recognise_ms for t, r in raw.items()}).items()},
    }


def _mean(a: RawResult, b: RawResult) -> RawResult:
    from cloud.bench.raw import RawResult

    return RawResult(a.threads, a.frames, a.faces, (a.wall_s + b.wall_s) / 2, (a.detect_ms + b.detect_ms) / 2,
                     (a.recognise_ms + b.recognise_ms) / 2, (a.cpu_ms + b.cpu_ms) / 2)


@dataclass
class Pass:
    """One measured run of a concurrency level's frames."""

    run: RunResult
    cpu_ms: dict[str, float] = field(default_factory=dict)  # function or "stack_and_client" -> ms per frame
    cores_ms: dict[str, float] = field(default_factory=dict)  # the level's cores: busy, idle, other per frame


@dataclass
class Paired:
    """A pass of the first level, with raw's runs on the same cores right before and right after it."""

    measured: Pass
    raw_before: RawResult
    raw_after: RawResult

    def ratio(self) -> float:
        """Pipeline over raw: the pass's frames/s against the mean of the raw runs around it."""
        return self.measured.run.fps() / ((self.raw_before.fps + self.raw_after.fps) / 2)


@dataclass
class Runs:
    cold: RunResult  # the first frame, to a new worker
    first_passes: list[Paired]  # the first level's passes, each between two raw runs
    pipeline: dict[str, Pass]  # the other levels, one pass each
    burst: RunResult
    workload: RunResult
    apart_cpu_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # level -> function, a core set each
    recognition_first: bool = False  # recognition's workers ran ahead of detection's on the cores they shared


def _paired(measure: Callable[[], Pass], probe: Callable[[], RawResult], repeat: int) -> list[Paired]:
    """`repeat` passes, raw run before, between and after them: a machine whose speed drifts (a shared one) moves
    both sides of each ratio alike."""
    passes: list[Paired] = []
    before = probe()
    for _ in range(repeat):
        measured = measure()
        passes.append(Paired(measured, before, probe()))
        before = passes[-1].raw_after
    return passes


def _own_stack_runs(frames: list[bytes], args: argparse.Namespace, probe: Callable[[], RawResult],
                    reports: ReportLines, engine: str) -> Runs:
    """A stack per concurrency level k, with k environments per function (as a reserved concurrency of k), pre-
    started, warmed, and pinned to k cores while measured: the first level's stack starts cold, so its first frame
    measures cold starts, is measured `--repeat` times between raw runs, and runs the frames once more with k cores
    per function; the last one's also takes the burst and the paced client, on every core."""
    from cloud.operator.submit import target_from_env

    first_passes: list[Paired] = []
    pipeline: dict[str, Pass] = {}
    apart: dict[str, dict[str, float]] = {}
    recognition_first: list[bool] = []
    for level in args.concurrency:
        with _stack(args, level, engine) as stack:
            target = target_from_env(stack.client_env())
            if level == args.concurrency[0]:
                _only_new_workers(stack, args.timeout)
                reports.armed = True
                cold_run = drive(frames[:1], target, concurrency=1, timeout_s=args.timeout, label="cold start")
            stack.start_every_worker()  # no cold start inside a measurement
            _warm_up(frames, target, level, args)
            with _sharing(stack, first(level)) as ordered:
                recognition_first.append(ordered)
                measure = partial(_measure, stack, target, frames, level, args)
                if level == args.concurrency[0]:
                    first_passes = _paired(measure, probe, args.repeat)
                else:
                    pipeline[str(level)] = measure()
            if level == args.concurrency[0] and CAN_PIN and 2 * level <= len(available()):
                apart[str(level)] = _core_per_function(stack, frames, target, level, args)
                _pin_workers(stack, set(available()))
            if level == args.concurrency[-1]:
                burst, workload = _burst_and_workload(frames, target, args)
    return Runs(cold_run, first_passes, pipeline, burst, workload, apart, all(recognition_first))


def _measure(stack: LocalStack, target: Any, frames: list[bytes], level: int, args: argparse.Namespace) -> Pass:
    """One pass of the frames at `level`, its workers on its first `level` cores (pinned by the caller)."""
    cores = first(level)
    rest = set(available()) - cores
    cpu_before, busy_before = _cpu_s(stack), busy_seconds(cores)
    # The stack (moto, URL, trigger) and the client off the workers' cores while there are others: on AWS they are
    # services and an edge, not the functions' vCPUs.
    with pinned_self(rest) if rest else nullcontext():
        run = drive(frames, target, concurrency=level, timeout_s=args.timeout, label=f"pipeline x{level}")
    cpu = _per_frame(_cpu_s(stack), cpu_before, len(frames))
    return Pass(run, cpu, _cores_per_frame(busy_seconds(cores) - busy_before, cpu, len(cores), run.wall_s, len(frames)))


def _core_per_function(stack: LocalStack, frames: list[bytes], target: Any, level: int,
                       args: argparse.Namespace) -> dict[str, float]:
    """The frames again with each function's workers on cores of their own (`level` each, as on AWS, where every
    environment has its own vCPU share): against the shared run, what sharing the cores still costs."""
    available_cores = available()
    for index, pool in enumerate(stack.functions.values()):
        _pin_pool(pool, set(available_cores[index * level:(index + 1) * level]))
    before = _cpu_s(stack)
    drive(frames, target, concurrency=level, timeout_s=args.timeout, label=f"x{level}, a core per function")
    used = _per_frame(_cpu_s(stack), before, len(frames))
    return {name: ms for name, ms in used.items() if name in stack.functions}


def _per_frame(after: dict[str, float], before: dict[str, float], frames: int) -> dict[str, float]:
    return {name: round((seconds - before[name]) * 1000 / frames, 1) for name, seconds in after.items()}


def _cores_per_frame(busy_s: float, cpu_ms: dict[str, float], cores: int, wall_s: float,
                     frames: int) -> dict[str, float]:
    """Where a level's core time went, ms per frame of its run (first send to last answer): its workers' CPU,
    what other processes took from its cores (the stack, the client, the system), and idle, when every one of its
    workers was waiting. `busy_s` spans the run's wind-down too (the answer collector stopping), so idle is taken
    against the run's own wall time rather than read from /proc/stat."""
    workers = _workers_ms(cpu_ms)
    other = max(0.0, busy_s * 1000 / frames - workers)
    idle = max(0.0, cores * wall_s * 1000 / frames - workers - other)
    return {"cores": cores, "busy": round(workers + other, 1), "idle": round(idle, 1), "other": round(other, 1)}


def _workers_ms(cpu_ms: dict[str, float]) -> float:
    """The functions' workers' part of a CPU-per-frame breakdown: all but the bench's own process."""
    return sum(ms for name, ms in cpu_ms.items() if name != "stack_and_client")


def _only_new_workers(stack: LocalStack, timeout_s: float) -> None:
    """No worker left for the first frame but new ones. As the stack comes up, S3 sends a test event to the ingest
    queue (when the bucket's notifications are configured, as on AWS), and detection's ingest trigger starts a
    worker for it. Left alone, that worker is still initialising when the frame comes: the frame waits, is
    throttled (429) at a concurrency of 1, and its cold start is not measured. So the event is consumed first (the
    queue empty), and the idle workers are reclaimed, as Lambda reclaims idle ones."""
    sqs = stack.client("sqs")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = sqs.get_queue_attributes(QueueUrl=stack.ingest_queue_url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        if not any(int(count) for count in counts.values()):
            break
        time.sleep(0.1)
    for pool in stack.functions.values():
        pool.reclaim_idle()


def _warm_up(frames: list[bytes], target: Any, level: int, args: argparse.Namespace) -> None:
    """Every frame once per request in flight at `level`: as many workers as the level keeps busy are started and
    past their first calls, as raw's process has seen the frames, before anything is timed (steady state)."""
    drive(cycle(frames, level * len(frames)), target, concurrency=level, timeout_s=args.timeout,
          label=f"warm-up x{level}")


def _external_runs(frames: list[bytes], args: argparse.Namespace, probe: Callable[[], RawResult]) -> Runs:
    """The stack the environment points at, as it is: not pinned, its concurrency its own."""
    from cloud.operator.submit import target_from_env

    target = target_from_env(dict(os.environ))

    def measure(level: int) -> Pass:
        return Pass(drive(frames, target, concurrency=level, timeout_s=args.timeout, label=f"pipeline x{level}"))

    cold_run = drive(frames[:1], target, concurrency=1, timeout_s=args.timeout, label="first frame")
    _warm_up(frames, target, args.concurrency[0], args)
    first_passes = _paired(lambda: measure(args.concurrency[0]), probe, args.repeat)
    pipeline = {}
    for level in args.concurrency[1:]:
        _warm_up(frames, target, level, args)
        pipeline[str(level)] = measure(level)
    return Runs(cold_run, first_passes, pipeline, *_burst_and_workload(frames, target, args))


def _burst_and_workload(frames: list[bytes], target: Any, args: argparse.Namespace) -> tuple[RunResult, RunResult]:
    burst = drive(cycle(frames, args.burst), target, concurrency=args.burst, timeout_s=args.timeout,
                  label=f"burst of {args.burst}", attempts=args.attempts)
    workload = drive(cycle(frames, args.workload), target, concurrency=min(args.workload, 16),
                     pace_s=args.pace, timeout_s=args.timeout, label=f"1 per {args.pace:g} s")
    return burst, workload


def _raw_on(models: RawModels, frames: list[bytes], cores: int, threads: int) -> RawResult:
    with pinned_self(first(cores)):
        return models.run(frames, threads)


def _cpu_s(stack: LocalStack) -> dict[str, float]:
    """CPU seconds used so far by each function's live workers, and by this process ("stack_and_client")."""
    used = {"stack_and_client": time.process_time()}
    for name, pool in stack.functions.items():
        used[name] = sum(cpu_seconds(environment.pid) for environment in pool.environments if environment.alive)
    return used


@contextmanager
def _sharing(stack: LocalStack, cores: set[int]) -> Iterator[bool]:
    """Every worker of the stack on `cores` for the block, recognition's ahead of detection's; after it, every
    worker on every core again, on an equal footing. Yields whether the kernel was told to order them.

    On AWS the two functions never share a vCPU; here, to compare equal CPU with raw, both are pinned to raw's
    cores. Left to itself, the kernel then runs detection of the next frame and recognition of the last one side by
    side, a few ms each in turn, and the two models evict each other from the caches: two processes doing detect /
    embed on one core took 139-141 ms a one-face frame that way, 131 taking turns, a cost neither raw nor Lambda
    pays. Recognition first (detection's group at nice 19) runs one model at a time, as raw does, and hands a frame
    on before the next one takes the core, as a pipeline should."""
    from cloud.emulator.stack import DETECTION

    _pin_workers(stack, cores)
    behind = [environment.pid for environment in stack.functions[DETECTION].environments if environment.alive]
    ordered = bool(behind) and all([set_group_nice(pid, 19) for pid in behind])  # a list: every worker, no short cut
    try:
        yield ordered
    finally:
        for pid in behind:
            set_group_nice(pid, 0)
        _pin_workers(stack, set(available()))


def _pin_workers(stack: LocalStack, cores: set[int]) -> None:
    """Every worker of the stack on `cores`: a pipeline level gets as many cores as it has requests in flight."""
    for pool in stack.functions.values():
        _pin_pool(pool, cores)


def _pin_pool(pool: FunctionPool, cores: set[int]) -> None:
    for environment in pool.environments:
        if environment.alive:
            pin(environment.pid, cores)


def _stack(args: argparse.Namespace, workers: int, engine: str) -> AbstractContextManager[Any]:
    from cloud.emulator.stack import LocalStack, StackConfig
    from cloud.functions.settings import Settings

    # The gallery is rechecked as deployed, every gallery_refresh_s (the local stack's own 0, a HEAD per batch, is
    # for enroll() to reach warm workers at once; the bench never enrolls).
    deployed = {"FACEPIPE_GALLERY_REFRESH_S": str(Settings.model_fields["gallery_refresh_s"].default)}
    # The functions log and emit metrics as on AWS (CloudWatch's part goes to a file), so they cost what they cost
    # there, and the terminal keeps the progress bars and the table.
    # Each level's stack is a CloudFormation stack of its own name: moto keeps the last one's in this process.
    return LocalStack(StackConfig(engine=engine, models_dir=args.models_dir,  # type: ignore[arg-type]
                                  weights_path=args.weights, threads=args.threads, prestart=False,
                                  detection_concurrency=workers, recognition_concurrency=workers,
                                  function_log=args.function_log, extra_env=deployed,
                                  prefix=f"facepipe-bench-{engine}-x{workers}-"))


def _source(args: argparse.Namespace) -> str:
    if args.frames:
        return " ".join(map(str, args.frames))
    return "a clip filmed from " + ", ".join(p.name for p in args.film) if args.film else "demo clip"


def _edge_attempts() -> int:
    from edge_client.config import RetriesConfig

    return RetriesConfig().max_attempts
