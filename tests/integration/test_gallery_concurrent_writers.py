"""Two writer processes editing one gallery at the same time, on a moto S3 server over HTTP and in a
file: every edit lands (an enrollment never undoes a removal made meanwhile, nor the reverse)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cloud.functions import aws
from cloud.functions.recognition.gallery import Gallery, load_gallery, save_gallery
from tests.moto_env import REGION, moto_server, point_boto3_at
from tests.photos import REPO

TAG = "inception_resnet_v1:test"
EDITS = 25  # per process

# One writer: EDITS read-modify-write updates, each adding `prefix<k>` or removing `seed<k>`.
WRITER = """
import sys
import numpy as np
from cloud.functions.recognition.gallery import update_gallery
uri, action, prefix, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
retried = 0
for k in range(count):
    if action == "add":
        row = np.ones((1, 512), np.float32) / np.sqrt(512)
        update = update_gallery(uri, lambda g, k=k: g.add(f"{prefix}{k}", row))
    else:
        update = update_gallery(uri, lambda g, k=k: g.remove(f"{prefix}{k}"))
    assert update.changed, (action, k)
    retried += update.attempts - 1
print(retried)
"""


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    with moto_server() as endpoint, pytest.MonkeyPatch.context() as env:
        point_boto3_at(endpoint, env.setenv)
        s3 = aws.client("s3")
        s3.create_bucket(Bucket="galleries")
        s3.put_bucket_versioning(Bucket="galleries", VersioningConfiguration={"Status": "Enabled"})
        yield {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}
    aws.client.cache_clear()


def _race(uri: str, env: dict[str, str]) -> int:
    """Seed `seed0..` into the gallery, then run an adding and a removing writer at once; returns how
    many saves had to be retried (the conflicts the conditional writes caught)."""
    seeded = Gallery(TAG)
    seeded.add("keep", np.ones((1, 512), np.float32) / np.sqrt(512))
    for k in range(EDITS):
        seeded.add(f"seed{k}", np.ones((1, 512), np.float32) / np.sqrt(512))
    save_gallery(seeded, uri)
    process_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, uri, action, prefix, str(EDITS)], cwd=REPO,
                         env=process_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for action, prefix in (("add", "new"), ("remove", "seed"))
    ]
    retried = 0
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        retried += int(out)
    return retried


def test_s3_adding_and_removing_writers_lose_nothing(s3_env: dict[str, str]) -> None:
    retried = _race("s3://galleries/people/gallery.npz", s3_env)
    # every added name is there, every removed one is gone, the untouched one stayed
    expected = {"keep": 1, **{f"new{k}": 1 for k in range(EDITS)}}
    assert load_gallery("s3://galleries/people/gallery.npz").counts() == expected
    print(f"S3: {retried} of {2 * EDITS} saves were refused by If-Match and re-applied")


def test_file_adding_and_removing_writers_lose_nothing(tmp_path: Path) -> None:
    uri = str(tmp_path / "gallery.npz")
    retried = _race(uri, {})
    assert load_gallery(uri).counts() == {"keep": 1, **{f"new{k}": 1 for k in range(EDITS)}}
    assert retried == 0  # the lock queues the writers: none ever saves over the other's edit
