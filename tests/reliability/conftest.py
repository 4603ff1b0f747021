"""Helpers for the fault tests that run the real edge daemon (`facepipe-edge run`, its own process)
against the local stack: a camera folder of real photos, a switchable TCP proxy in front of the Function
URL, the daemon's config and environment, and its run summary and JSONL answers read back."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.edge.conftest import function_url_proxy  # noqa: F401 - the fixture, shared with tests/edge
from tests.photos import packaged

REPO = Path(__file__).resolve().parents[2]
# Real photos: two enrolled people (tests/conftest.py ENROLLED) and one stranger.
CAMERA_PHOTOS = ["face_recognition/obama2.jpg", "face_recognition/biden.jpg", "face_recognition/obama3.jpg",
                 "matplotlib/grace_hopper.jpg"]
_SUMMARY = re.compile(r"(captured|gated out|sent|answered|unanswered|spooled|dropped|duplicates|rejected) (\d+)")


def camera_folder(directory: Path, frames: int) -> Path:
    """A folder camera of `frames` images, the real photos in turn (symlinks, names in capture order)."""
    directory.mkdir(parents=True)
    for index in range(frames):
        (directory / f"{index:05d}.jpg").symlink_to(packaged(CAMERA_PHOTOS[index % len(CAMERA_PHOTOS)]))
    return directory


def daemon_config(local_stack: Any, reply_queue: str, tmp_path: Path, endpoint_url: str,
                  **sections: dict[str, Any]) -> dict[str, Any]:
    """The daemon's YAML config: signed uploads to `endpoint_url`, answers on this test's reply queue,
    spool and JSONL in tmp_path, motion gating off (every photo is a new scene anyway)."""
    config: dict[str, Any] = {
        "device_id": "fault-cam",
        "throttle": {"motion": {"enabled": False}, "max_side": 640},
        "endpoint": {"url": endpoint_url, "auth": "aws_iam", "region": local_stack.region, "timeout_s": 15,
                     "retries": {"max_attempts": 3, "base_s": 0.2, "max_s": 2.0}},
        "responses": {"queue_url": reply_queue, "endpoint_url": local_stack.endpoint_url,
                      "reply_to": reply_queue.rsplit("/", 1)[-1], "wait_s": 1, "answer_timeout_s": 120},
        "spool": {"directory": str(tmp_path / "spool")},
        "outputs": {"jsonl": {"path": str(tmp_path / "answers.jsonl")}},
        "metrics": {"listen": None},
        "stop_timeout_s": 15,
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


def start_daemon(local_stack: Any, config: dict[str, Any], path: Path) -> subprocess.Popen[str]:
    """`python -m edge_client run --config PATH` with the stack's credentials (and nothing else of the
    stack's exports: the config says where to send)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEPIPE_EDGE__", "AWS_"))}
    env.update({k: v for k, v in local_stack.client_env().items() if k.startswith("AWS_")})
    env["PYTHONPATH"] = str(REPO)
    path.write_text(yaml.safe_dump(config))
    return subprocess.Popen([sys.executable, "-m", "edge_client", "run", "--config", str(path)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@dataclass
class RunResult:
    returncode: int
    counts: dict[str, int]  # the daemon's own summary line
    stdout: str
    stderr: str


def finish(process: subprocess.Popen[str], timeout: float) -> RunResult:
    """Wait for the daemon to exit (killing it after `timeout`), and parse its summary line."""
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    counts = {key.replace("gated out", "gated"): int(value) for key, value in _SUMMARY.findall(out)}
    assert process.returncode is not None
    return RunResult(process.returncode, counts, out, err)


def answers(path: Path) -> list[dict[str, Any]]:
    """The daemon's JSONL output: one record per answered frame."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def spooled_ids(spool: Path) -> set[str]:
    return {p.name.split("-", 2)[2].removesuffix(".frame") for p in spool.glob("*.frame")}
