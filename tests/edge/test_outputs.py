"""Outputs taking frames: log line, JSONL file, annotated snapshots of a real photo, webhook to a real HTTP server."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from cloud.functions.contracts import RecognisedFace, ResponseMessage, Timings
from edge_client.config import OutputsConfig
from edge_client.metrics import EdgeMetrics, total
from edge_client.outputs import WEBHOOK_QUEUE_SIZE, Outputs, answer_line
from tests.photos import packaged

GREEN, RED = (0, 200, 0), (0, 0, 255)


def _frames(log: bool = False, jsonl: Path | None = None, webhook: str | None = None,
            snapshots: Path | None = None, keep: int = 500) -> OutputsConfig:
    """Outputs that each take frames (one record per answer)."""
    return OutputsConfig.model_validate({
        "log": {"enabled": log, "on": "frames"}, "jsonl": {"path": jsonl, "on": "frames"},
        "webhook": {"url": webhook, "on": "frames"},
        "snapshots": {"directory": snapshots, "on": "frames", "keep": keep},
    })


Face = tuple[str, float | None, list[float]]  # name, distance, box


def _answer(faces: list[Face], frame_timestamp: float | None = None) -> ResponseMessage:
    return ResponseMessage(
        request_id=str(uuid.uuid4()),
        device_id="front-door",
        frame_timestamp=frame_timestamp if frame_timestamp is not None else time.time(),
        faces=[RecognisedFace(box=box, name=name, distance=dist, probability=0.99) for name, dist, box in faces],
        timings=Timings(detect_ms=120.0, queue_wait_ms=15.0, recognise_ms=40.0),
        model="facenet-casia-webface",
    )


@pytest.fixture(scope="module")
def photo() -> tuple[bytes, tuple[int, int]]:
    """A real photo (face_recognition's obama.jpg) as the frame JPEG, plus its (width, height)."""
    data = packaged("face_recognition/obama.jpg").read_bytes()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return data, (image.shape[1], image.shape[0])


class _Receiver(BaseHTTPRequestHandler):
    server: _WebhookServer

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.gate.wait(timeout=10)
        self.server.bodies.append(json.loads(body) if body else {})
        self.send_response(self.server.status)
        if self.server.location:
            self.send_header("Location", self.server.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST  # noqa: N815 - a 301/302/303 followed is a GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _WebhookServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, status: int) -> None:
        super().__init__(("127.0.0.1", 0), _Receiver)
        self.status = status
        self.location = ""  # sent as Location (a redirect)
        self.bodies: list[dict[str, Any]] = []
        self.gate = threading.Event()  # cleared: every POST waits (a slow receiver)
        self.gate.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


@pytest.fixture
def webhook_server() -> Iterator[Any]:
    started: list[_WebhookServer] = []

    def start(status: int = 204) -> _WebhookServer:
        server = _WebhookServer(status)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.gate.set()
        server.shutdown()
        server.server_close()


def test_log_line_format() -> None:
    box = [10.0, 10.0, 50.0, 50.0]
    assert answer_line("front-door", _answer([("alice", 0.4249, box), ("unknown", 1.31, box)])) == (
        "front-door: alice 0.42, unknown 1.31"
    )
    assert answer_line("front-door", _answer([])) == "front-door: no faces"
    assert answer_line("front-door", _answer([("unknown", None, box)])) == "front-door: unknown"


def test_log_output_can_be_turned_off(caplog: pytest.LogCaptureFixture) -> None:
    answer = _answer([("alice", 0.42, [1.0, 2.0, 3.0, 4.0])])
    with caplog.at_level(logging.INFO, logger="edge_client.outputs"):
        Outputs(_frames(log=True), "front-door").frame(answer, None, 0.5)
        Outputs(_frames(log=False), "front-door").frame(answer, None, 0.5)
    assert [r.getMessage() for r in caplog.records] == ["front-door: alice 0.42"]


def test_jsonl_appends_one_record_per_answer(tmp_path: Path) -> None:
    # GIVEN a JSONL output in a folder that does not exist yet, with a line from an earlier run
    path = tmp_path / "out" / "answers.jsonl"
    path.parent.mkdir()
    path.write_text('{"earlier": true}\n')
    outputs = Outputs(_frames(jsonl=path), "front-door")
    first = _answer([("alice", 0.42, [1.0, 2.0, 30.0, 40.0]), ("unknown", 1.31, [50.0, 2.0, 90.0, 40.0])])
    second = _answer([])
    # WHEN two answers are emitted
    outputs.frame(first, None, 0.8123456)
    outputs.frame(second, None, 1.5)
    # THEN they are on disk at once (flushed), after the earlier line, and round-trip to the contract
    lines = path.read_text().splitlines()
    outputs.close()
    assert len(lines) == 3 and json.loads(lines[0]) == {"earlier": True}
    records = [json.loads(line) for line in lines[1:]]
    assert [r["request_id"] for r in records] == [first.request_id, second.request_id]
    assert records[0]["latency_s"] == pytest.approx(0.8123, abs=1e-4)
    assert [f["name"] for f in records[0]["faces"]] == ["alice", "unknown"]
    extras = {"answered_at", "latency_s"}
    assert ResponseMessage.model_validate({k: v for k, v in records[0].items() if k not in extras}) == first


def test_snapshot_draws_boxes_on_the_real_photo(tmp_path: Path, photo: tuple[bytes, tuple[int, int]]) -> None:
    # GIVEN a real photo and an answer with a known and an unknown face
    jpeg, (width, height) = photo
    known_box = [width * 0.25, height * 0.15, width * 0.75, height * 0.6]
    unknown_box = [width * 0.05, height * 0.7, width * 0.3, height * 0.95]
    answer = _answer([("obama", 0.38, known_box), ("unknown", 1.27, unknown_box)])
    outputs = Outputs(_frames(snapshots=tmp_path / "snaps"), "front-door")
    # WHEN it is emitted
    outputs.frame(answer, jpeg, 0.7)
    outputs.close()
    # THEN one annotated JPEG named after the request, same size, with the box edges in their colours
    files = list((tmp_path / "snaps").iterdir())
    assert len(files) == 1 and files[0].name.endswith(f"_{answer.request_id}.jpg")
    original = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    snapshot = cv2.imread(str(files[0]))
    assert snapshot.shape == original.shape
    for box, colour in ((known_box, GREEN), (unknown_box, RED)):
        x1, y2 = round(box[0]), round(box[3])
        y_mid = round((box[1] + box[3]) / 2)
        for x, y in ((x1, y_mid), (round((box[0] + box[2]) / 2), y2)):  # left edge, bottom edge
            assert np.abs(snapshot[y, x].astype(int) - colour).max() < 60, (x, y, snapshot[y, x])
            assert np.abs(original[y, x].astype(int) - colour).max() >= 60  # the photo did not already look so
    # away from the boxes the photo is unchanged (up to JPEG re-encoding)
    assert np.abs(snapshot[5, width // 2].astype(int) - original[5, width // 2].astype(int)).max() < 25


def test_snapshots_keep_only_the_newest(tmp_path: Path, photo: tuple[bytes, tuple[int, int]]) -> None:
    jpeg, (width, height) = photo
    box = [width * 0.3, height * 0.2, width * 0.7, height * 0.6]
    snaps = tmp_path / "snaps"
    outputs = Outputs(_frames(snapshots=snaps, keep=2), "front-door")
    answers = [_answer([("obama", 0.4, box)], frame_timestamp=1_700_000_000 + i) for i in range(3)]
    for answer in answers:
        outputs.frame(answer, jpeg, 0.5)
    outputs.frame(_answer([]), jpeg, 0.5)  # nothing to draw: no file
    outputs.frame(_answer([("obama", 0.4, box)]), b"not a jpeg", 0.5)  # undecodable: skipped, no exception
    outputs.close()
    kept = sorted(path.name for path in snaps.iterdir())
    assert [name.split("_", 1)[1] for name in kept] == [f"{a.request_id}.jpg" for a in answers[1:]]

    # a restart keeps counting the files already there
    again = Outputs(_frames(snapshots=snaps, keep=2), "front-door")
    newest = _answer([("obama", 0.4, box)], frame_timestamp=1_700_000_010)
    again.frame(newest, jpeg, 0.5)
    again.close()
    assert sorted(path.name.split("_", 1)[1] for path in snaps.iterdir()) == sorted(
        [f"{answers[2].request_id}.jpg", f"{newest.request_id}.jpg"]
    )


def test_webhook_posts_each_answer(webhook_server: Any) -> None:
    server = webhook_server()
    outputs = Outputs(_frames(webhook=server.url), "front-door")
    answers = [_answer([("alice", 0.42, [1.0, 2.0, 3.0, 4.0])]), _answer([])]
    for answer in answers:
        outputs.frame(answer, None, 0.9)
    outputs.close()
    assert [body["request_id"] for body in server.bodies] == [a.request_id for a in answers]
    assert server.bodies[0]["faces"][0]["name"] == "alice"
    assert server.bodies[0]["latency_s"] == 0.9
    assert outputs.webhooks_sent == 2 and total(outputs.metrics.output_errors) == 0


def test_webhook_failures_are_counted(webhook_server: Any) -> None:
    # GIVEN a receiver answering 500 and a URL where nothing listens
    failing = webhook_server(status=500)
    with ThreadingHTTPServer(("127.0.0.1", 0), _Receiver) as closed:
        dead_url = f"http://127.0.0.1:{closed.server_address[1]}/hook"
    metrics = EdgeMetrics()
    for url in (failing.url, dead_url):
        outputs = Outputs(_frames(webhook=url), "front-door", metrics=metrics)
        outputs.frame(_answer([]), None, 0.1)
        outputs.close()
    # THEN each failure is counted by kind, in Prometheus too, and nothing raised
    exposition = metrics.exposition().decode()
    assert 'facepipe_edge_output_errors_total{kind="http",output="webhook"} 1.0' in exposition
    assert 'facepipe_edge_output_errors_total{kind="connection",output="webhook"} 1.0' in exposition


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_webhook_redirects_are_failures_not_followed(webhook_server: Any, status: int,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a receiver that answers with a redirect to a second server
    elsewhere = webhook_server()
    redirecting = webhook_server(status=status)
    redirecting.location = elsewhere.url + "/stolen"
    metrics = EdgeMetrics()
    outputs = Outputs(_frames(webhook=redirecting.url), "front-door", metrics=metrics)
    # WHEN an answer with a name is posted
    with caplog.at_level(logging.WARNING, logger="edge_client.outputs"):
        outputs.frame(_answer([("alice", 0.42, [1.0, 2.0, 3.0, 4.0])]), None, 0.1)
        outputs.close()
    # THEN the second server got nothing, and the redirect is a counted failure logged with the redacted URL
    assert len(redirecting.bodies) == 1 and elsewhere.bodies == []
    assert total(metrics.output_errors, output="webhook", kind="redirect") == 1 and outputs.webhooks_sent == 0
    host = redirecting.url.removesuffix("/hook")
    expected = f"webhook {host} answered {status} (redirects are not followed)"
    assert [r.getMessage() for r in caplog.records] == [expected]


def test_slow_webhook_never_blocks_emit(webhook_server: Any, tmp_path: Path) -> None:
    # GIVEN a receiver that holds every request until released
    server = webhook_server()
    server.gate.clear()
    outputs = Outputs(_frames(jsonl=tmp_path / "a.jsonl", webhook=server.url), "front-door")
    posted = WEBHOOK_QUEUE_SIZE + 16
    # WHEN more answers arrive than the webhook queue holds
    for _ in range(posted):
        outputs.frame(_answer([]), None, 0.1)
    # THEN emit returned for all of them (we got here), the overflow was dropped and counted,
    # and the JSONL output still has every answer
    dropped = total(outputs.metrics.output_errors, output="webhook", kind="queue_full")
    assert 15 <= dropped <= 16  # one post may already be in flight, out of the queue
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == posted
    # once the receiver recovers, what was queued is delivered
    server.gate.set()
    outputs.close(timeout_s=10)
    assert len(server.bodies) == posted - dropped



def test_events_one_record_each_and_the_best_picture_written_once(
    tmp_path: Path, webhook_server: Any, photo: tuple[bytes, tuple[int, int]], caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN the events of a recorded passage (tests/edge/data) and outputs left at their defaults (events),
    # except JSONL (frames by default) switched to events
    from tests.edge.test_tracker import recorded, replay

    server = webhook_server()
    config = OutputsConfig.model_validate({
        "jsonl": {"path": tmp_path / "events.jsonl", "on": "events"}, "webhook": {"url": server.url},
        "snapshots": {"directory": tmp_path / "snaps"}})
    outputs = Outputs(config, "test-edge")
    answers = recorded("one")
    jpeg, _ = photo
    # WHEN the answers go to the frame side (nothing takes frames) and the events to the event side
    with caplog.at_level(logging.INFO, logger="edge_client.outputs"):
        for answer in answers:
            message = {k: v for k, v in answer.items() if k not in ("answered_at", "latency_s")}
            outputs.frame(ResponseMessage.model_validate(message), jpeg, 0.3)
        written = [outputs.event(event, jpeg) for event in replay(answers)]
    outputs.close()
    # THEN one record per event (start, end), not one per frame, everywhere
    records = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(r["type"], r["name"]) for r in records] == [("start", "barack_obama"), ("end", "barack_obama")]
    assert [body["event_id"] for body in server.bodies] == [r["event_id"] for r in records]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "barack_obama arrived at" in lines[0] and "barack_obama left at" in lines[1]
    # and the picture once, at the end, where the end record says
    pictures = list((tmp_path / "snaps").iterdir())
    assert written[0] is None and written[1] == records[1]["best_snapshot"] == str(pictures[0])
    assert len(pictures) == 1 and records[0]["best_snapshot"] is None


def test_names_from_the_cloud_are_safe_in_file_names_and_log_lines(
    tmp_path: Path, photo: tuple[bytes, tuple[int, int]], caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN events named as an unchecked gallery could name them: a path, a NUL, terminal escapes
    from tests.edge.test_tracker import recorded, replay

    config = OutputsConfig.model_validate({"snapshots": {"directory": tmp_path / "snaps"}})
    outputs = Outputs(config, "test-edge")
    jpeg, _ = photo
    names = ["../../escaped", "nul\x00name", "\x1b[2J\x1b[31mred\nforged line"]
    with caplog.at_level(logging.INFO, logger="edge_client.outputs"):
        written = [outputs.event(dataclasses.replace(event, name=name, event_id=f"{event.event_id}-{i}"), jpeg)
                   for i, name in enumerate(names) for event in replay(recorded("one"))]
    outputs.close()
    # THEN each event's best picture is written inside the snapshot folder, one per name
    pictures = sorted((tmp_path / "snaps").iterdir())
    assert len(pictures) == len(names) and not (tmp_path / "escaped").exists()
    assert sorted(str(p) for p in written if p) == [str(p) for p in pictures]
    assert all(p.parent == tmp_path / "snaps" and "\x00" not in p.name and "/" not in p.name[1:] for p in pictures)
    # and no log line carries a control character (event lines, and the frame answers' line)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2 * len(names) and "redforged line arrived at" in lines[4]
    lines.append(answer_line("test-edge", _answer([("\x1b]0;owned\x07bob", 0.4, [1, 2, 3, 4])])))
    assert lines[-1] == "test-edge: ]0;ownedbob 0.40"
    assert not [line for line in lines if any(c in line for c in "\x00\x1b\n\x07")]
