"""Helpers for the edge daemon's tests: a config builder, a switchable TCP proxy (to take the
endpoint "down" and bring it back), a scripted HTTP endpoint for retry tests, and a private moto
SQS server for correlator tests that do not need the whole local stack."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from edge_client.config import EdgeConfig, deep_merge, parse_config
from tests.http_server import QuietHandler, serving

CLIP = "video/short_hamilton_clip.mp4"  # in tests.photos.SHARED


def make_config(tmp_path: Path, **sections: Any) -> EdgeConfig:
    """A valid config for tests (no metrics port, spool in tmp_path); keyword sections override."""
    base: dict[str, Any] = {
        "device_id": "test-edge",
        "camera": {"source": str(tmp_path / "none.mp4"), "fps": 0},
        "endpoint": {"url": "http://127.0.0.1:9/", "auth": "none", "region": "us-east-1", "timeout_s": 5,
                     "retries": {"max_attempts": 2, "base_s": 0.05, "max_s": 0.2}},
        "responses": {"queue_url": "http://127.0.0.1:9/000000000000/none", "wait_s": 1, "answer_timeout_s": 20},
        "spool": {"directory": str(tmp_path / "spool")},
        "metrics": {"listen": None},
        "stop_timeout_s": 5,
    }
    return parse_config(deep_merge(base, sections), environ={})


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class TcpProxy:
    """127.0.0.1:port forwarding to a target; `down()` refuses connections, `up()` forwards again.

    Transparent at the byte level, so a SigV4 signature made for the proxy's Host verifies at the
    target (the local Function URL rebuilds the request from what it received).
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def down(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:  # kept-alive connections die too, as when the real endpoint goes away
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        listener.settimeout(0.1)
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@dataclass
class Scripted:
    """What the scripted endpoint answers, in order (the last entry repeats), and what it received."""

    statuses: list[int]
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def scripted_endpoint() -> Iterator[tuple[str, Scripted]]:
    """A real HTTP server on 127.0.0.1 that answers each POST with the next scripted status."""
    script = Scripted(statuses=[202])

    class Handler(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            index = len(script.requests)
            script.requests.append({"headers": dict(self.headers), "body": body, "at": time.monotonic()})
            time.sleep(script.delay_s)
            status = script.statuses[min(index, len(script.statuses) - 1)]
            payload = (b'{"request_id": "%s", "faces": 0, "detect_ms": 1.0}' % self.headers["X-Request-Id"].encode()
                       if status < 300 else b'{"error": "scripted %d"}' % status)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    with serving(Handler) as url:
        yield f"{url}/", script


@pytest.fixture(scope="module")
def moto_sqs() -> Iterator[Any]:
    """A boto3 SQS client on a private moto server (real SQS protocol over HTTP)."""
    import boto3

    from cloud.emulator.moto_server import MotoServer

    server = MotoServer()
    endpoint = server.start()
    try:
        yield boto3.session.Session().client(
            "sqs", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="AKIDEDGETEST", aws_secret_access_key="edge-test-secret",
        )
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def function_url_proxy(local_stack: Any) -> Iterator[TcpProxy]:
    """A TCP proxy on 127.0.0.1 in front of the stack's Function URL, down until `up()`."""
    target = urlparse(local_stack.function_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 80)
    yield proxy
    proxy.down()
