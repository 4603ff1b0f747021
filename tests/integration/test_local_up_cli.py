"""`facepipe local up` as a user runs it: a new process that prints its endpoints and the client
environment, serves a frame end to end, and exits 0 on SIGTERM, on the default engine (onnx, whose workers never
load torch) and on the reference engine (torch). Also measures each handler's cold start (new process to first
result) and prints it; figures, not asserts."""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import IO

import boto3
import pytest

from tests.conftest import Mailbox, post_frame
from tests.local_up import local_up
from tests.photos import REPO, models_dir, packaged, weights_path
from tests.processes import alive, mapped_libraries, worker_pids

pytestmark = pytest.mark.slow


def read_lines(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))


def wait_for_line(lines: queue.Queue[str], pattern: str, timeout: float, seen: list[str]) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        if re.search(pattern, line):
            return line
    raise AssertionError(f"no line matching {pattern!r} within {timeout} s; output:\n" + "\n".join(seen))


def test_local_up_prints_endpoints_serves_a_frame_and_stops_on_sigterm() -> None:
    # A clean environment: nothing of a stack running in this test process leaks into the child.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FACEPIPE_"))}
    prefix = f"cli-{uuid.uuid4().hex[:6]}-"
    command = [sys.executable, "-m", "cloud.operator.cli", "local", "up", "--models-dir", str(models_dir()),
               "--handler-timeout", "5", "--max-receive-count", "4", "--prefix", prefix,
               "--known-faces-days", "9", "--unknown-faces-days", "2"]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=read_lines, args=(process.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        ready_line = wait_for_line(lines, r"^ready in ", 180, seen)
        ready_s = time.monotonic() - started
        exports = dict(shlex.split(line[len("export "):])[0].split("=", 1)
                       for line in seen if line.startswith("export "))
        for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
                     "FACEPIPE_FUNCTION_URL", "FACEPIPE_RESPONSE_QUEUE_URL"):
            assert exports.get(name), f"{name} not exported"
        for url in (exports["AWS_ENDPOINT_URL"], exports["FACEPIPE_FUNCTION_URL"]):
            assert url.startswith("http://127.0.0.1:"), url
        assert any(line.startswith("function URL") for line in seen)
        assert f"engine         onnx, models {models_dir()} (both functions and enrollment)" in seen
        assert exports["FACEPIPE_ENGINE"] == "onnx" and exports["FACEPIPE_MODELS_DIR"] == str(models_dir())
        # The queues are template.yaml's, named by CloudFormation in the stack named after the prefix.
        stack_line = next(line for line in seen if line.startswith("stack "))
        assert f"stack          {prefix[:-1]} " in stack_line, stack_line
        for option in ("DetectionTimeout 5", "RecognitionTimeout 5", "MaxReceiveCount 4", "KnownFacesRetentionDays 9",
                       "UnknownFacesRetentionDays 2", "KeepFaces true"):
            assert option in stack_line, stack_line
        assert any(line.startswith("request queue") and "visibility 30 s" in line for line in seen)  # Mapping: 6x5
        queue_name = exports["FACEPIPE_RESPONSE_QUEUE_URL"].rsplit("/", 1)[1]
        assert queue_name.startswith(f"{prefix}ResponseQueue-"), queue_name

        # A client that knows only the printed environment.
        stack = SimpleNamespace(
            function_url=exports["FACEPIPE_FUNCTION_URL"], region=exports["AWS_REGION"],
            credentials=SimpleNamespace(access_key=exports["AWS_ACCESS_KEY_ID"],
                                        secret_key=exports["AWS_SECRET_ACCESS_KEY"]),
        )
        sqs = boto3.session.Session().client(
            "sqs", endpoint_url=exports["AWS_ENDPOINT_URL"], region_name=exports["AWS_REGION"],
            aws_access_key_id=exports["AWS_ACCESS_KEY_ID"], aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"])
        # The faces library's retention options are the bucket's lifecycle rules, as the template makes them.
        s3 = boto3.session.Session().client(
            "s3", endpoint_url=exports["AWS_ENDPOINT_URL"], region_name=exports["AWS_REGION"],
            aws_access_key_id=exports["AWS_ACCESS_KEY_ID"], aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"])
        rules = {rule.get("Prefix", rule.get("Filter", {}).get("Prefix")): rule for rule in
                 s3.get_bucket_lifecycle_configuration(Bucket=exports["FACEPIPE_BUCKET"])["Rules"]}
        assert (rules["faces/known/"]["Expiration"]["Days"], rules["faces/unknown/"]["Expiration"]["Days"]) == (9, 2)
        request_id = str(uuid.uuid4())
        posted = time.monotonic()
        reply = post_frame(stack, packaged("face_recognition/obama2.jpg").read_bytes(), request_id=request_id)
        accepted = time.monotonic()
        assert reply.status_code == 202, reply.text
        answer = Mailbox(sqs, exports["FACEPIPE_RESPONSE_QUEUE_URL"]).wait_for(request_id, timeout=60)
        answered = time.monotonic()
        assert answer["request_id"] == request_id and len(answer["faces"]) == 1
        warm_ms = []
        for _ in range(3):  # warm: the same frame again, end to end
            request_id, posted_warm = str(uuid.uuid4()), time.monotonic()
            post_frame(stack, packaged("face_recognition/obama2.jpg").read_bytes(), request_id=request_id)
            Mailbox(sqs, exports["FACEPIPE_RESPONSE_QUEUE_URL"]).wait_for(request_id, timeout=60)
            warm_ms.append((time.monotonic() - posted_warm) * 1000)

        # Each function runs in worker processes of its own (at least the pre-started one each) ...
        workers = {name: worker_pids(name, parent=process.pid) for name in ("DetectionFunction", "RecognitionFunction")}
        assert all(workers.values()), workers
        # ... that never loaded torch: the onnx engine runs on ONNX Runtime alone, as the image ships it
        for pid in set().union(*workers.values()):
            libraries = mapped_libraries(pid)
            assert any(name.startswith("onnxruntime_pybind11_state") for name in libraries)
            assert not [name for name in libraries if name.startswith("libtorch")], pid
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        stopped = time.monotonic()
        # ... and none outlives the stack.
        assert not any(alive(pid) for pids in workers.values() for pid in pids)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    print(f"\n[local up] {ready_line}")
    print(f"[cold start] new process -> stack ready {ready_s:.1f} s; "
          f"-> first detection result (202) {accepted - started:.1f} s "
          f"(first invocation {(accepted - posted) * 1000:.0f} ms); "
          f"-> first recognition result on the response queue {answered - started:.1f} s "
          f"(first frame end to end {(answered - posted) * 1000:.0f} ms); SIGTERM -> exit {stopped - stopping:.1f} s")
    print(f"[warm] one 1-face frame end to end (POST -> answer received): "
          f"{', '.join(f'{ms:.0f}' for ms in warm_ms)} ms")


def test_local_up_refuses_a_value_the_template_does_not_allow_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FACEPIPE_"))}
    command = [sys.executable, "-m", "cloud.operator.cli", "local", "up", "--models-dir", str(models_dir()),
               "--recognition-timeout", "7"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "facepipe local up: template parameter RecognitionTimeout = 7: not one of the allowed values "
        "3, 5, 10, 15, 30, 60, 90, 120, 180, 300, 600, 900"], result.stderr


def test_local_up_on_the_torch_engine_names_an_enrolled_person(tmp_path: Path) -> None:
    """The reference stays runnable: the whole stack on `--engine torch`, enrolled with `facepipe enroll` from the
    printed environment, answers a frame with the right name and the torch model's tag."""
    with local_up("--engine", "torch", "--weights", str(weights_path()), "--prefix",
                  f"torch-{uuid.uuid4().hex[:6]}-", "--recognition-concurrency", "1") as stack:
        assert stack.exports["FACEPIPE_ENGINE"] == "torch"
        stack.enroll({"barack_obama": [packaged("face_recognition/obama.jpg")]}, tmp_path / "people")
        client = SimpleNamespace(
            function_url=stack.exports["FACEPIPE_FUNCTION_URL"], region=stack.exports["AWS_REGION"],
            credentials=SimpleNamespace(access_key=stack.exports["AWS_ACCESS_KEY_ID"],
                                        secret_key=stack.exports["AWS_SECRET_ACCESS_KEY"]))
        request_id = str(uuid.uuid4())
        reply = post_frame(client, packaged("face_recognition/obama2.jpg").read_bytes(), request_id=request_id)
        assert reply.status_code == 202, reply.text
        answer = Mailbox(stack.client("sqs"), stack.exports["FACEPIPE_RESPONSE_QUEUE_URL"]).wait_for(request_id)
        assert [face["name"] for face in answer["faces"]] == ["barack_obama"]
        assert answer["model"].startswith("inception_resnet_v1:")  # the weights' tag, not the ONNX file's
        # the check the onnx test makes can fail: these workers did load torch
        pids = worker_pids("RecognitionFunction", parent=stack.process.pid)
        assert pids and all(any(name.startswith("libtorch") for name in mapped_libraries(pid)) for pid in pids)
