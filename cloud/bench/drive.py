"""Frames through the Function URL as the edge sends them, every answer read back by request id.

One engine for the pipeline runs (at most `concurrency` POSTs in flight), the burst (all at once) and the
paced client (one request every `pace_s`): each frame keeps its request id across retries, a 429 or 5xx is
retried with the edge uploader's backoff (edge_client/uploader.py, its default attempts); when they are spent,
the edge spools the frame and its drainer sends it again later, and so does this (counted as `spooled`), until
the run's timeout. Answers come
back on a reply_to queue of this run (cloud/operator/submit.py's Collector), so duplicates are counted by request id.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cloud.functions.contracts import HEADER_DEVICE_ID, HEADER_REPLY_TO, HEADER_REQUEST_ID
from cloud.operator.submit import Collector, Input, Sent, Target

DEVICE_ID = "bench"


@dataclass
class Shot:
    sent: Sent
    first_sent_at: float = 0.0
    attempts: int = 0
    throttled: int = 0  # 429 answers
    server_errors: int = 0  # 5xx answers
    spooled: int = 0  # times every attempt was spent and the frame went to the (modelled) spool
    gave_up: str = ""  # the last error when the run's timeout came first, or a refusal (4xx)
    invocation_id: str = ""  # the detection invocation that accepted it: the URL's x-amzn-RequestId


@dataclass
class RunResult:
    shots: list[Shot] = field(default_factory=list)
    wall_s: float = 0.0  # first send to last answer (or to the timeout)
    duplicates: int = 0
    started_at: float = 0.0  # the first send, epoch seconds: to line the run up with the functions' log

    @property
    def answered(self) -> list[Shot]:
        return [s for s in self.shots if s.sent.answer is not None]

    def latencies_s(self) -> list[float]:
        return sorted(s.sent.answered_at - s.first_sent_at for s in self.answered)

    def fps(self) -> float:
        return len(self.answered) / self.wall_s if self.wall_s else 0.0

    def timings_ms(self) -> dict[str, float]:
        """Means of the answers' own timings: detect, queue wait (detected to picked up), recognise."""
        timings = [s.sent.answer.get("timings", {}) for s in self.answered if s.sent.answer]
        return {name: round(statistics.mean(t[name] for t in timings), 1) if timings else 0.0
                for name in ("detect_ms", "queue_wait_ms", "recognise_ms")}

    def plumbing_ms(self) -> float | None:
        """Mean send-to-answer latency minus the handlers' own detect, queue wait and recognise times: HTTP,
        base64, the Runtime API hop, decoding, SQS sends and receives, the client's poll. Measured frame by
        frame in the same run, so it does not depend on how busy the machine was."""
        rest = [(s.sent.answered_at - s.first_sent_at) * 1000 - sum(s.sent.answer.get("timings", {}).values())
                for s in self.answered if s.sent.answer and s.attempts == 1]
        return round(statistics.mean(rest), 1) if rest else None

    def summary(self) -> dict[str, Any]:
        latencies = self.latencies_s()
        return {
            "sent": len(self.shots),
            "answered": len(latencies),
            "duplicates": self.duplicates,
            "rejected": sum(s.throttled for s in self.shots),
            "server_errors": sum(s.server_errors for s in self.shots),
            "spooled": sum(bool(s.spooled) for s in self.shots),
            "gave_up": sum(bool(s.gave_up) for s in self.shots),
            "latency_mean_s": _round(statistics.mean(latencies)) if latencies else None,
            "latency_p50_s": _round(percentile(latencies, 50)) if latencies else None,
            "latency_p95_s": _round(percentile(latencies, 95)) if latencies else None,
            "latency_max_s": _round(latencies[-1]) if latencies else None,
            "wall_s": _round(self.wall_s),
            "started_at": _round(self.started_at),
            "timings_ms": self.timings_ms(),
            "plumbing_ms": self.plumbing_ms(),
        }


def _round(value: float) -> float:
    return round(value, 3)


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    position = (len(sorted_values) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


class Poster:
    """Signed POSTs of one frame with a fixed request id, retried on 429 / 5xx / transport errors."""

    def __init__(self, target: Target, reply_to: str, pool_size: int, attempts: int | None = None) -> None:
        import boto3
        import urllib3

        from edge_client.config import RetriesConfig

        self.target, self.reply_to = target, reply_to
        self.session = boto3.session.Session()
        self.http = urllib3.PoolManager(maxsize=max(1, pool_size))
        # The edge uploader's backoff; its attempts unless `attempts` (the edge's `retries.max_attempts`) is given.
        self.retries = RetriesConfig() if attempts is None else RetriesConfig(max_attempts=attempts)

    def post(self, shot: Shot, image: bytes, give_up_at: float) -> None:
        """Attempts with backoff; when they are spent on 429/5xx/transport errors, the frame is spooled and
        sent again after the backoff's longest wait, as the edge's drainer does, until `give_up_at`."""
        from edge_client.uploader import backoff_delay

        while True:
            for attempt in range(self.retries.max_attempts):
                shot.attempts += 1
                try:
                    reply = self.http.request("POST", self.target.function_url, body=image,
                                              headers=self._headers(shot, image), timeout=60.0, retries=False)
                except Exception as exc:  # timeout, refused connection: retried as the edge does
                    shot.gave_up = f"{type(exc).__name__}: {exc}"[:200]
                else:
                    if reply.status == 202:
                        shot.gave_up, shot.invocation_id = "", reply.headers.get("x-amzn-RequestId", "")
                        return
                    shot.gave_up = f"HTTP {reply.status}: {reply.data[:120].decode('utf-8', 'replace')}"
                    if reply.status == 429:
                        shot.throttled += 1
                    elif reply.status >= 500:
                        shot.server_errors += 1
                    else:
                        return  # refused: never retried
                if attempt + 1 < self.retries.max_attempts:
                    time.sleep(backoff_delay(attempt, self.retries.base_s, self.retries.max_s))
            if time.monotonic() + self.retries.max_s > give_up_at:
                return
            shot.spooled += 1
            time.sleep(self.retries.max_s)

    def _headers(self, shot: Shot, image: bytes) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        headers = {"Content-Type": "image/jpeg", HEADER_REQUEST_ID: shot.sent.request_id,
                   HEADER_DEVICE_ID: DEVICE_ID, HEADER_REPLY_TO: self.reply_to}
        if self.target.auth != "aws_iam":
            return headers
        request = AWSRequest(method="POST", url=self.target.function_url, data=image, headers=headers)
        SigV4Auth(self.session.get_credentials(), "lambda", self.session.region_name).add_auth(request)
        return dict(request.headers.items())


def drive(frames: list[bytes], target: Target, *, concurrency: int, pace_s: float | None = None,
          timeout_s: float = 120.0, label: str = "frames", attempts: int | None = None) -> RunResult:
    """Send every frame (at most `concurrency` in flight; with `pace_s`, frame i not before i * pace_s) and
    wait until each is answered, given up, or `timeout_s` passed since the last send."""
    import boto3
    from tqdm import tqdm

    sqs = boto3.session.Session().client("sqs")
    name = f"{target.reply_to_prefix}bench-{uuid.uuid4().hex[:10]}"
    reply_url = sqs.create_queue(QueueName=name, Attributes={"MessageRetentionPeriod": "3600"})["QueueUrl"]
    bar = tqdm(total=len(frames), desc=label, unit="frame", file=sys.stderr, leave=False)
    lock = threading.Lock()

    def answered() -> None:
        with lock:
            bar.update(1)

    collector = Collector(sqs, reply_url, own_queue=True, on_answer=answered)
    shots = [Shot(Sent(Input(f"frame {i}", f"{i:06d}.jpg", lambda data=data: data), str(uuid.uuid4())))
             for i, data in enumerate(frames)]
    poster = Poster(target, name, concurrency, attempts)
    collector.start()
    started, started_at = time.monotonic(), time.time()

    def send(index: int) -> None:
        shot = shots[index]
        if pace_s is not None:
            time.sleep(max(0.0, started + index * pace_s - time.monotonic()))
        collector.expect(shot.sent)  # before the POST: an answer may come back before the 202
        shot.first_sent_at = shot.sent.sent_at = time.monotonic()
        poster.post(shot, frames[index], started + timeout_s + (index * pace_s if pace_s else 0.0))

    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            list(pool.map(send, range(len(shots))))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(s.sent.answer is None and not s.gave_up for s in shots):
            time.sleep(0.02)
    finally:
        collector.stop()
        bar.close()
        sqs.delete_queue(QueueUrl=reply_url)
    last = max((s.sent.answered_at for s in shots if s.sent.answer is not None), default=time.monotonic())
    return RunResult(shots, last - started, collector.duplicates, started_at)
