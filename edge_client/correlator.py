"""Correlate: long-poll the response queue and match each answer to the frame that asked for it.

- Only this device's messages are deleted; another device's are made visible again at once
  (visibility 0) so their owner receives them. A shared queue therefore costs receives; a
  per-device queue (`responses.reply_to`) avoids it.
- SQS delivers at least once: answered request ids are remembered and a repeat is counted as a
  duplicate, reported once, and deleted.
- A frame whose answer does not arrive within `answer_timeout_s` is counted unanswered (log line).
- A malformed message is left alone: the queue's redrive policy moves it to the DLQ.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from cloud.functions.contracts import ResponseMessage
from edge_client.config import ResponsesConfig

log = logging.getLogger(__name__)

_REMEMBERED_IDS = 10_000


@dataclass(frozen=True)
class Pending:
    request_id: str
    captured_at: float  # epoch seconds
    jpeg: bytes | None  # kept only when an output needs the frame (annotated snapshots)
    sent_at: float = field(default_factory=time.monotonic)  # the answer timeout runs from here
    # Registered before its POST (the answer can beat the HTTP response); a retried upload can outlast
    # the answer timeout, so the timeout only runs once the endpoint has accepted the frame.
    uploading: bool = False
    from_spool: bool = False  # sent from the disk spool (captured while the endpoint was down)


class PendingRequests:
    """Requests sent and awaiting an answer. Thread-safe."""

    def __init__(self) -> None:
        self._items: dict[str, Pending] = {}
        self._lock = threading.Lock()

    def add(self, item: Pending) -> None:
        with self._lock:
            self._items[item.request_id] = item

    def accepted(self, request_id: str) -> None:
        """The endpoint took the frame: its answer timeout starts now."""
        with self._lock:
            item = self._items.get(request_id)
            if item is not None:
                self._items[request_id] = replace(item, uploading=False, sent_at=time.monotonic())

    def pop(self, request_id: str) -> Pending | None:
        with self._lock:
            return self._items.pop(request_id, None)

    def pop_expired(self, timeout_s: float, now: float | None = None) -> list[Pending]:
        """Accepted requests older than `timeout_s` (never one whose upload is still under way)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            expired = [p for p in self._items.values() if not p.uploading and now - p.sent_at >= timeout_s]
            for item in expired:
                del self._items[item.request_id]
        return expired

    def oldest_live_capture(self) -> float | None:
        """Capture time of the oldest live (not spooled) frame still awaiting its answer."""
        with self._lock:
            return min((p.captured_at for p in self._items.values() if not p.from_spool), default=None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class RecentIds:
    """The last N request ids seen (insertion-ordered set)."""

    def __init__(self, size: int = _REMEMBERED_IDS) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def add(self, request_id: str) -> None:
        self._ids[request_id] = None
        self._ids.move_to_end(request_id)
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._ids


@dataclass
class CorrelatorEvents:
    """What the correlator reports; the daemon wires these to stats, metrics and outputs."""

    answered: Callable[[ResponseMessage, Pending, float], None]  # answer, its request, latency seconds
    unanswered: Callable[[Pending], None]
    duplicate: Callable[[str], None]
    late: Callable[[str], None]  # an answer for an unknown or already-expired request


class Correlator:
    def __init__(
        self, config: ResponsesConfig, device_id: str, sqs: Any, pending: PendingRequests, events: CorrelatorEvents
    ) -> None:
        self._config = config
        self._device_id = device_id
        self._sqs = sqs
        self._pending = pending
        self._events = events
        self._answered = RecentIds()
        self._expired = RecentIds()
        self._done = threading.Event()

    def sweep(self) -> None:
        for item in self._pending.pop_expired(self._config.answer_timeout_s):
            self._expired.add(item.request_id)
            log.warning("no answer for frame %s within %.0fs: counted unanswered",
                        item.request_id, self._config.answer_timeout_s)
            self._events.unanswered(item)

    def abandon(self) -> None:
        """At stop: a frame still awaiting its answer is counted unanswered now (the next run discards
        the answer). One whose upload is still under way is left alone: the shutdown spools it."""
        waiting = self._pending.pop_expired(0.0)
        if waiting:
            log.warning("stopping before %d frame(s) got their answer: counted unanswered", len(waiting))
        for item in waiting:
            self._expired.add(item.request_id)
            self._events.unanswered(item)

    def poll_once(self, wait_s: int | None = None) -> int:
        """One receive (long poll) and its handling; returns the number of messages received."""
        response = self._sqs.receive_message(
            QueueUrl=self._config.queue_url, MaxNumberOfMessages=10,
            WaitTimeSeconds=self._config.wait_s if wait_s is None else wait_s,
        )
        messages = response.get("Messages", [])
        to_delete: list[dict[str, str]] = []
        to_release: list[dict[str, Any]] = []
        for message in messages:
            entry_id = str(len(to_delete) + len(to_release))
            verdict = self._handle(message)
            if verdict == "delete":
                to_delete.append({"Id": entry_id, "ReceiptHandle": message["ReceiptHandle"]})
            elif verdict == "release":
                to_release.append({"Id": entry_id, "ReceiptHandle": message["ReceiptHandle"], "VisibilityTimeout": 0})
        if to_delete:
            self._check_batch(self._sqs.delete_message_batch(QueueUrl=self._config.queue_url, Entries=to_delete))
        if to_release:
            self._check_batch(
                self._sqs.change_message_visibility_batch(QueueUrl=self._config.queue_url, Entries=to_release)
            )
        self.sweep()
        return len(messages)

    def _handle(self, message: dict[str, Any]) -> str:
        """'delete' (ours, handled), 'release' (another device's) or 'keep' (malformed: redrive decides)."""
        try:
            answer = ResponseMessage.model_validate_json(message["Body"])
        except (ValidationError, ValueError, KeyError) as exc:
            log.warning("malformed response message %s left for the DLQ: %s",
                        message.get("MessageId"), str(exc).splitlines()[0])
            return "keep"
        if answer.device_id != self._device_id:
            return "release"
        request_id = answer.request_id
        item = self._pending.pop(request_id)
        if item is not None:
            self._answered.add(request_id)
            self._events.answered(answer, item, max(0.0, time.time() - item.captured_at))
        elif request_id in self._answered:
            log.info("duplicate answer for %s ignored", request_id)
            self._events.duplicate(request_id)
        else:
            reason = "after its timeout" if request_id in self._expired else "for an unknown request (earlier run?)"
            log.info("answer for %s arrived %s; not reported", request_id, reason)
            self._answered.add(request_id)  # a redelivery of it is then a duplicate
            self._events.late(request_id)
        return "delete"

    @staticmethod
    def _check_batch(result: dict[str, Any]) -> None:
        for failure in result.get("Failed", []):
            log.warning("SQS batch entry failed: %s", failure)

    def run(self) -> None:
        """Poll until close(); SQS errors are logged and retried with backoff."""
        delay = 1.0
        while not self._done.is_set():
            try:
                self.poll_once()
                delay = 1.0
            except (BotoCoreError, ClientError) as exc:
                log.warning("response queue: %s; retrying in %.0fs", exc, delay)
                self.sweep()
                if self._done.wait(delay):
                    break
                delay = min(delay * 2, 30.0)

    def close(self) -> None:
        self._done.set()


def make_sqs_client(config: ResponsesConfig, region: str | None) -> Any:
    """boto3 SQS client: standard credential chain, endpoint from config (local stack) or the environment."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "sqs", region_name=region, endpoint_url=config.endpoint_url,
        config=Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5,
                      read_timeout=config.wait_s + 10),
    )
