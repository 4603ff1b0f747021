"""`facepipe local up` in a child process, as a user runs it: started, its exported client environment read
from its output, people enrolled with `facepipe enroll`, stopped with SIGTERM. For tests and benchmarks that
need a stack other than the in-process `local_stack` fixture (e.g. `--auth none`)."""

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
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import boto3

from tests.photos import REPO, models_dir


@dataclass
class LocalUp:
    process: subprocess.Popen[str]
    exports: dict[str, str]  # the `export NAME=value` lines it printed
    output: list[str]

    def client(self, service: str) -> Any:
        env = self.exports
        return boto3.session.Session().client(
            service, endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])

    def env(self) -> dict[str, str]:
        """A client process's environment: this one's minus any other stack's, plus the exports."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FACEPIPE_"))}
        return {**clean, **self.exports}

    def enroll(self, people: dict[str, list[Path]], workdir: Path) -> None:
        """`facepipe enroll --dir` over a folder of links to the photos (nothing copied)."""
        for name, photos in people.items():
            (workdir / name).mkdir(parents=True, exist_ok=True)
            for photo in photos:
                (workdir / name / f"{photo.parent.name}-{photo.name}").symlink_to(photo)
        subprocess.run([sys.executable, "-m", "cloud.operator.cli", "enroll", "--dir", str(workdir)], cwd=REPO,
                       env=self.env(), check=True, capture_output=True, text=True, timeout=600)


def _read_lines(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))


@contextmanager
def local_up(*args: str, ready_timeout: float = 300) -> Iterator[LocalUp]:
    """`facepipe local up ARGS...` until the block ends; yields once it printed `ready in`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FACEPIPE_"))}
    command = [sys.executable, "-m", "cloud.operator.cli", "local", "up", "--models-dir", str(models_dir()), *args]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + ready_timeout
        while not any(re.match(r"^ready in ", line) for line in output):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("facepipe local up did not get ready:\n" + "\n".join(output))
            with suppress(queue.Empty):
                output.append(lines.get(timeout=1))
        exports = dict(shlex.split(line[len("export "):])[0].split("=", 1)
                       for line in output if line.startswith("export "))
        yield LocalUp(process, exports, output)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
