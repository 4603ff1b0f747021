"""A real SQS/S3 protocol server for the local stack: moto's ThreadedMotoServer on 127.0.0.1."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import moto.backends
import moto.sqs.models
from moto.core.utils import unix_time
from moto.server import ThreadedMotoServer
from moto.sqs.models import Message, SQSBackend
from moto.sqs.responses import SQSResponse

log = logging.getLogger(__name__)


class MotoServer:
    """moto in a thread of this process, on `host:port` (port 0 = a free port chosen by the OS).

    moto keeps its state in module globals: a `mock_aws` context entered in the same process resets
    it, so tests that use this server must not also use in-process moto mocks.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        self.endpoint_url = ""

    def start(self) -> str:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per AWS call is noise
        _list_moto_modules_once()
        _check_retention_in_constant_time()
        _read_the_clock_cheaply()
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        log.info("moto server listening on %s", self.endpoint_url)
        return self.endpoint_url

    def stop(self) -> None:
        if self.endpoint_url:
            self._server.stop()
            self.endpoint_url = ""


def _list_moto_modules_once() -> None:
    """moto 5's server routes every request by listing its own package directory (a listdir and an isdir per
    service, ~150, in `moto.backends.list_of_moto_modules`). The installed services cannot change while it runs:
    list them once. Measured: an SQS send, receive and delete took 7.1 ms instead of 10.5 against this server."""
    modules = tuple(moto.backends.list_of_moto_modules())  # a second call lists this tuple again: harmless
    moto.backends.list_of_moto_modules = lambda: modules


def _check_retention_in_constant_time() -> None:
    """moto 5.2.5's ReceiveMessage checks each message it delivers against the queue's retention period through
    `get_queue_attributes`, which builds every attribute of the queue, the three message counts among them, each a
    pass over all its messages: receiving was quadratic in the queue's depth (why moto "slows down with thousands of
    queued messages"). The check needs one attribute, the retention period: it reads that alone. Receiving 500 queued
    10 KB messages, 10 at a time, took 12.8 s and now 0.51 s (`python -m cloud.bench.queue_depth`)."""

    def is_message_valid_based_on_retention_period(self: SQSBackend, queue_name: str, message: Message) -> bool:
        # Set from the queue's attributes (Queue._set_attributes); a delivered message has its sent_timestamp.
        retention_s: int = self.get_queue(queue_name).message_retention_period  # type: ignore[attr-defined]
        return bool(retention_s + message.sent_timestamp / 1000 > time.time())  # type: ignore[operator]

    SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        is_message_valid_based_on_retention_period)


def _read_the_clock_cheaply() -> None:
    """moto's SQS reads the clock through datetimes (now in UTC, the epoch, their difference: about 6 us a read) and
    reads it for every queued message on every request: a send builds the queue's message counts (three passes over
    its messages, four reads each) and a receive checks each message's visibility and delay. Sending into a queue
    2,000 deep took 42 ms a message, and takes 3.7 ms with the seconds since the epoch from time.time()."""
    moto.sqs.models.unix_time = _unix_time
    moto.sqs.models.unix_time_millis = _unix_time_millis


def _unix_time(dt: datetime | None = None) -> float:
    return time.time() if dt is None else unix_time(dt)


def _unix_time_millis(dt: datetime | None = None) -> float:
    return _unix_time(dt) * 1000.0


_sender = threading.local()  # the SenderId of the SendMessage(Batch) request this server thread is handling
_identify: Callable[[str], str | None] = lambda access_key: None  # noqa: E731 - replaced by record_sender_ids


def record_sender_ids(identify: Callable[[str], str | None]) -> None:
    """moto 5.2.5 gives every message one constant SenderId; AWS gives the sender's: an IAM user's unique id, a role
    session's ROLEID:SESSIONNAME, the account id for its root. `identify` maps a request's access key to it (None:
    moto's constant). The ingest door binds image events to their sender by it (cloud/functions/detection/ingest.py)."""
    global _identify
    _identify = identify
    if getattr(SQSResponse.send_message, "_records_sender", False):
        return
    for name in ("send_message", "send_message_batch"):
        setattr(SQSResponse, name, _recording(getattr(SQSResponse, name)))
    original_init = Message.__init__

    @functools.wraps(original_init)
    def init(self: Message, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        sender = getattr(_sender, "value", None)
        if sender is not None:
            self.sender_id = sender

    Message.__init__ = init  # type: ignore[method-assign]


def _recording(action: Callable[[SQSResponse], Any]) -> Callable[[SQSResponse], Any]:
    @functools.wraps(action)
    def send(self: SQSResponse) -> Any:
        _sender.value = _identify(self.get_access_key())
        try:
            return action(self)
        finally:
            _sender.value = None

    send._records_sender = True  # type: ignore[attr-defined]
    return send
