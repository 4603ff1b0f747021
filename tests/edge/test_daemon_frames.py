"""Where each frame the daemon sent ends: answered, unanswered, rejected or spooled, each counted once.

A real HTTP endpoint that accepts (or refuses) frames but answers nothing itself, and a real SQS
protocol server (moto over HTTP) for the response queue; the test plays the cloud's answer when needed.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from cloud.functions.contracts import RecognisedFace, ResponseMessage, Timings
from edge_client.config import deep_merge
from edge_client.daemon import MAX_UPLOAD_THREADS, Daemon
from tests.edge.conftest import Scripted, make_config, wait_until
from tests.photos import packaged

PHOTOS = ["face_recognition/obama.jpg", "face_recognition/biden.jpg"]


@pytest.fixture
def camera_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "camera"
    folder.mkdir()
    for index, photo in enumerate(PHOTOS):
        (folder / f"{index}.jpg").symlink_to(packaged(photo))
    return folder


@pytest.fixture
def queue(moto_sqs: Any) -> str:
    url: str = moto_sqs.create_queue(QueueName=f"edge-frames-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    return url


def _daemon(tmp_path: Path, url: str, queue: str, sqs: Any, source: Path, **sections: Any) -> Daemon:
    base = {"camera": {"source": str(source), "fps": 0}, "throttle": {"motion": {"enabled": False}},
            "endpoint": {"url": url}, "responses": {"queue_url": queue}}
    return Daemon(make_config(tmp_path, **deep_merge(base, sections)), sqs=sqs)


def _start(daemon: Daemon) -> threading.Thread:
    thread = threading.Thread(target=daemon.run, name="daemon-under-test", daemon=True)
    thread.start()
    return thread


def _answer(request_id: str) -> str:
    return ResponseMessage(
        request_id=request_id, device_id="test-edge", frame_timestamp=time.time(),
        faces=[RecognisedFace(box=[1, 2, 30, 40], name="barack_obama", distance=0.6, probability=0.99)],
        timings=Timings(detect_ms=10, queue_wait_ms=1, recognise_ms=20), model="test",
    ).model_dump_json()


def test_rejected_frames_are_logged_and_counted(
    tmp_path: Path, scripted_endpoint: tuple[str, Scripted], queue: str, moto_sqs: Any, camera_folder: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, script = scripted_endpoint
    script.statuses = [400]
    daemon = _daemon(tmp_path, url, queue, moto_sqs, camera_folder)
    thread = _start(daemon)
    thread.join(timeout=30)  # nothing awaits an answer: the daemon ends after the folder
    assert not thread.is_alive()
    summary = daemon.summary()
    assert summary["rejected"] == len(script.requests) == len(PHOTOS)  # not retried
    assert summary["sent"] == summary["spooled"] == summary["unanswered"] == 0
    assert caplog.text.count("rejected by the endpoint (HTTP 400)") == len(PHOTOS)


def test_frames_still_awaiting_an_answer_at_stop_are_counted_unanswered(
    tmp_path: Path, scripted_endpoint: tuple[str, Scripted], queue: str, moto_sqs: Any, camera_folder: Path,
) -> None:
    url, _ = scripted_endpoint
    daemon = _daemon(tmp_path, url, queue, moto_sqs, camera_folder, stop_timeout_s=0.5)
    thread = _start(daemon)
    wait_until(lambda: daemon.metrics.counts()["sent"] == len(PHOTOS), 30, "both frames accepted")
    time.sleep(0.3)
    assert thread.is_alive()  # waits for the answers (answer timeout 20 s)
    daemon.request_stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    summary = daemon.summary()
    assert summary["sent"] == summary["unanswered"] == len(PHOTOS) and summary["answered"] == 0
    assert len(daemon.parts.pending) == 0 and daemon.in_flight.count == 0


def _one_frame_camera(tmp_path: Path, camera_folder: Path) -> Path:
    """A folder camera holding only the first real photo of `camera_folder`."""
    camera = tmp_path / "one"
    camera.mkdir()
    (camera / "0.jpg").symlink_to(camera_folder / "0.jpg")
    return camera


def test_answer_timeout_runs_from_acceptance_not_from_a_slow_upload(
    tmp_path: Path, scripted_endpoint: tuple[str, Scripted], queue: str, moto_sqs: Any, camera_folder: Path,
) -> None:
    # The endpoint takes 2 s per frame; an answer counts as late only 1 s after the frame was accepted.
    url, script = scripted_endpoint
    script.delay_s = 2.0
    camera = _one_frame_camera(tmp_path, camera_folder)
    daemon = _daemon(tmp_path, url, queue, moto_sqs, camera, responses={"answer_timeout_s": 1})
    thread = _start(daemon)
    wait_until(lambda: daemon.metrics.counts()["sent"] == 1, 30, "the frame accepted")
    moto_sqs.send_message(QueueUrl=queue, MessageBody=_answer(script.requests[0]["headers"]["X-Request-Id"]))
    thread.join(timeout=30)
    assert not thread.is_alive()
    summary = daemon.summary()
    assert summary["answered"] == 1 and summary["unanswered"] == summary["late"] == 0
    assert summary["latency_median_s"] >= 2.0  # capture to answer includes the slow upload


def test_stop_lets_an_upload_under_way_finish_and_awaits_its_answer(
    tmp_path: Path, scripted_endpoint: tuple[str, Scripted], queue: str, moto_sqs: Any, camera_folder: Path,
) -> None:
    url, script = scripted_endpoint
    script.delay_s = 1.0
    daemon = _daemon(tmp_path, url, queue, moto_sqs, camera_folder, throttle={"max_in_flight": 1}, stop_timeout_s=5)
    thread = _start(daemon)
    wait_until(lambda: len(script.requests) == 1, 30, "the upload under way")
    daemon.request_stop()  # SIGTERM while the endpoint is still busy with the frame
    wait_until(lambda: daemon.metrics.counts()["sent"] == 1, 10, "the upload finished after the stop")
    moto_sqs.send_message(QueueUrl=queue, MessageBody=_answer(script.requests[0]["headers"]["X-Request-Id"]))
    thread.join(timeout=10)
    assert not thread.is_alive()
    summary = daemon.summary()
    assert summary["sent"] == summary["answered"] == 1 and summary["unanswered"] == summary["spooled"] == 0
    assert len(script.requests) == 1 and len(daemon.spool) == 0


def test_frame_answered_without_an_http_response_is_not_sent_again(
    tmp_path: Path, scripted_endpoint: tuple[str, Scripted], queue: str, moto_sqs: Any, camera_folder: Path,
) -> None:
    # The endpoint takes longer than the client's timeout (a slow cold start) but processes the frame:
    # its answer arrives while the upload fails. Spooling it would send it again and report it twice.
    url, script = scripted_endpoint
    script.delay_s = 2.0
    camera = _one_frame_camera(tmp_path, camera_folder)
    daemon = _daemon(tmp_path, url, queue, moto_sqs, camera,
                     endpoint={"timeout_s": 1.0, "retries": {"max_attempts": 1}})
    thread = _start(daemon)
    wait_until(lambda: len(script.requests) == 1, 30, "the upload under way")
    moto_sqs.send_message(QueueUrl=queue, MessageBody=_answer(script.requests[0]["headers"]["X-Request-Id"]))
    thread.join(timeout=30)
    assert not thread.is_alive()
    summary = daemon.summary()
    assert summary["sent"] == summary["answered"] == 1 and summary["spooled"] == 0
    assert len(script.requests) == 1 and summary["upload_errors"] == 1


def test_upload_cut_off_at_stop_is_spooled_once(
    tmp_path: Path, scripted_endpoint: tuple[str, Scripted], queue: str, moto_sqs: Any, camera_folder: Path,
) -> None:
    # A frame still uploading at the stop deadline is spooled by the shutdown; when its upload then
    # fails, the uploader must not spool (and count) it a second time.
    url, script = scripted_endpoint
    script.statuses, script.delay_s = [503], 2.0
    camera = _one_frame_camera(tmp_path, camera_folder)
    daemon = _daemon(tmp_path, url, queue, moto_sqs, camera, stop_timeout_s=0.5)
    thread = _start(daemon)
    wait_until(lambda: len(script.requests) == 1, 30, "the upload under way")
    daemon.request_stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    for name, worker in daemon._threads.items():  # the cut-off upload ends when the endpoint answers
        worker.join(timeout=10)
        assert not worker.is_alive(), name
    assert len(daemon.spool) == 1 and daemon.metrics.counts()["spooled"] == 1
    assert daemon.spool.oldest()[0].request_id == script.requests[0]["headers"]["X-Request-Id"]  # type: ignore[union-attr]


def test_frames_queued_behind_cut_off_uploads_are_spooled_at_stop(
    tmp_path: Path, scripted_endpoint: tuple[str, Scripted], queue: str, moto_sqs: Any, camera_folder: Path,
) -> None:
    # More frames in flight than upload threads: at the deadline some wait in the upload queue. The
    # process exits right after run() returns, so they must be in the spool by then.
    url, script = scripted_endpoint
    script.statuses, script.delay_s = [503], 3.0
    slots = MAX_UPLOAD_THREADS + 3
    daemon = _daemon(tmp_path, url, queue, moto_sqs, camera_folder, stop_timeout_s=0.5,
                     camera={"loop": True}, throttle={"max_fps": 60, "max_in_flight": slots})
    thread = _start(daemon)
    wait_until(lambda: len(script.requests) == MAX_UPLOAD_THREADS and daemon.in_flight.count == slots, 30,
               "every upload thread busy and the queue full")
    daemon.request_stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(daemon.spool) == daemon.metrics.counts()["spooled"] == slots
