"""Handler benchmark: prints the figures docs/bench.md quotes, measured side by side in one run.

- detection handler ms per 640x480 and 1280x720 frame (full handler: decode, MTCNN, enqueue to SQS)
- recognition ms per face, alone and in a batch of 8 (one InceptionResnetV1 forward pass)
- recognition handler ms per SQS batch of 8 one-face messages
- cold start of each handler: new Python process to first result

SQS/S3 are a real moto server on 127.0.0.1, as in the local stack. Run: `make bench`.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer
from PIL import Image

REGION = "us-east-1"


def _median_ms(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median and minimum wall time of `fn` in ms, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times)


def _jpeg(photo: Path, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.open(photo).convert("RGB").resize(size, Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def function_url_event(body: bytes, device: str = "bench") -> dict:
    """A payload-format-2.0 event as the Function URL builds it."""
    request_id = str(uuid.uuid4())
    return {
        "version": "2.0",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": {"x-request-id": request_id, "x-device-id": device, "content-type": "image/jpeg"},
        "body": base64.b64encode(body).decode(),
        "isBase64Encoded": True,
        "requestContext": {"http": {"method": "POST", "path": "/", "sourceIp": "127.0.0.1"}, "requestId": request_id},
    }


def sqs_event(bodies: list[str]) -> dict:
    now = str(int(time.time() * 1000))
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": "bench",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": now},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:bench-requests",
                "awsRegion": REGION,
            }
            for body in bodies
        ]
    }


def _environment(endpoint: str, weights: Path, workdir: Path) -> dict[str, str]:
    aws = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }
    os.environ.update(aws)
    sqs = boto3.client("sqs")
    boto3.client("s3").create_bucket(Bucket="bench")
    return {
        **aws,
        "FACEPIPE_REQUEST_QUEUE_URL": sqs.create_queue(QueueName="bench-requests")["QueueUrl"],
        "FACEPIPE_RESPONSE_QUEUE_URL": sqs.create_queue(QueueName="bench-responses")["QueueUrl"],
        "FACEPIPE_BUCKET": "bench",
        "FACEPIPE_GALLERY_URI": str(workdir / "gallery.npz"),
        "FACEPIPE_ENGINE": "torch",  # the engine these figures were measured on (the default is now onnx)
        "FACEPIPE_WEIGHTS_PATH": str(weights),
        "FACEPIPE_THREADS": "2",
        # Quiet handlers: their JSON logs and EMF metrics are for CloudWatch, not for this printout.
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }


_COLD_START = """
import json, sys, time
start = float(sys.argv[1])
event = json.load(open(sys.argv[2]))
from {module} import handler
result = handler(event, None)
print(json.dumps({{"seconds": time.time() - start, "result": result}}, default=str))
"""


def cold_start_s(module: str, event: dict, env: dict[str, str], workdir: Path) -> tuple[float, dict]:
    """New process to first result: spawn Python, import the handler (model load), handle one event."""
    event_file = workdir / f"{module}.event.json"
    event_file.write_text(json.dumps(event))
    start = time.time()
    out = subprocess.run(
        [sys.executable, "-c", _COLD_START.format(module=module), str(start), str(event_file)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith('{"seconds"')][-1]
    parsed = json.loads(line)
    return parsed["seconds"], parsed["result"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    workdir = Path(".cache/bench")
    workdir.mkdir(parents=True, exist_ok=True)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = _environment(f"http://{host}:{port}", args.weights.resolve(), workdir.resolve())
    os.environ.update(env)

    # Imported after the environment is set: the handlers read it once per process, as in Lambda.
    from cloud.functions.detection import handler as detection
    from cloud.functions.detection.detector import Detector
    from cloud.functions.enrollment import enroll_photos
    from cloud.functions.recognition import handler as recognition
    from cloud.functions.recognition.embedder import Embedder

    photo = args.photos / "face_recognition" / "obama.jpg"
    enroll_photos(env["FACEPIPE_GALLERY_URI"], args.weights, {"barack_obama": [photo]})
    frames = {"640x480": _jpeg(photo, (640, 480)), "1280x720": _jpeg(photo, (1280, 720))}

    print(f"# facepipe handler benchmark ({os.cpu_count()} cores, torch threads 2, median of {args.repeat})")
    # Cold starts first, while this process has loaded no model (the two share the machine's cores).
    cold_det, _ = cold_start_s("cloud.functions.detection.handler", function_url_event(frames["640x480"]), env, workdir)
    sqs = boto3.client("sqs")
    queued = sqs.receive_message(QueueUrl=env["FACEPIPE_REQUEST_QUEUE_URL"], MaxNumberOfMessages=1)["Messages"][0]
    cold_rec, _ = cold_start_s("cloud.functions.recognition.handler", sqs_event([queued["Body"]]), env, workdir)
    print(f"cold start, detection handler (new process to 202):            {cold_det:6.2f} s")
    print(f"cold start, recognition handler (new process to batch result):  {cold_rec:6.2f} s")

    for label, body in frames.items():
        median, best = _median_ms(partial(detection.handler, function_url_event(body), None), args.repeat)
        print(f"detection handler, {label:>9} frame, 1 face:   {median:7.1f} ms (min {best:.1f})")

    detector = Detector(threads=2)
    crop = detector.detect(Image.open(photo))[0].crop
    embedder = Embedder(args.weights, threads=2)
    one, _ = _median_ms(lambda: embedder.embed([crop]), args.repeat)
    eight, _ = _median_ms(lambda: embedder.embed([crop] * 8), args.repeat)
    print(f"recognition embed, 1 face:                    {one:7.1f} ms")
    print(f"recognition embed, batch of 8:                {eight:7.1f} ms ({eight / 8:.1f} ms per face)")

    bodies = []
    for _ in range(8):
        detection.handler(function_url_event(frames["640x480"]), None)
        bodies.append(sqs.receive_message(QueueUrl=env["FACEPIPE_REQUEST_QUEUE_URL"])["Messages"][0]["Body"])
    batch, _ = _median_ms(lambda: recognition.handler(sqs_event(bodies), None), args.repeat)
    print(f"recognition handler, SQS batch of 8 frames:   {batch:7.1f} ms ({batch / 8:.1f} ms per frame)")
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
