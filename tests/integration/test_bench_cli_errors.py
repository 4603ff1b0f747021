"""`facepipe bench` told something it cannot use: one line naming the problem and exit status 2, never a traceback,
and no stack started; stopped with Ctrl-C: no worker left behind. Each case runs the real command in a process of its
own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.photos import PACKAGED, REPO, models_dir
from tests.processes import alive, worker_pids


def own_stack_env() -> dict[str, str]:
    """This environment without the session stack's: the bench starts its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("FACEPIPE_", "AWS_"))} | {"PYTHONPATH": str(REPO)}


def bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloud.operator.cli", "bench", *args], cwd=tmp_path,
                          env=own_stack_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("args", "says"), [
    (["--frames", "no-such-clip.mp4"], "no-such-clip.mp4: no such file or folder"),
    (["--frames", "notes.txt"], "notes.txt: not a JPEG, PNG or video"),
    (["--film", "notes.txt"], "cannot read photo notes.txt"),
    # The default demo clip is filmed from --photos, relative to where the command runs.
    ([], "`make photos` fetches them"),
    (["--pace", "-1"], "--pace 0 or more"),
    # Outputs are written after minutes of measuring: a folder that is not there is found first.
    (["--json", "no-such-folder/bench.json"], "--json no-such-folder/bench.json: no writable folder no-such-folder"),
    (["--chart", "no-such-folder/bench.png"], "--chart no-such-folder/bench.png: no writable folder"),
    (["--function-log", "no-such-folder/f.log"], "--function-log no-such-folder/f.log: no writable folder"),
])
def test_unusable_frames_or_options_are_one_line_and_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    result = bench(tmp_path, *args, "--models-dir", str(models_dir()))
    assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize(("args", "says"), [
    (["--engine", "torch", "--weights", "missing.pt"], "weights file missing.pt not found: build it with "
                                                       "`facepipe models prepare"),
    (["--models-dir", "no-models"], "`facepipe models export --models-dir DIR` (or `make models`) writes them"),
    (["--engine", "onnx,onnx"], "each once"),
])
def test_missing_models_are_one_line_with_how_to_build_them_and_exit_2(tmp_path: Path, args: list[str],
                                                                        says: str) -> None:
    result = bench(tmp_path, *args, "--photos", str(PACKAGED), "--limit", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert says in result.stderr
    assert "function URL listening" not in result.stderr  # checked before any stack started


def test_ctrl_c_mid_run_stops_every_worker_and_exits_130_without_a_traceback(tmp_path: Path) -> None:
    bench = subprocess.Popen(
        [sys.executable, "-m", "cloud.operator.cli", "bench", "--limit", "3", "--repeat", "5",
         "--models-dir", str(models_dir()), "--photos", str(PACKAGED)], cwd=tmp_path, env=own_stack_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # As a terminal starts it: a runner that started this session in the background (no job control) passes
        # SIGINT on ignored, and Python keeps an ignored SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (worker_pids("DetectionFunction", bench.pid) and worker_pids("RecognitionFunction", bench.pid)):
            assert bench.poll() is None and time.monotonic() < deadline, "no workers started"
            time.sleep(0.2)
        workers = worker_pids("DetectionFunction", bench.pid) | worker_pids("RecognitionFunction", bench.pid)
        bench.send_signal(signal.SIGINT)
        _, stderr = bench.communicate(timeout=60)
    finally:
        bench.kill()
    assert bench.returncode == 130 and "facepipe bench: interrupted" in stderr
    assert "Traceback" not in stderr, stderr[-2000:]
    assert not any(alive(pid) for pid in workers)
