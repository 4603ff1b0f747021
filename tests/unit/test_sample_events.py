"""The sample events under events/: plain Lambda events (what `sam local invoke -e` and the image's emulator
take), and events/sqs_request_batch.json, exactly as stored, answered by the recognition handler against a
real moto server, with real face crops at the S3 keys its messages point at.
(events/function_url_frame.json is fed to the detection handler in test_detection_handler.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aws_lambda_powertools.utilities.parser.models import LambdaFunctionUrlModel, SqsModel

from cloud.functions import aws
from cloud.functions.contracts import ResponseMessage
from cloud.functions.detection.detector import Detector
from cloud.functions.recognition import handler as recognition
from tests.moto_env import moto_server, point_boto3_at
from tests.sample_events import (
    EXPECTED_NAMES,
    FUNCTION_URL_EVENT,
    SQS_BATCH_EVENT,
    Backend,
    batch_requests,
    create_backend,
    load,
    stock,
)

# Top-level fields of a Function URL (payload format 2.0) event and of an SQS record, as Lambda sends them.
FUNCTION_URL_FIELDS = {"version", "routeKey", "rawPath", "rawQueryString", "cookies", "headers",
                       "queryStringParameters", "requestContext", "body", "pathParameters", "isBase64Encoded",
                       "stageVariables"}
SQS_RECORD_FIELDS = {"messageId", "receiptHandle", "body", "attributes", "messageAttributes", "md5OfBody",
                     "eventSource", "eventSourceARN", "awsRegion"}


def test_function_url_event_is_a_plain_lambda_event() -> None:
    event = load(FUNCTION_URL_EVENT)
    parsed = LambdaFunctionUrlModel.model_validate(event)  # powertools' model of a Function URL event
    assert set(event) <= FUNCTION_URL_FIELDS
    assert parsed.version == "2.0" and parsed.requestContext.http.method == "POST" and parsed.isBase64Encoded


def test_sqs_event_is_a_plain_lambda_event() -> None:
    event = load(SQS_BATCH_EVENT)
    SqsModel.model_validate(event)
    assert set(event) == {"Records"}
    assert all(set(record) == SQS_RECORD_FIELDS and record["eventSource"] == "aws:sqs" for record in event["Records"])


@pytest.fixture(scope="module")
def backend(onnx_models: Path) -> Iterator[Backend]:
    with moto_server() as endpoint, pytest.MonkeyPatch.context() as mp:
        point_boto3_at(endpoint, mp.setenv)
        created = create_backend(onnx_models)
        for name, value in created.env.items():
            mp.setenv(name, value)
        recognition.reset_caches()
        settings = recognition.get_settings()
        embedder = recognition.get_embedder(settings.weights_path, settings.threads, settings.engine,
                                            settings.models_dir)
        stock(created, Detector(), embedder)
        yield created
    recognition.reset_caches()
    aws.client.cache_clear()


def _answers(queue_url: str, expected: int) -> list[ResponseMessage]:
    sqs, answers = aws.client("sqs"), []
    deadline = time.monotonic() + 10
    while len(answers) < expected and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1).get("Messages", []):
            answers.append(ResponseMessage.model_validate_json(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return answers


def test_sqs_batch_event_as_stored_is_answered(backend: Backend) -> None:
    event = load(SQS_BATCH_EVENT)
    requests = batch_requests(event)

    result = recognition.handler(event, None)

    assert result == {"batchItemFailures": []}
    answers = {a.request_id: a for a in _answers(backend.response_queue_url, len(requests))}
    assert set(answers) == {r.request_id for r in requests}
    with_faces, without_faces = requests  # the sample: a frame with two faces, then one without
    answer = answers[with_faces.request_id]
    assert [f.name for f in answer.faces] == EXPECTED_NAMES
    assert [f.box for f in answer.faces] == [f.box for f in with_faces.faces]
    assert [f.probability for f in answer.faces] == [f.probability for f in with_faces.faces]
    settings = recognition.get_settings()
    assert answer.model == recognition.get_embedder(settings.weights_path, settings.threads, settings.engine,
                                                    settings.models_dir).model_tag
    assert answers[without_faces.request_id].faces == []
    for request in requests:
        answered = answers[request.request_id]
        assert (answered.device_id, answered.frame_timestamp) == (request.device_id, request.frame_timestamp)
        assert answered.timings.detect_ms == request.detect_ms
    # queue wait from the records' own SQS timestamps (first receive - sent), as on AWS
    waits = [int(r["attributes"]["ApproximateFirstReceiveTimestamp"]) - int(r["attributes"]["SentTimestamp"])
             for r in event["Records"]]
    assert [answers[r.request_id].timings.queue_wait_ms for r in requests] == waits
