"""systemd notify protocol over real AF_UNIX datagram sockets (a file path and an abstract name), and what
the daemon sends on it."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_client import daemon as daemon_module
from edge_client.daemon import Daemon
from edge_client.notify import SystemdNotifier
from tests.edge.conftest import Scripted, make_config
from tests.photos import packaged


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """What systemd does: a datagram socket bound to a path, handed over as $NOTIFY_SOCKET."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def test_ready_status_watchdog_stopping_arrive_as_datagrams(listener: tuple[socket.socket, str]) -> None:
    # GIVEN a notifier pointed at systemd's socket
    sock, path = listener
    notifier = SystemdNotifier(path)
    assert notifier.enabled
    # WHEN the daemon walks through its life cycle
    assert notifier.ready()
    assert notifier.status("sending 2.0 fps\nto the cloud")
    assert notifier.watchdog()
    assert notifier.stopping()
    # THEN each message is one datagram, in order, with a one-line STATUS
    received = [sock.recv(4096) for _ in range(4)]
    assert received == [b"READY=1", b"STATUS=sending 2.0 fps to the cloud", b"WATCHDOG=1", b"STOPPING=1"]
    notifier.close()


def test_reads_notify_socket_from_environment(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    notifier = SystemdNotifier()
    assert notifier.ready()
    assert sock.recv(4096) == b"READY=1"


def test_abstract_socket_with_at_sign() -> None:
    # GIVEN an abstract-namespace socket (what systemd uses inside some containers)
    name = f"facepipe-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        # WHEN NOTIFY_SOCKET names it with '@'
        notifier = SystemdNotifier("@" + name)
        notifier.ready()
        notifier.watchdog()
        # THEN the datagrams reach it
        assert sock.recv(4096) == b"READY=1"
        assert sock.recv(4096) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_no_op_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SystemdNotifier()
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False


def test_send_failure_is_reported_not_raised(tmp_path: Path) -> None:
    # systemd gone (socket file missing): the pipeline must keep running
    notifier = SystemdNotifier(str(tmp_path / "gone.sock"))
    assert notifier.ready() is False


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "1", None),  # inherited from another watched process: not ours
        ("0", None, None),
        (None, None, None),
        ("junk", None, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    usec: str | None, pid: str | None, expected: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert SystemdNotifier("").watchdog_interval_s == expected


def test_daemon_sends_ready_status_watchdog_and_stopping(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    scripted_endpoint: tuple[str, Scripted], moto_sqs: Any,
) -> None:
    # GIVEN a daemon started by "systemd": a notify socket and a 1 s watchdog (pinged every 0.5 s)
    sock, path = listener
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setattr(daemon_module, "STATUS_EVERY_S", 1.0)
    camera = tmp_path / "camera"
    camera.mkdir()
    (camera / "a.jpg").symlink_to(packaged("face_recognition/obama.jpg"))
    queue = moto_sqs.create_queue(QueueName=f"edge-notify-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    config = make_config(tmp_path, camera={"source": str(camera), "fps": 5, "loop": True},
                         endpoint={"url": scripted_endpoint[0]}, responses={"queue_url": queue}, stop_timeout_s=0.5)
    daemon = Daemon(config, notifier=SystemdNotifier(path), sqs=moto_sqs)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    # WHEN it runs for a while, then is stopped
    received: list[bytes] = []
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        received.append(sock.recv(4096))
    daemon.request_stop()
    thread.join(timeout=15)
    sock.settimeout(0.5)
    with contextlib.suppress(TimeoutError):
        while True:
            received.append(sock.recv(4096))
    # THEN READY comes first, the watchdog is fed, STATUS carries the counts, and STOPPING ends it
    assert received[:2] == [b"READY=1", b"STATUS=running"]
    assert received.count(b"WATCHDOG=1") >= 3
    assert any(message.startswith(b"STATUS=captured ") for message in received)
    assert received[-1] == b"STOPPING=1" and not thread.is_alive()
