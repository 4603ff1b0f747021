"""`facepipe local up`: start the local stack (cloud/emulator/stack.py), print its endpoints, run until a signal."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from cloud.emulator.stack import DEFAULT_MODELS, DEFAULT_WEIGHTS, LocalStack, StackConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = StackConfig()
    parser.add_argument("--moto-port", type=int, default=0, help="moto (SQS/S3/CloudFormation) port; 0 = free port")
    parser.add_argument("--url-port", type=int, default=0, help="Function URL port; 0 = free port")
    parser.add_argument("--auth", choices=["aws_iam", "none"], default=defaults.auth,
                        help="Function URL auth type (default %(default)s: SigV4-signed requests only)")
    parser.add_argument("--engine", choices=["onnx", "torch"], default=defaults.engine,
                        help="what runs the networks in both functions and in enrollment: onnx (the exported "
                             "files, as the image ships) or torch (the reference); default %(default)s")
    parser.add_argument("--models-dir", type=Path,
                        default=Path(os.environ.get("FACEPIPE_MODELS_DIR") or DEFAULT_MODELS),
                        help="the exported .onnx networks, engine onnx (`make models`; default $FACEPIPE_MODELS_DIR "
                             "or %(default)s)")
    parser.add_argument("--weights", type=Path,
                        default=Path(os.environ.get("FACEPIPE_WEIGHTS_PATH") or DEFAULT_WEIGHTS),
                        help="InceptionResnetV1 weights file, engine torch (default $FACEPIPE_WEIGHTS_PATH or "
                             "%(default)s)")
    parser.add_argument("--region", default=defaults.region)
    parser.add_argument("--prefix", default=defaults.prefix,
                        help="stack name + '-': queue and bucket names start with it (default %(default)s)")
    template = parser.add_argument_group(
        "template.yaml parameters", "unset = the template's Default; values CloudFormation refuses are refused")
    template.add_argument("--batch-size", type=int, help="RecognitionBatchSize: SQS trigger batch size")
    template.add_argument("--batching-window", type=int,
                          help="RecognitionBatchingWindow: SQS trigger MaximumBatchingWindowInSeconds")
    template.add_argument("--handler-timeout", type=int,
                          help="DetectionTimeout and RecognitionTimeout, s, unless given one by one")
    template.add_argument("--recognition-timeout", type=int,
                          help="RecognitionTimeout, s (one of the template's AllowedValues); request queue "
                               "visibility from its Mapping, 6x")
    template.add_argument("--detection-timeout", type=int, help="DetectionTimeout, s")
    template.add_argument("--max-receive-count", type=int,
                          help="MaxReceiveCount: receives before a message moves to its DLQ")
    template.add_argument("--keep-faces", choices=["true", "false"],
                          help="KeepFaces: keep every answered face under faces/ for `facepipe faces`")
    template.add_argument("--known-faces-days", type=int,
                          help="KnownFacesRetentionDays: days a named face is kept (faces/known/)")
    template.add_argument("--unknown-faces-days", type=int,
                          help="UnknownFacesRetentionDays: days a face that matched no one is kept (faces/unknown/)")
    workers = parser.add_argument_group("worker processes (one per concurrent invocation, as Lambda's "
                                        "execution environments)")
    workers.add_argument("--detection-concurrency", type=_at_least(0),
                         help="most detection workers; default DetectionReservedConcurrency, or the core count "
                              "when it is -1 (the template's default)")
    workers.add_argument("--recognition-concurrency", type=_at_least(1),
                         help="most recognition workers and SQS batches at once; default RecognitionMaxConcurrency")
    workers.add_argument("--url-queue-wait", type=float, default=defaults.url_queue_wait_s,
                         help="seconds a Function URL request waits for a busy detection worker before 429 "
                              "(default %(default)s)")
    workers.add_argument("--no-prestart", action="store_true",
                         help="start no worker before the first invocation (each function's first one is then "
                              "a cold start)")
    parser.add_argument("--devices", action="store_true",
                        help="FACEPIPE_BIND_DEVICES: URL callers must be `facepipe device add` devices, bound to "
                             "their X-Device-Id and queue (the stack's own credentials are then refused at the URL)")
    parser.add_argument("--threads", type=int, default=defaults.threads,
                        help="the engine's intra-op threads per worker (default: the cores shared by the workers "
                             "that may run at once)")


def _at_least(minimum: int) -> type[int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return parse  # type: ignore[return-value]


def endpoint_lines(stack: LocalStack) -> list[str]:
    """Human-readable endpoints, then shell `export` lines a client can paste or eval."""
    assert stack.resources is not None, "the stack is not started"
    visibility = stack.resources.queues["RequestQueue"].visibility_timeout
    lines = [
        f"function URL   {stack.function_url} (auth {stack.config.auth})",
        f"moto           {stack.endpoint_url} (SQS, S3, CloudFormation)",
        f"stack          {stack.stack_name} (template.yaml's queues and bucket in moto's CloudFormation): "
        + ", ".join(f"{name} {value}" for name, value in stack.parameters.items()),
        f"request queue  {stack.request_queue_url} (DLQ {stack.request_dlq_url}, visibility {visibility} s)",
        f"response queue {stack.response_queue_url} (DLQ {stack.response_dlq_url})",
        f"ingest queue   {stack.ingest_queue_url} (DLQ {stack.ingest_dlq_url}): image events and uploads/ "
        "notifications to detection",
        f"bucket         {stack.bucket}; gallery {stack.gallery_uri}",
        f"reply_to queue names must start with {stack.reply_to_prefix}",
        f"engine         {stack.engine_summary()} (both functions and enrollment)",
        "functions      " + "; ".join(
            f"{name} {pool.spec.handler}: up to {pool.concurrency} workers, timeout {pool.spec.timeout_s:g} s, "
            f"{pool.spec.memory_mb} MB" for name, pool in stack.functions.items()),
        "client environment:",
    ]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in stack.client_env().items()]
    return lines


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = StackConfig(
        moto_port=args.moto_port, url_port=args.url_port, auth=args.auth,
        engine=args.engine, models_dir=args.models_dir, weights_path=args.weights, region=args.region,
        prefix=args.prefix, batch_size=args.batch_size,
        batching_window_s=args.batching_window, max_receive_count=args.max_receive_count,
        keep_faces=None if args.keep_faces is None else args.keep_faces == "true",
        known_faces_days=args.known_faces_days, unknown_faces_days=args.unknown_faces_days,
        detection_timeout_s=args.handler_timeout if args.detection_timeout is None else args.detection_timeout,
        recognition_timeout_s=args.handler_timeout if args.recognition_timeout is None else args.recognition_timeout,
        threads=args.threads, detection_concurrency=args.detection_concurrency,
        recognition_concurrency=args.recognition_concurrency, url_queue_wait_s=args.url_queue_wait,
        prestart=not args.no_prestart, bind_devices=args.devices,
    )
    stopping = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            stack = LocalStack(config).start()
        except (FileNotFoundError, ValueError) as exc:  # missing model files, a value the template does not allow
            print(f"facepipe local up: {exc}", file=sys.stderr)
            return 2
        try:
            print("\n".join(endpoint_lines(stack)), flush=True)
            phases = ", ".join(f"{name[:-2]} {seconds:.1f} s" for name, seconds in stack.timings.items()
                               if name != "total_s")
            print(f"ready in {stack.timings['total_s']:.1f} s ({phases}); Ctrl-C or SIGTERM stops", flush=True)
            while not stopping.wait(0.5):
                pass
            print("stopping", flush=True)
        finally:
            stack.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("stopped", flush=True)
    return 0
