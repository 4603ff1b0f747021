"""The whole daemon against the real local stack (moto over HTTP, real detection and recognition):
the real clip end to end, endpoint down then up, SIGTERM then restart, signing, and `check`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.credentials import Credentials

from edge_client.daemon import Daemon
from edge_client.metrics import format_summary
from edge_client.uploader import Outcome, Signer, Uploader
from tests.edge.conftest import CLIP, TcpProxy, free_port, make_config, wait_until
from tests.photos import SHARED, packaged, requires_shared

REPO = Path(__file__).resolve().parents[2]
# Real photos of enrolled people (tests/conftest.py ENROLLED) and one who is not.
PHOTOS = {"a.jpg": "face_recognition/obama2.jpg", "b.jpg": "face_recognition/biden.jpg",
          "c.jpg": "face_recognition/obama3.jpg", "d.jpg": "matplotlib/grace_hopper.jpg"}


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "camera"
    folder.mkdir()
    for name, photo in PHOTOS.items():
        (folder / name).symlink_to(packaged(photo))
    return folder




def _stack_config(local_stack: Any, reply_queue: str, tmp_path: Path, **sections: Any) -> Any:
    base = {
        "endpoint": {"url": local_stack.function_url, "auth": "aws_iam", "region": local_stack.region},
        "responses": {"queue_url": reply_queue, "endpoint_url": local_stack.endpoint_url,
                      "reply_to": reply_queue.rsplit("/", 1)[-1], "wait_s": 1, "answer_timeout_s": 60},
        "outputs": {"jsonl": {"path": str(tmp_path / "answers.jsonl")}},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return make_config(tmp_path, **base)


def _run_in_thread(daemon: Daemon) -> threading.Thread:
    thread = threading.Thread(target=daemon.run, name="daemon-under-test", daemon=True)
    thread.start()
    return thread


def _answers(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_signed_request_accepted_and_wrong_secret_refused(local_stack: Any, reply_queue: str) -> None:
    config = _stack_config(local_stack, reply_queue, Path("/nonexistent"))
    jpeg = packaged("face_recognition/biden.jpg").read_bytes()
    good = Signer(local_stack.region)  # the standard chain: the stack's AWS_* environment
    bad = Signer(local_stack.region, credentials=Credentials(local_stack.credentials.access_key, "wrong-secret"))
    reply = reply_queue.rsplit("/", 1)[-1]
    accepted = Uploader(config.endpoint, "porch", reply, threading.Event(), good).upload(
        jpeg, str(uuid.uuid4()), time.time())
    assert accepted.outcome is Outcome.ACCEPTED and accepted.status == 202
    assert accepted.accepted is not None and accepted.accepted.faces == 1
    refused = Uploader(config.endpoint, "porch", reply, threading.Event(), bad).upload(
        jpeg, str(uuid.uuid4()), time.time())
    assert refused.outcome is Outcome.REJECTED and refused.status == 403 and refused.attempts == 1
    unsigned = Uploader(config.endpoint, "porch", reply, threading.Event(), None).upload(
        jpeg, str(uuid.uuid4()), time.time())
    assert unsigned.outcome is Outcome.REJECTED and unsigned.status == 403


@requires_shared
def test_real_clip_end_to_end(local_stack: Any, reply_queue: str, tmp_path: Path) -> None:
    """The clip at its own frame rate (a camera's pace), default throttle: every frame sent is answered."""
    config = _stack_config(local_stack, reply_queue, tmp_path, camera={"source": str(SHARED / CLIP), "fps": None},
                           throttle={"max_fps": 3})
    daemon = Daemon(config)
    thread = _run_in_thread(daemon)
    thread.join(timeout=120)
    assert not thread.is_alive()
    summary = daemon.summary()
    print("\nclip end to end:", format_summary(summary))
    assert summary["captured"] >= 270
    assert summary["sent"] >= 10 and summary["answered"] == summary["sent"]
    assert summary["unanswered"] == summary["dropped"] == summary["rejected"] == 0
    assert summary["gated"] == summary["captured"] - summary["sent"]
    answers = _answers(tmp_path / "answers.jsonl")
    assert len(answers) == summary["answered"] and {a["device_id"] for a in answers} == {"test-edge"}
    assert sum(len(a["faces"]) for a in answers) > 0  # the clip shows people
    assert 0 < summary["latency_median_s"] <= summary["latency_p95_s"]
    # the daemon asks for each face's evidence (answer schema 2) and the stack sends it
    assert {a["schema_version"] for a in answers} == {2}
    faces = [f for a in answers for f in a["faces"]]
    assert all(f["candidates"] and f["candidates"][0]["distance"] == f["distance"] for f in faces)
    assert all(f["quality"]["width_px"] == pytest.approx(f["box"][2] - f["box"][0], abs=0.06) for f in faces)


def test_endpoint_down_then_up_delivers_everything_spooled(
    local_stack: Any, reply_queue: str, tmp_path: Path, photo_folder: Path, function_url_proxy: TcpProxy
) -> None:
    config = _stack_config(local_stack, reply_queue, tmp_path, camera={"source": str(photo_folder)},
                           endpoint={"url": function_url_proxy.url}, throttle={"motion": {"enabled": False}})
    daemon = Daemon(config)
    thread = _run_in_thread(daemon)
    try:
        wait_until(lambda: daemon.capture_done.is_set() and len(daemon.spool) == len(PHOTOS), 30,
                   "every frame spooled while the endpoint is down")
        spooled_ids = {p.name.split("-", 2)[2].removesuffix(".frame") for p in daemon.spool.directory.glob("*.frame")}
        assert daemon.metrics.counts()["sent"] == 0 and daemon.endpoint_down.is_set()
        time.sleep(0.5)
        assert thread.is_alive()  # waits for the endpoint rather than losing frames
        function_url_proxy.up()
        thread.join(timeout=90)
        assert not thread.is_alive()
    finally:
        daemon.request_stop()
    summary = daemon.summary()
    assert summary["spooled"] == summary["sent"] == summary["answered"] == len(PHOTOS)
    assert summary["dropped"] == summary["unanswered"] == 0 and len(daemon.spool) == 0
    answers = _answers(tmp_path / "answers.jsonl")
    assert {a["request_id"] for a in answers} == spooled_ids
    names = {face["name"] for a in answers for face in a["faces"]}
    assert {"barack_obama", "joe_biden"} <= names


def _daemon_process(config: dict[str, Any], path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    path.write_text(yaml.safe_dump(config))
    return subprocess.Popen([sys.executable, "-m", "edge_client", "run", "--config", str(path)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_mid_run_then_restart_delivers_the_spool(
    local_stack: Any, reply_queue: str, tmp_path: Path, photo_folder: Path, function_url_proxy: TcpProxy
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPIPE_EDGE__")}
    env.update({k: v for k, v in local_stack.client_env().items() if k.startswith("AWS_")})
    spool = tmp_path / "spool"
    config: dict[str, Any] = {
        "device_id": "sigterm-test",
        "camera": {"source": str(photo_folder), "loop": True, "fps": 20},
        "throttle": {"max_fps": 20, "motion": {"enabled": False}},
        "endpoint": {"url": function_url_proxy.url, "region": local_stack.region,
                     "retries": {"max_attempts": 2, "base_s": 0.05, "max_s": 0.5}},
        "responses": {"queue_url": reply_queue, "endpoint_url": local_stack.endpoint_url,
                      "reply_to": reply_queue.rsplit("/", 1)[-1], "wait_s": 1},
        "spool": {"directory": str(spool)},
        "outputs": {"jsonl": {"path": str(tmp_path / "answers.jsonl")}},
        "metrics": {"listen": None},
        "stop_timeout_s": 5,
    }
    # Run 1: endpoint down, a looping camera; SIGTERM once frames pile up in the spool.
    first = _daemon_process(config, tmp_path / "run1.yaml", env)
    try:
        wait_until(lambda: len(list(spool.glob("*.frame"))) >= 6, 60, "frames in the spool")
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert "Traceback" not in err and "SIGTERM received" in err
    assert "frames: captured" in out
    spooled_ids = {p.name.split("-", 2)[2].removesuffix(".frame") for p in spool.glob("*.frame")}
    assert len(spooled_ids) >= 6

    # Run 2: endpoint up, a camera that ends; the daemon delivers the spool and its own frames, then exits.
    function_url_proxy.up()
    config["camera"] = {"source": str(photo_folder), "loop": False, "fps": 0}
    second = _daemon_process(config, tmp_path / "run2.yaml", env)
    try:
        out, err = second.communicate(timeout=120)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, err
    assert not list(spool.glob("*.frame"))
    answered = {a["request_id"] for a in _answers(tmp_path / "answers.jsonl")}
    assert spooled_ids <= answered
    counts = {key: int(value) for key, value in re.findall(r"(sent|answered|unanswered|dropped) (\d+)", out)}
    # Live frames may be gated "busy" while the spool drains (max_in_flight): whatever was sent is answered.
    assert counts["sent"] == counts["answered"] == len(answered) >= len(spooled_ids) + 1
    assert counts["unanswered"] == counts["dropped"] == 0


def test_check_reports_each_dependency(local_stack: Any, reply_queue: str, tmp_path: Path,
                                       photo_folder: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPIPE_EDGE__")}
    env.update({k: v for k, v in local_stack.client_env().items() if k.startswith("AWS_")})
    config = {
        "device_id": "check-test", "camera": {"source": str(photo_folder)},
        "endpoint": {"url": local_stack.function_url, "region": local_stack.region},
        "responses": {"queue_url": reply_queue, "endpoint_url": local_stack.endpoint_url},
        "spool": {"directory": str(tmp_path / "spool")},
    }
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "edge_client", "check", "--config", str(path)]
    good = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    lines = good.stdout.strip().splitlines()
    assert good.returncode == 0, good.stdout + good.stderr
    assert [line.split(":")[0] for line in lines] == ["config", "camera", "endpoint", "response queue", "spool"]
    assert all(": ok" in line for line in lines)

    env["AWS_SECRET_ACCESS_KEY"] = "wrong-secret"
    config["camera"] = {"source": str(tmp_path / "missing.mp4")}
    config["responses"]["endpoint_url"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    path.write_text(yaml.safe_dump(config))
    bad = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    lines = bad.stdout.strip().splitlines()
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    failed = [line.split(":")[0] for line in lines if "FAILED" in line]
    assert failed == ["camera", "endpoint", "response queue"]
    assert "403" in next(line for line in lines if line.startswith("endpoint"))
