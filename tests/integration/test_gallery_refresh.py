"""A warm recognition worker sees gallery changes made outside it (an enrollment, a removal) from its
next batch: the local stack's workers recheck the gallery's version every batch."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

from cloud.functions.contracts import HEADER_REPLY_TO
from tests.conftest import Mailbox, post_frame
from tests.photos import REPO, packaged

PERSON, PHOTO = "grace_hopper", "matplotlib/grace_hopper.jpg"


def names_for(stack: Any, reply_queue: str, mailbox: Mailbox) -> list[str]:
    request_id = str(uuid.uuid4())
    reply = post_frame(stack, packaged(PHOTO).read_bytes(), request_id=request_id,
                       headers={HEADER_REPLY_TO: reply_queue.rsplit("/", 1)[1]})
    assert reply.status_code == 202, reply.text
    return [face["name"] for face in mailbox.wait_for(request_id, timeout=90)["faces"]]


def test_enrollment_and_removal_reach_a_warm_recognition_worker(local_stack: Any, reply_queue: str) -> None:
    mailbox = Mailbox(local_stack.client("sqs"), reply_queue)
    # GIVEN a recognition worker that has already answered her frame: not enrolled, unknown
    assert names_for(local_stack, reply_queue, mailbox) == ["unknown"]
    workers = {e.pid for e in local_stack.functions["RecognitionFunction"].environments}
    # WHEN she is enrolled (models in this process, gallery to the stack's bucket) THEN the next frame is named
    report = local_stack.enroll({PERSON: [packaged(PHOTO)]})
    assert report.enrolled == {PERSON: 1}
    try:
        assert names_for(local_stack, reply_queue, mailbox) == [PERSON]
    finally:
        # AND removed again with the CLI, as an operator would, her next frame is unknown again
        removed = subprocess.run([sys.executable, "-m", "cloud.operator.cli", "gallery", "remove", PERSON,
                                  "--gallery", local_stack.gallery_uri], cwd=REPO, capture_output=True, text=True,
                                 env={**os.environ, **local_stack.client_env()}, timeout=120)
        assert removed.returncode == 0, removed.stderr
    assert names_for(local_stack, reply_queue, mailbox) == ["unknown"]
    # ... all served by the workers that were warm before (no worker was recycled to see the change)
    assert {e.pid for e in local_stack.functions["RecognitionFunction"].environments} >= workers
