"""`facepipe submit`'s pieces offline: inputs (photos, folders, a real video's frames), the answer collector on a
shared response queue (a real moto server), the report's figures and its JSONL/CSV lines."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cloud.functions import aws
from cloud.operator.submit import (
    Collector,
    Input,
    Report,
    Sent,
    SubmitError,
    Target,
    _percentile,
    _row,
    collect_inputs,
    target_from_stack,
    write_rows,
)
from tests.moto_env import moto_server, point_boto3_at
from tests.photos import SHARED, packaged, requires_shared


def test_a_folder_gives_its_photos_sorted_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "b" / "deeper").mkdir(parents=True)
    (tmp_path / "b" / "deeper" / "obama2.jpg").symlink_to(packaged("face_recognition/obama2.jpg"))
    (tmp_path / "a.png").symlink_to(packaged("skimage/astronaut.png"))
    (tmp_path / "notes.txt").write_text("not a photo")
    inputs = collect_inputs([tmp_path], every=30)
    assert [Path(i.label).relative_to(tmp_path).as_posix() for i in inputs] == ["a.png", "b/deeper/obama2.jpg"]
    assert inputs[1].read() == packaged("face_recognition/obama2.jpg").read_bytes()
    with pytest.raises(SubmitError, match="no such file"):
        collect_inputs([tmp_path / "missing"], every=30)
    with pytest.raises(SubmitError, match="not a JPEG, PNG or video"):
        collect_inputs([tmp_path / "notes.txt"], every=30)


@requires_shared
def test_a_video_gives_every_nth_frame_as_jpeg() -> None:
    video = SHARED / "video" / "short_hamilton_clip.mp4"
    inputs = collect_inputs([video], every=100)
    assert [i.label for i in inputs] == [f"{video}#{n}" for n in (0, 100, 200)]  # 300 frames
    with Image.open(io.BytesIO(inputs[1].read())) as frame:
        assert (frame.format, frame.size) == ("JPEG", (640, 360))


def test_percentile_is_numpys_default() -> None:
    values = sorted(np.random.default_rng(7).uniform(0, 1000, 37).tolist())
    for q in (0, 50, 95, 100):
        assert _percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def _answer(request_id: str, names: list[str]) -> dict[str, object]:
    return {"request_id": request_id, "result": ",".join(names),
            "faces": [{"name": n, "distance": 0.5, "box": [i, 0, i + 1, 1], "probability": 1.0}
                      for i, n in enumerate(names)]}


def test_report_lines_and_summary(tmp_path: Path) -> None:
    inputs = [Sent(Input(f"p{i}.jpg", f"p{i}.jpg", bytes), request_id=f"r{i}", sent_at=10.0) for i in range(4)]
    inputs[0].answer, inputs[0].answered_at = _answer("r0", ["alice", "bob"]), 10.5
    inputs[1].answer, inputs[1].answered_at = _answer("r1", []), 11.0
    inputs[2].error = "SubmitError: HTTP 415"
    report = Report([_row(s, "url") for s in inputs], wall_s=2.0)
    summary = report.summary()
    assert {k: summary[k] for k in ("sent", "answered", "unanswered", "refused", "faces", "names")} == {
        "sent": 3, "answered": 2, "unanswered": 1, "refused": 1, "faces": 2, "names": {"alice": 1, "bob": 1}}
    assert summary["latency_ms"] == {"mean": 750.0, "p50": 750.0, "p95": 975.0}
    assert summary["answers_per_s"] == 1.0
    write_rows(tmp_path / "a.jsonl", report.rows)
    lines = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [(r["path"], r["status"], r["result"]) for r in lines] == [
        ("p0.jpg", "answered", "alice,bob"), ("p1.jpg", "answered", ""), ("p2.jpg", "refused", None),
        ("p3.jpg", "unanswered", None)]
    write_rows(tmp_path / "a.csv", report.rows)
    with (tmp_path / "a.csv").open(newline="") as fh:
        first = next(csv.DictReader(fh))
    assert (first["faces"], first["names"], first["distances"], first["latency_ms"]) == ("2", "alice;bob",
                                                                                      "0.5;0.5", "500.0")


def test_collector_on_a_shared_queue_takes_its_own_answers_once_and_leaves_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with moto_server() as endpoint:
        point_boto3_at(endpoint, monkeypatch.setenv)
        sqs = aws.client("sqs")
        queue = sqs.create_queue(QueueName=f"responses-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        ours = Sent(Input("p.jpg", "p.jpg", bytes), request_id=str(uuid.uuid4()))
        other = str(uuid.uuid4())
        for body in (_answer(other, ["carol"]), _answer(ours.request_id, ["alice"]),
                     _answer(ours.request_id, ["alice"])):  # the last: a redelivered duplicate
            sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(body))
        answered = []
        collector = Collector(sqs, queue, own_queue=False, on_answer=lambda: answered.append(1))
        collector.expect(ours)
        collector.start()
        deadline = time.monotonic() + 20
        while (ours.answer is None or collector.duplicates < 1) and time.monotonic() < deadline:
            time.sleep(0.1)
        collector.stop()
        assert ours.answer is not None and ours.answer["result"] == "alice"
        assert (len(answered), collector.duplicates) == (1, 1)
        # Another client's answer is still there for it, visible now.
        [left] = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
        assert json.loads(left["Body"])["request_id"] == other


def test_a_deployed_stacks_endpoints_come_from_its_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stack in moto's CloudFormation with template.yaml's output names (values stand in for the real ones).
    outputs = {"FunctionUrl": "https://abc.lambda-url.us-east-1.on.aws/", "FunctionUrlAuthType": "AWS_IAM",
               "ResponseQueueUrl": "https://sqs.us-east-1.amazonaws.com/1/r", "BucketName": "facepipe-bucket",
               "IngestQueueUrl": "https://sqs.us-east-1.amazonaws.com/1/i"}
    template = {"Parameters": {"ReplyToPrefix": {"Type": "String", "Default": ""}},
                "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
                "Outputs": {name: {"Value": value} for name, value in outputs.items()}}
    with moto_server() as endpoint:
        point_boto3_at(endpoint, monkeypatch.setenv)
        cloudformation = aws.client("cloudformation")
        cloudformation.create_stack(StackName="deployed", TemplateBody=json.dumps(template),
                                    Parameters=[{"ParameterKey": "ReplyToPrefix", "ParameterValue": "answers-"}])
        target = target_from_stack(cloudformation, "deployed")
    assert target == Target(function_url=outputs["FunctionUrl"], auth="aws_iam",
                            response_queue_url=outputs["ResponseQueueUrl"], ingest_queue_url=outputs["IngestQueueUrl"],
                            bucket="facepipe-bucket", reply_to_prefix="answers-")
