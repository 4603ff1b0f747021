"""`facepipe dlq list|redrive` against the local stack (moto over HTTP), as a client process: the listing
names each dead letter and consumes nothing; redrive moves them back and they are answered."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from typing import Any

from cloud.functions.contracts import HEADER_REPLY_TO, ImageEvent
from tests.conftest import MAX_RECEIVE_COUNT, Mailbox, drain_queue, post_frame, queue_depth
from tests.dlq import REPO, dead_letter_by_receiving, list_dlq, run_dlq, visible
from tests.photos import packaged

PHOTOS = {"barack_obama": "face_recognition/obama2.jpg", "joe_biden": "face_recognition/biden.jpg"}


def test_request_dlq_listed_then_redriven_and_answered(local_stack: Any, reply_queue: str) -> None:
    sqs, s3 = local_stack.client("sqs"), local_stack.client("s3")
    drain_queue(sqs, local_stack.request_dlq_url)  # this test owns the request DLQ
    reply_to = reply_queue.rsplit("/", 1)[-1]
    with local_stack.trigger.paused():
        names = {}
        for name, photo in PHOTOS.items():
            request_id = str(uuid.uuid4())
            reply = post_frame(local_stack, packaged(photo).read_bytes(), request_id=request_id,
                               device_id="dlq-cam", headers={HEADER_REPLY_TO: reply_to})
            assert reply.status_code == 202, reply.text
            names[request_id] = name
        bodies = {json.loads(m["Body"])["request_id"]: json.loads(m["Body"])
                  for m in drain_queue(sqs, local_stack.request_queue_url)}
        assert set(bodies) == set(names)
        # GIVEN one detection message whose crop lives in S3 under a key not written yet (a poison
        # message until the object exists), and one good message; both dead-lettered by SQS
        poison_id, good_id = list(names)
        face = bodies[poison_id]["faces"][0]
        crop = base64.b64decode(face.pop("crop_jpeg_b64"))
        key = face["crop_s3_key"] = f"crops/{bodies[poison_id]['device_id']}/{poison_id}/0.jpg"
        for body in bodies.values():
            sqs.send_message(QueueUrl=local_stack.request_queue_url, MessageBody=json.dumps(body))
        dead_letter_by_receiving(sqs, local_stack.request_queue_url, local_stack.request_dlq_url, expected=2)

        # WHEN listed THEN each shows its request id, device, first receive, receives and why
        listed = {letter["request_id"]: letter for letter in list_dlq(local_stack, "request")}
        print("\nfacepipe dlq list --json:", *listed.values(), sep="\n  ")
        assert set(listed) == set(names)
        for letter in listed.values():
            assert letter["device_id"] == "dlq-cam" and letter["first_received"]
            assert letter["receives"] >= MAX_RECEIVE_COUNT
        assert listed[poison_id]["reason"] == f"crop object(s) missing: s3://{local_stack.bucket}/{key}"
        assert "not known from the message" in listed[good_id]["reason"]
        # AND nothing was consumed: both are still there and visible
        assert visible(sqs, local_stack.request_dlq_url) == 2
        table = run_dlq(local_stack, "list", "--queue", "request")
        assert table.returncode == 0 and "2 message(s)" in table.stdout and poison_id in table.stdout

    # WHEN the missing crop is written and the DLQ redriven
    s3.put_object(Bucket=local_stack.bucket, Key=key, Body=crop)
    moved = run_dlq(local_stack, "redrive", "--queue", "request")
    print(moved.stdout)
    assert moved.returncode == 0, moved.stderr
    assert "moved 2 message(s)" in moved.stdout and "message by message" in moved.stdout
    # THEN both are answered, with the right names, and the DLQ is empty
    mailbox = Mailbox(sqs, reply_queue)
    for request_id, name in names.items():
        assert [f["name"] for f in mailbox.wait_for(request_id, timeout=60)["faces"]] == [name]
    assert queue_depth(sqs, local_stack.request_dlq_url) == 0


def test_response_dlq_listed_then_redriven_to_the_response_queue(local_stack: Any) -> None:
    sqs = local_stack.client("sqs")
    drain_queue(sqs, local_stack.response_dlq_url)
    request_id = str(uuid.uuid4())
    reply = post_frame(local_stack, packaged(PHOTOS["joe_biden"]).read_bytes(), request_id=request_id,
                       device_id="gone-cam")
    assert reply.status_code == 202, reply.text
    mailbox = Mailbox(sqs, local_stack.response_queue_url)
    answer = mailbox.wait_for(request_id)  # read and deleted: send it back as an answer nobody deletes
    sqs.send_message(QueueUrl=local_stack.response_queue_url, MessageBody=json.dumps(answer))
    dead_letter_by_receiving(sqs, local_stack.response_queue_url, local_stack.response_dlq_url, expected=1)

    [letter] = [x for x in list_dlq(local_stack, "response") if x["request_id"] == request_id]
    assert letter["device_id"] == "gone-cam"
    assert letter["reason"].startswith("answer for device gone-cam received without being deleted")

    moved = run_dlq(local_stack, "redrive", "--queue", "response")
    assert moved.returncode == 0, moved.stderr
    assert "moved 1 message(s)" in moved.stdout
    del mailbox.received[request_id]
    assert mailbox.wait_for(request_id)["faces"][0]["name"] == "joe_biden"


def test_without_a_queue_it_says_what_to_give(local_stack: Any) -> None:
    env = {k: v for k, v in local_stack.client_env().items() if k != "FACEPIPE_REQUEST_QUEUE_URL"}
    listed = subprocess.run([sys.executable, "-m", "cloud.operator.cli", "dlq", "list"], cwd=REPO, capture_output=True,
                            text=True, timeout=60, env={**env, "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)})
    assert listed.returncode == 2 and "Traceback" not in listed.stderr
    assert "export FACEPIPE_REQUEST_QUEUE_URL" in listed.stderr


def test_redrive_onto_a_queue_whose_redrive_policy_names_another_dlq_is_refused(local_stack: Any) -> None:
    sqs = local_stack.client("sqs")
    drain_queue(sqs, local_stack.request_dlq_url)
    # GIVEN a request in the request DLQ, and two queues that do not dead-letter into it: the response
    # queue (its RedrivePolicy names the response DLQ; devices read it) and a queue with no RedrivePolicy
    body = json.dumps({"request_id": str(uuid.uuid4()), "device_id": "dlq-cam", "faces": []})
    sqs.send_message(QueueUrl=local_stack.request_dlq_url, MessageBody=body)
    plain = sqs.create_queue(QueueName=f"dlq-plain-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    try:
        for queue_args in (["--queue", "response"], ["--queue-url", plain]):
            # WHEN redriven there THEN refused in one line, exit status 1
            refused = run_dlq(local_stack, "redrive", *queue_args, "--dlq-url", local_stack.request_dlq_url)
            assert refused.returncode == 1, (refused.stdout, refused.stderr)
            assert len(refused.stderr.strip().splitlines()) == 1 and "deadLetterTargetArn" in refused.stderr
            assert "moved" not in refused.stdout
            # AND nothing moved: the message is still in the request DLQ, the plain queue is empty
            assert queue_depth(sqs, local_stack.request_dlq_url) == 1
            assert queue_depth(sqs, plain) == 0
    finally:
        sqs.delete_queue(QueueUrl=plain)
        drain_queue(sqs, local_stack.request_dlq_url)


def test_ingest_dlq_listed_then_redriven_and_answered(local_stack: Any, reply_queue: str) -> None:
    sqs = local_stack.client("sqs")
    drain_queue(sqs, local_stack.ingest_dlq_url)
    image = packaged(PHOTOS["barack_obama"]).read_bytes()
    request_id = str(uuid.uuid4())
    message = ImageEvent(request_id=request_id, device_id="ingest-cam", reply_to=reply_queue.rsplit("/", 1)[1],
                         image_b64=base64.b64encode(image).decode("ascii"))
    # GIVEN an image event dead-lettered by SQS from the ingest queue (its trigger paused meanwhile)
    with local_stack.ingest_trigger.paused():
        sqs.send_message(QueueUrl=local_stack.ingest_queue_url, MessageBody=message.model_dump_json(exclude_none=True))
        dead_letter_by_receiving(sqs, local_stack.ingest_queue_url, local_stack.ingest_dlq_url, expected=1)
        # WHEN listed (the queue from FACEPIPE_INGEST_QUEUE_URL, its DLQ from its RedrivePolicy)
        [letter] = list_dlq(local_stack, "ingest")
        assert letter["request_id"] == request_id and letter["device_id"] == "ingest-cam"
        assert letter["receives"] >= MAX_RECEIVE_COUNT
        assert visible(sqs, local_stack.ingest_dlq_url) == 1
    # WHEN redriven THEN it is back on the ingest queue and answered
    moved = run_dlq(local_stack, "redrive", "--queue", "ingest")
    assert moved.returncode == 0, moved.stderr
    assert f"moved 1 message(s) from {local_stack.ingest_dlq_url} to {local_stack.ingest_queue_url}" in moved.stdout
    assert Mailbox(sqs, reply_queue).wait_for(request_id, timeout=60)["result"] == "barack_obama"
    assert queue_depth(sqs, local_stack.ingest_dlq_url) == 0
