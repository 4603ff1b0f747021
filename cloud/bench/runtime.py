"""Local runtime benchmark: what running the functions as Lambda-like worker processes costs.

Prints, side by side, a warm invocation of the real detection handler called directly in this process
and the same event through the local stack's Runtime API path (pool -> Runtime API -> awslambdaric in a
worker process -> response), for a request the handler refuses at once (pure transport overhead) and a
real one-face frame; then each function's cold start (the worker's init: imports and model load, as
the REPORT line's Init Duration). Run: `python -m cloud.bench.runtime`.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from cloud.functions.contracts import HEADER_DEVICE_ID, HEADER_REQUEST_ID

DEFAULT_WEIGHTS = Path(".cache/models/facenet-casia-webface.pt")
DEFAULT_PHOTO = Path(".cache/photos/face_recognition/obama2.jpg")


def median_ms(call: Callable[[], Any], repeat: int) -> float:
    call()  # warm
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def frame_event(method: str, body: bytes) -> dict[str, Any]:
    from cloud.emulator.function_url import build_event

    headers = [("Content-Type", "image/jpeg"), (HEADER_REQUEST_ID, str(uuid.uuid4())),
               (HEADER_DEVICE_ID, "bench-cam")]
    return build_event(method=method, target="/", headers=headers, body=body, source_ip="127.0.0.1",
                       domain="localhost", request_id=str(uuid.uuid4()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from cloud.emulator.function_url import LambdaContext
    from cloud.emulator.stack import DETECTION, LocalStack, StackConfig
    from cloud.functions.detection import handler as detection

    quiet = {"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}  # the workers' logs
    os.environ.update(quiet)  # and the in-process handler's
    with LocalStack(StackConfig(weights_path=args.weights, extra_env=quiet)) as stack, stack.trigger.paused():
        pool = stack.functions[DETECTION]
        cases = {"refused at once (GET: 405, no model work)": frame_event("GET", b""),
                 f"one-face frame ({args.photo.name}: decode, MTCNN, enqueue)":
                     frame_event("POST", args.photo.read_bytes())}
        print(f"{'warm invocation, detection handler':58} {'in-process':>11} {'Runtime API':>12} {'overhead':>9}")
        for label, event in cases.items():
            context = LambdaContext(pool.spec.name, pool.spec.timeout_s, stack.region)
            direct = median_ms(partial(detection.handler, event, context), args.repeat)
            worker = median_ms(partial(pool.invoke, event), args.repeat)
            print(f"{label:58} {direct:8.2f} ms {worker:9.2f} ms {worker - direct:6.2f} ms", flush=True)
        for name, function in stack.functions.items():
            (environment,) = function.environments
            print(f"cold start {name}: Init Duration {environment.init_ms:.0f} ms (worker start, imports, model "
                  f"load); Max Memory Used {environment.max_memory_mb()} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
