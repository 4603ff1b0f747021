"""`facepipe submit PATH...`: a folder of photos or a video through one door, every answer collected.

Doors (`--via`):
- `url`: POST each image to the Function URL (SigV4-signed when the URL's auth is AWS_IAM), 202 expected;
- `queue`: an `ImageEvent` on the ingest queue, the image inline when the message fits 256 KiB, else put
  under uploads/ (metadata `image-event`, so its S3 notification is not detected a second time) and referenced;
- `s3`: put under uploads/ (metadata `device-id`, `reply-to`); the request id is the documented uuid5
  (cloud.functions.contracts.s3_request_id) of bucket, key and the version PutObject reports.

Answers are read by request id from a per-run reply_to queue (named with the stack's reply_to prefix, created
and deleted here) or, when the stack has no prefix, from the shared response queue (other clients' answers
are left there, visible again at once). One line per input goes to `--out` (.jsonl or .csv); a summary
follows; the exit status is 1 when any input was refused or not answered within `--timeout`.

Endpoints come from the environment `facepipe local up` prints (FACEPIPE_FUNCTION_URL, ..._RESPONSE_QUEUE_URL,
..._INGEST_QUEUE_URL, ..._BUCKET, ..._REPLY_TO_PREFIX, FACEPIPE_EDGE__ENDPOINT__AUTH) or, with `--stack`,
from a deployed stack's outputs.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cloud.functions import aws
from cloud.functions.contracts import (
    DEVICE_ID_METADATA,
    HEADER_DEVICE_ID,
    HEADER_REPLY_TO,
    HEADER_REQUEST_ID,
    IMAGE_EVENT_METADATA,
    MAX_QUEUE_MESSAGE_BYTES,
    REPLY_TO_METADATA,
    UPLOADS_PREFIX,
    ImageEvent,
    S3ImageRef,
    s3_request_id,
)

Door = Literal["url", "queue", "s3"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
POLL_WAIT_S = 2
INLINE_HEADROOM = 2048  # bytes of an image event's message besides the image (ids, names, JSON)
URL_ATTEMPTS = 10  # per image through the URL: with backoff capped at 8 s, about a minute of 429s before giving up


class SubmitError(Exception):
    """A usage or configuration problem, reported in one line."""


# --- inputs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    label: str  # the path, or "<video>#<frame index>"
    name: str  # a file name for the answer and the S3 key
    read: Any  # () -> bytes: the image, read or encoded when sent


def _video_frames(path: Path, every: int) -> Iterator[Input]:
    import cv2  # opencv-python-headless: in the cloud and edge extras

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SubmitError(f"{path}: cannot open the video")
    index = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index % every == 0:
                ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
                if ok:
                    data = jpeg.tobytes()
                    yield Input(f"{path}#{index}", f"{path.stem}-{index:06d}.jpg", lambda data=data: data)
            index += 1
    finally:
        capture.release()


def collect_inputs(paths: list[Path], every: int) -> list[Input]:
    """Images (a folder: its JPEG and PNG files, recursively, sorted) and every `every`th frame of videos."""
    inputs: list[Input] = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            files = [path]
        else:
            raise SubmitError(f"{path}: no such file or folder")
        for file in files:
            if file.suffix.lower() in VIDEO_SUFFIXES:
                inputs.extend(_video_frames(file, every))
            elif file.suffix.lower() in IMAGE_SUFFIXES:
                inputs.append(Input(str(file), file.name, file.read_bytes))
            else:
                raise SubmitError(f"{file}: not a JPEG, PNG or video ({', '.join(sorted(VIDEO_SUFFIXES))})")
    return inputs


# --- the stack ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    function_url: str
    auth: str  # aws_iam or none
    response_queue_url: str
    ingest_queue_url: str
    bucket: str
    reply_to_prefix: str


def target_from_env(env: dict[str, str]) -> Target:
    return Target(
        function_url=env.get("FACEPIPE_FUNCTION_URL", ""),
        auth=env.get("FACEPIPE_EDGE__ENDPOINT__AUTH", "aws_iam").lower(),
        response_queue_url=env.get("FACEPIPE_RESPONSE_QUEUE_URL", ""),
        ingest_queue_url=env.get("FACEPIPE_INGEST_QUEUE_URL", ""),
        bucket=env.get("FACEPIPE_BUCKET", ""),
        reply_to_prefix=env.get("FACEPIPE_REPLY_TO_PREFIX", ""),
    )


def target_from_stack(cloudformation: Any, stack_name: str) -> Target:
    """A deployed stack's endpoints from its outputs (template.yaml's Outputs) and ReplyToPrefix parameter."""
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    return Target(
        function_url=outputs.get("FunctionUrl", ""),
        auth=outputs.get("FunctionUrlAuthType", "AWS_IAM").lower(),
        response_queue_url=outputs.get("ResponseQueueUrl", ""),
        ingest_queue_url=outputs.get("IngestQueueUrl", ""),
        bucket=outputs.get("BucketName", ""),
        reply_to_prefix=parameters.get("ReplyToPrefix", ""),
    )


def _require(target: Target, via: Door) -> None:
    needed = {"url": ["function_url"], "queue": ["ingest_queue_url"], "s3": ["bucket"]}[via]
    missing = [name for name in [*needed, "response_queue_url"] if not getattr(target, name)]
    if missing:
        names = ", ".join(f"FACEPIPE_{name.upper()}" for name in missing)
        raise SubmitError(f"--via {via} needs {names} (export `facepipe local up`'s environment, or use --stack)")


# --- answers -----------------------------------------------------------------------------------------


@dataclass
class Sent:
    input: Input
    request_id: str = ""
    sent_at: float = 0.0
    error: str = ""  # the door refused it
    answer: dict[str, Any] | None = None
    answered_at: float = 0.0


class Collector:
    """Receives answers for our request ids from one queue until each is in, or stop()."""

    def __init__(self, sqs: Any, queue_url: str, own_queue: bool, on_answer: Any) -> None:
        self.sqs, self.queue_url, self.own_queue, self.on_answer = sqs, queue_url, own_queue, on_answer
        self.expected: dict[str, Sent] = {}
        self.duplicates = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="submit-collector", daemon=True)

    def expect(self, sent: Sent) -> None:
        with self._lock:
            self.expected[sent.request_id] = sent

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                                WaitTimeSeconds=POLL_WAIT_S).get("Messages", [])
            now = time.monotonic()
            for message in messages:
                self._take(message, now)

    def _take(self, message: dict[str, Any], now: float) -> None:
        try:
            answer = json.loads(message["Body"])
            request_id = answer.get("request_id") if isinstance(answer, dict) else None
        except json.JSONDecodeError:
            request_id = None
        with self._lock:
            sent = self.expected.get(str(request_id))
        if sent is None and not self.own_queue:  # another client's answer: visible again for it at once
            self.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"],
                                               VisibilityTimeout=0)
            return
        self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        if sent is None:
            return
        if sent.answer is not None:
            self.duplicates += 1  # SQS is at-least-once; the first answer counts
            return
        sent.answer, sent.answered_at = answer, now
        self.on_answer()


# --- doors -------------------------------------------------------------------------------------------


class Sender:
    def __init__(self, target: Target, via: Door, device_id: str, reply_to: str | None, run: str,
                 region: str | None = None) -> None:
        self.target, self.via, self.device_id, self.reply_to, self.run = target, via, device_id, reply_to, run
        self.session = aws.session(region)
        self.sqs, self.s3 = self.session.client("sqs"), self.session.client("s3")
        self._http: Any = None

    def send(self, sent: Sent, index: int) -> None:
        try:
            image = sent.input.read()
            sent.sent_at = time.monotonic()
            if self.via == "url":
                self._post(sent, image)
            elif self.via == "queue":
                self._enqueue(sent, image, index)
            else:
                sent.request_id = self._put(image, self._key(sent, index))
        except Exception as exc:  # a refusal or a transport error: this input is reported, the run goes on
            sent.error = f"{type(exc).__name__}: {exc}"[:300]

    def _key(self, sent: Sent, index: int) -> str:
        return f"{UPLOADS_PREFIX}submit-{self.run}/{index:06d}-{sent.input.name}"

    def _metadata(self) -> dict[str, str]:
        return {DEVICE_ID_METADATA: self.device_id, **({REPLY_TO_METADATA: self.reply_to} if self.reply_to else {})}

    def _post(self, sent: Sent, image: bytes) -> None:
        import urllib3
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        if self._http is None:
            # A busy function answers 429 (and a crashed or timed-out one 502): retried with backoff, as the
            # edge does; detection is keyed by request id, so a retry after a lost answer is one frame.
            retry = urllib3.Retry(total=URL_ATTEMPTS - 1, connect=0, read=0, backoff_factor=0.5, backoff_max=8.0,
                                  backoff_jitter=0.5, status_forcelist=(429, 500, 502, 503, 504),
                                  allowed_methods=None, raise_on_status=False, respect_retry_after_header=True)
            self._http = urllib3.PoolManager(maxsize=32, retries=retry)
        sent.request_id = str(uuid.uuid4())
        headers = {"Content-Type": "image/png" if image.startswith(b"\x89PNG") else "image/jpeg",
                   HEADER_REQUEST_ID: sent.request_id, HEADER_DEVICE_ID: self.device_id}
        if self.reply_to:
            headers[HEADER_REPLY_TO] = self.reply_to
        if self.target.auth == "aws_iam":
            if not self.session.region_name:
                raise SubmitError("no region to sign for: --region, AWS_REGION, AWS_DEFAULT_REGION or a profile's")
            request = AWSRequest(method="POST", url=self.target.function_url, data=image, headers=headers)
            SigV4Auth(self.session.get_credentials(), "lambda", self.session.region_name).add_auth(request)
            headers = dict(request.headers.items())
        reply = self._http.request("POST", self.target.function_url, body=image, headers=headers, timeout=60.0)
        if reply.status != 202:
            raise SubmitError(f"HTTP {reply.status}: {reply.data[:200].decode('utf-8', 'replace')}")

    def _enqueue(self, sent: Sent, image: bytes, index: int) -> None:
        sent.request_id = str(uuid.uuid4())
        fields: dict[str, Any] = {"request_id": sent.request_id, "device_id": self.device_id,
                                  "reply_to": self.reply_to, "filename": sent.input.name}
        encoded = base64.b64encode(image).decode("ascii")
        body = ""
        if len(encoded) < MAX_QUEUE_MESSAGE_BYTES - INLINE_HEADROOM:
            body = ImageEvent(**fields, image_b64=encoded).model_dump_json(exclude_none=True)
        if not body or len(body.encode("utf-8")) > MAX_QUEUE_MESSAGE_BYTES:  # too big inline: by S3 reference
            key = self._key(sent, index)
            put = self.s3.put_object(Bucket=self.target.bucket, Key=key, Body=image,
                                     Metadata={IMAGE_EVENT_METADATA: sent.request_id})
            ref = S3ImageRef(bucket=self.target.bucket, key=key, version_id=put.get("VersionId"))
            body = ImageEvent(**fields, image_s3=ref).model_dump_json(exclude_none=True)
        self.sqs.send_message(QueueUrl=self.target.ingest_queue_url, MessageBody=body)

    def _put(self, image: bytes, key: str) -> str:
        put = self.s3.put_object(Bucket=self.target.bucket, Key=key, Body=image, Metadata=self._metadata())
        version = put.get("VersionId")
        return s3_request_id(self.target.bucket, key, version if version and version != "null" else put["ETag"])


# --- report ------------------------------------------------------------------------------------------


@dataclass
class Report:
    rows: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    duplicates: int = 0

    def summary(self) -> dict[str, Any]:
        answered = [r for r in self.rows if r["status"] == "answered"]
        latencies = sorted(r["latency_ms"] for r in answered)
        names = Counter(face["name"] for r in answered for face in r["faces"])
        return {
            "sent": sum(r["status"] != "refused" for r in self.rows),
            "answered": len(answered),
            "unanswered": sum(r["status"] == "unanswered" for r in self.rows),
            "refused": sum(r["status"] == "refused" for r in self.rows),
            "faces": sum(len(r["faces"]) for r in answered),
            "names": dict(sorted(names.items())),
            "latency_ms": {
                "mean": round(statistics.mean(latencies), 1) if latencies else None,
                "p50": round(_percentile(latencies, 50), 1) if latencies else None,
                "p95": round(_percentile(latencies, 95), 1) if latencies else None,
            },
            "wall_s": round(self.wall_s, 2),
            "answers_per_s": round(len(answered) / self.wall_s, 2) if self.wall_s else None,
            "duplicate_answers": self.duplicates,
        }


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    position = (len(sorted_values) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def _row(sent: Sent, via: Door) -> dict[str, Any]:
    answer = sent.answer or {}
    status = "refused" if sent.error else "answered" if sent.answer is not None else "unanswered"
    faces = [{"name": f["name"], "distance": f["distance"], "box": f["box"]} for f in answer.get("faces", [])]
    return {"path": sent.input.label, "request_id": sent.request_id, "via": via, "status": status,
            "result": answer.get("result"), "faces": faces,
            "latency_ms": round((sent.answered_at - sent.sent_at) * 1000, 1) if sent.answer is not None else None,
            "error": sent.error or None}


CSV_COLUMNS = ["path", "request_id", "via", "status", "result", "faces", "names", "distances", "latency_ms", "error"]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    if path.suffix.lower() == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "faces": len(row["faces"]),
                             "names": ";".join(f["name"] for f in row["faces"]),
                             "distances": ";".join("" if f["distance"] is None else str(f["distance"])
                                                   for f in row["faces"])})


# --- the run -----------------------------------------------------------------------------------------


def submit(inputs: list[Input], target: Target, via: Door, *, concurrency: int = 4, timeout_s: float = 60,
           device_id: str = "submit", progress: bool | None = None, region: str | None = None) -> Report:
    """Send every input through `via`, wait for every answer (at most `timeout_s` after the last send);
    `region` as a --region flag (default: the AWS CLI's order, cloud.functions.aws.session)."""
    from tqdm import tqdm

    _require(target, via)
    sqs, run = aws.session(region).client("sqs"), uuid.uuid4().hex[:10]
    reply_queue_url = ""
    if target.reply_to_prefix:
        name = f"{target.reply_to_prefix}submit-{run}"
        reply_queue_url = sqs.create_queue(QueueName=name, Attributes={"MessageRetentionPeriod": "3600"})["QueueUrl"]
    bar = tqdm(total=len(inputs), desc=f"answers via {via}", unit="img", disable=None if progress is None
               else not progress, file=sys.stderr)
    collector = Collector(sqs, reply_queue_url or target.response_queue_url, own_queue=bool(reply_queue_url),
                          on_answer=lambda: bar.update(1))
    sender = Sender(target, via, device_id, reply_queue_url.rsplit("/", 1)[-1] if reply_queue_url else None, run,
                    region)
    sent = [Sent(item) for item in inputs]
    started = time.monotonic()
    collector.start()
    try:
        def send(index: int) -> None:
            sender.send(sent[index], index)
            if sent[index].request_id and not sent[index].error:
                collector.expect(sent[index])

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            list(pool.map(send, range(len(sent))))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(s.answer is None and not s.error for s in sent):
            time.sleep(0.05)
    finally:
        collector.stop()
        bar.close()
        if reply_queue_url:
            sqs.delete_queue(QueueUrl=reply_queue_url)
    return Report([_row(s, via) for s in sent], time.monotonic() - started, collector.duplicates)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="photos, folders of photos, videos")
    parser.add_argument("--via", choices=["url", "queue", "s3"], default="url",
                        help="door: the Function URL, an image event on the ingest queue, or a put under uploads/")
    parser.add_argument("--out", type=Path, help="one line per input: FILE.jsonl or FILE.csv")
    parser.add_argument("--concurrency", type=int, default=4, help="inputs in flight while sending")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for answers after the last send")
    parser.add_argument("--every", type=int, default=30, help="every Nth frame of a video (default %(default)s)")
    parser.add_argument("--device-id", default="submit", help="device id of every input (default %(default)s)")
    parser.add_argument("--stack", help="a deployed stack's name: endpoints from its outputs, not the environment")
    aws.add_region_argument(parser)


def run(args: argparse.Namespace) -> int:
    try:
        if args.out is not None and args.out.suffix.lower() not in (".jsonl", ".csv"):
            raise SubmitError(f"--out {args.out}: use a .jsonl or .csv file")
        if args.every < 1 or args.concurrency < 1:
            raise SubmitError("--every and --concurrency must be at least 1")
        if args.stack:
            target = target_from_stack(aws.session(args.region).client("cloudformation"), args.stack)
        else:
            target = target_from_env(dict(os.environ))
        inputs = collect_inputs(args.paths, args.every)
        if not inputs:
            raise SubmitError("no images found in " + " ".join(map(str, args.paths)))
        report = submit(inputs, target, args.via, concurrency=args.concurrency, timeout_s=args.timeout,
                        device_id=args.device_id, region=args.region)
    except SubmitError as exc:
        print(f"facepipe submit: {exc}", file=sys.stderr)
        return 2
    if args.out is not None:
        write_rows(args.out, report.rows)
    summary = report.summary()
    latency = summary["latency_ms"]
    print(f"sent {summary['sent']}, answered {summary['answered']}, unanswered {summary['unanswered']}, "
          f"refused {summary['refused']}; faces {summary['faces']}; names "
          + (", ".join(f"{name} x{count}" for name, count in summary["names"].items()) or "none"))
    print(f"latency ms mean {latency['mean']}, p50 {latency['p50']}, p95 {latency['p95']}; "
          f"{summary['answers_per_s']} answers/s over {summary['wall_s']} s (via {args.via})")
    for row in report.rows:
        if row["status"] != "answered":
            print(f"{row['status']}: {row['path']} {row['request_id']} {row['error'] or ''}".rstrip(), file=sys.stderr)
    return 0 if summary["answered"] == len(report.rows) else 1
