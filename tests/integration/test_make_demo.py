"""`make demo` as a first-time user runs it: `python -m cloud.emulator.demo` in a process of its own, on the packaged
photos, with nothing of this session's stack in its environment. It must end with every frame it sent answered,
every arrival closed by a departure (each with its best picture), and the status page photographed once everyone
has left, as the README promises."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from tests.browser import needs_chromium
from tests.photos import PACKAGED, REPO, models_dir

pytestmark = pytest.mark.slow


def summary_counts(output: str) -> dict[str, int]:
    """The daemon's closing line, `frames: captured 170, gated out 145 (...), sent 25, ...`, as counts."""
    line = next(line for line in output.splitlines() if line.startswith("frames: captured"))
    counts = line.split(";")[0].removeprefix("frames: ")
    counts = re.sub(r"\([^)]*\)", "", counts)  # the gating reasons' breakdown
    return {name: int(value) for name, value in re.findall(r"([a-z][a-z ]*?) (\d+)", counts)}


@needs_chromium
def test_make_demo_answers_every_frame_closes_every_event_and_photographs_the_status_page(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FACEPIPE_"))}
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "cloud.emulator.demo", "--models-dir", str(models_dir()), "--photos", str(PACKAGED),
         "--workdir", str(workdir)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "engine onnx, models " in result.stdout  # what the functions' image runs, by default

    counts = summary_counts(result.stdout)
    assert counts["sent"] > 0 and counts["answered"] == counts["sent"], counts
    assert counts["unanswered"] == counts["dropped"] == counts["rejected"] == counts["spooled"] == 0, counts

    events = [json.loads(line) for line in (workdir / "events.jsonl").read_text().splitlines()]
    starts = {e["event_id"]: e for e in events if e["type"] == "start"}
    ends = {e["event_id"]: e for e in events if e["type"] == "end"}
    assert starts and starts.keys() == ends.keys(), events  # everyone who arrived has left
    assert "barack_obama" in {e["name"] for e in ends.values()}  # filmed from other photos than the enrolled one
    for end in ends.values():
        assert end["best_snapshot"] and Path(end["best_snapshot"]).is_file(), end

    # it ends by printing the faces library's URL, the page photographed (no terminal here, so it does not wait)
    assert re.search(r"faces library: http://127\.0\.0\.1:\d+/ ", result.stdout.splitlines()[-1]), output[-2000:]
    faces_page = cv2.imread(str(workdir / "faces-page.png"))
    assert faces_page is not None and float(faces_page.std()) > 10

    match = re.search(r"^status page screenshot: (.+)$", result.stdout, re.MULTILINE)
    assert match, output[-4000:]
    image = cv2.imread(match.group(1))
    assert image is not None and image.shape[:2] == (1100, 1280) and float(image.std()) > 10
