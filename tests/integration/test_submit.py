"""`facepipe submit` as a user runs it, against the real local stack: the shared identities' 1.jpg enrolled,
a folder of their 2.jpg submitted through each door, every answer present and named right, in JSONL and CSV.
Prints each door's throughput and latency (figures, not asserts)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.photos import REPO, SHARED, requires_shared

pytestmark = [pytest.mark.slow, requires_shared]


@pytest.fixture(scope="module")
def shared_people(local_stack: Any, ingest_door: Any) -> Iterator[dict[str, Path]]:
    """Every shared identity's 1.jpg enrolled for this module (the session's gallery is restored after);
    yields {name: 2.jpg} for those with a second photo."""
    s3 = local_stack.client("s3")
    bucket, key = local_stack.gallery_uri[len("s3://"):].split("/", 1)
    saved = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    people = {p.name: [p / "1.jpg"] for p in sorted((SHARED / "identities").iterdir()) if p.is_dir()}
    local_stack.enroll(people)
    try:
        yield {name: photos[0].parent / "2.jpg" for name, photos in people.items()
               if (photos[0].parent / "2.jpg").is_file()}
    finally:
        s3.put_object(Bucket=bucket, Key=key, Body=saved)  # workers recheck the gallery every batch


@pytest.fixture(scope="module")
def probes(shared_people: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of the 2.jpg photos, linked (not copied) as <name>.jpg."""
    folder = tmp_path_factory.mktemp("probes")
    for name, photo in shared_people.items():
        (folder / f"{name}.jpg").symlink_to(photo)
    return folder


def facepipe_submit(local_stack: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**local_stack.client_env(), "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "cloud.operator.cli", "submit", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def rows_of(out: Path) -> list[dict[str, Any]]:
    if out.suffix == ".jsonl":
        return [json.loads(line) for line in out.read_text().splitlines()]
    with out.open(newline="") as fh:
        return [{**row, "result": row["names"].replace(";", ",")} for row in csv.DictReader(fh)]


@pytest.mark.parametrize(("via", "suffix"), [("url", ".jsonl"), ("url", ".csv"), ("queue", ".csv"),
                                             ("queue", ".jsonl"), ("s3", ".jsonl"), ("s3", ".csv")])
def test_every_photo_is_answered_with_the_right_name(
    local_stack: Any, shared_people: dict[str, Path], probes: Path, tmp_path: Path, via: str, suffix: str
) -> None:
    out = tmp_path / f"answers{suffix}"
    done = facepipe_submit(local_stack, str(probes), "--via", via, "--out", str(out), "--concurrency", "4",
                           "--timeout", "90")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = rows_of(out)
    assert len(rows) == len(shared_people) >= 20
    named = {Path(row["path"]).stem: row["result"] for row in rows}
    assert named == {name: name for name in shared_people}
    assert all(row["status"] == "answered" and row["request_id"] for row in rows)
    assert len({row["request_id"] for row in rows}) == len(rows)
    summary = done.stdout.strip().splitlines()
    assert summary[0].startswith(f"sent {len(rows)}, answered {len(rows)}, unanswered 0"), done.stdout
    print(f"\n[submit --via {via}] {len(rows)} photos: " + " | ".join(summary))


def test_unanswered_inputs_exit_non_zero(local_stack: Any, probes: Path, tmp_path: Path) -> None:
    # A text file named .jpg: the URL refuses it (415), so it is never answered.
    bad = tmp_path / "not-a-photo.jpg"
    bad.write_text("hello")
    done = facepipe_submit(local_stack, str(bad), "--via", "url", "--timeout", "5")
    assert done.returncode == 1
    assert "refused 1" in done.stdout and "HTTP 415" in done.stderr


def test_a_video_is_submitted_every_nth_frame(local_stack: Any, shared_people: dict[str, Path],
                                              tmp_path: Path) -> None:
    video = SHARED / "video" / "short_hamilton_clip.mp4"
    out = tmp_path / "video.jsonl"
    done = facepipe_submit(local_stack, str(video), "--via", "queue", "--every", "60", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = rows_of(out)
    assert [row["path"] for row in rows] == [f"{video}#{i}" for i in range(0, 300, 60)]  # 10 s at 29.97 fps
    assert all(row["status"] == "answered" for row in rows)
