"""Detection Lambda behind the Function URL (payload format 2.0): frame in, faces onto the request queue.

Two doors, told apart by the event's shape: a Function URL request (a raw image answered 202, or a JSON
upload answered 200: cloud/functions/detection/json_upload.py) and an SQS batch from the ingest queue (image events
and S3 notifications: cloud/functions/detection/ingest.py).

Every bad input is a 4xx JSON `ErrorBody` and queues nothing; a 5xx means our own fault (queue or
bucket unreachable, misconfiguration). The detector is built once per container: at import time in
Lambda (the init phase), lazily elsewhere so tests choose their settings first.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import time
import uuid
from dataclasses import replace
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel

from cloud.functions.contracts import (
    ANSWER_SCHEMAS,
    EVIDENCE_SCHEMA,
    HEADER_ANSWER_SCHEMA,
    HEADER_DEVICE_ID,
    HEADER_FRAME_TIMESTAMP,
    HEADER_REPLY_TO,
    HEADER_REQUEST_ID,
    JSON_DEVICE_ID,
    AnswerSchema,
    ErrorBody,
    is_valid_device_id,
    is_valid_request_id,
    reply_to_refusal,
)
from cloud.functions.detection import ingest
from cloud.functions.detection.json_upload import BadJson, is_json, parse_json_upload
from cloud.functions.detection.pipeline import Rejected, Upload, get_detector, logger, metrics, process
from cloud.functions.device_identity import device_of_arn
from cloud.functions.memory import keep_freed_memory
from cloud.functions.settings import Settings, get_settings


def request_id_of(headers: dict[str, str]) -> str | None:
    """The client's X-Request-Id, a fresh UUID when absent, None when present but malformed."""
    value = headers.get(HEADER_REQUEST_ID.lower())
    if value is None:
        return str(uuid.uuid4())
    return value if is_valid_request_id(value) else None


def parse_upload(event: dict[str, Any], headers: dict[str, str], request_id: str | None) -> Upload:
    """Method, headers and body of a payload-2.0 event; raises Rejected with a 4xx."""
    method = str(event.get("requestContext", {}).get("http", {}).get("method", "")).upper()
    if method != "POST":
        raise Rejected(405, f"method {method or '(none)'} not allowed: POST the image")
    if request_id is None:
        raise Rejected(400, f"{HEADER_REQUEST_ID} must be a canonical UUID (36 characters)")
    device_id = headers.get(HEADER_DEVICE_ID.lower())
    if device_id is None or not is_valid_device_id(device_id):
        raise Rejected(400, f"{HEADER_DEVICE_ID} is required: 1-64 characters [A-Za-z0-9_.:-]")
    return Upload(
        request_id=request_id,
        device_id=device_id,
        frame_timestamp=_frame_timestamp(headers.get(HEADER_FRAME_TIMESTAMP.lower())),
        reply_to=_reply_to(headers.get(HEADER_REPLY_TO.lower()), get_settings().reply_to_prefix),
        body=_body(event),
        answer_schema=_answer_schema(headers.get(HEADER_ANSWER_SCHEMA.lower()), get_settings().evidence_answers),
    )


def parse_json_headers(event: dict[str, Any], headers: dict[str, str]) -> Upload:
    """A JSON upload's headers: device id from X-Device-Id or JSON_DEVICE_ID; request id and image come with
    `with_json_body`, once the caller is known to be allowed."""
    method = str(event.get("requestContext", {}).get("http", {}).get("method", "")).upper()
    if method != "POST":
        raise Rejected(405, f"method {method or '(none)'} not allowed: POST the image")
    device_id = headers.get(HEADER_DEVICE_ID.lower(), JSON_DEVICE_ID)
    if not is_valid_device_id(device_id):
        raise Rejected(400, f"{HEADER_DEVICE_ID} must be 1-64 characters [A-Za-z0-9_.:-]")
    return Upload(
        request_id="",
        device_id=device_id,
        frame_timestamp=_frame_timestamp(headers.get(HEADER_FRAME_TIMESTAMP.lower())),
        reply_to=_reply_to(headers.get(HEADER_REPLY_TO.lower()), get_settings().reply_to_prefix),
        body=b"",
    )


def with_json_body(upload: Upload, event: dict[str, Any]) -> Upload:
    """`upload` with the request id, filename and image of its JSON body."""
    try:
        frame = parse_json_upload(_body(event).decode("utf-8", errors="replace"))
    except BadJson as exc:
        raise Rejected(400, str(exc)) from exc
    return replace(upload, request_id=frame.request_id, body=frame.image, filename=frame.filename)


def bind_to_caller(upload: Upload, event: dict[str, Any], settings: Settings) -> Upload:
    """With FACEPIPE_BIND_DEVICES, the caller (the URL's IAM identity: a device's IAM user, or a session of the device
    role named after the device) is a device: it sends only as itself, and
    its answers go to its own queue, whatever X-Reply-To says (a different one is refused)."""
    if not settings.bind_devices:
        return upload
    iam = ((event.get("requestContext") or {}).get("authorizer") or {}).get("iam") or {}
    device = device_of_arn(str(iam.get("userArn") or ""), settings.device_user_prefix, settings.device_account,
                           settings.device_role_name)
    if device is None:
        raise Rejected(403, "the caller is not a device of this stack (`facepipe device add NAME` makes one)")
    if not any(str(name).lower() == HEADER_DEVICE_ID.lower() for name in event.get("headers") or {}):
        upload = replace(upload, device_id=device)  # a JSON upload names no device: it is the caller's
    if upload.device_id != device:
        raise Rejected(403, f"{HEADER_DEVICE_ID} {upload.device_id!r} is not the caller's device {device!r}")
    own_queue = settings.reply_to_prefix + device
    if upload.reply_to not in (None, own_queue):
        raise Rejected(403, f"{HEADER_REPLY_TO} {upload.reply_to!r} is not the queue of device {device!r} "
                            f"({own_queue!r})")
    return replace(upload, reply_to=own_queue)


def _frame_timestamp(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        stamp = float(value) if len(value) <= 32 else math.nan
    except ValueError:
        stamp = math.nan
    if not math.isfinite(stamp) or stamp < 0:
        raise Rejected(400, f"{HEADER_FRAME_TIMESTAMP} must be epoch seconds (a non-negative number)")
    return stamp


def _answer_schema(value: str | None, evidence_answers: bool) -> AnswerSchema:
    """X-Answer-Schema, 1 when absent; a schema no deployment answers is a 400. Without evidence_answers (a public
    URL) schema 2 is answered as schema 1, which every reader of schema 2 reads too."""
    if value is None:
        return 1
    for schema in ANSWER_SCHEMAS:
        if value.strip() == str(schema):
            return schema if evidence_answers or schema < EVIDENCE_SCHEMA else 1
    raise Rejected(400, f"{HEADER_ANSWER_SCHEMA} must be one of {', '.join(map(str, ANSWER_SCHEMAS))}")


def _reply_to(value: str | None, prefix: str) -> str | None:
    """Checked here, so a queue the recognizer would refuse is a 400 now, not a 202 and then DLQ retries."""
    refusal = None if value is None else reply_to_refusal(value, prefix)
    if refusal:
        raise Rejected(400, f"{HEADER_REPLY_TO}: {refusal}")
    return value


def _body(event: dict[str, Any]) -> bytes:
    body = event.get("body") or ""
    if not event.get("isBase64Encoded"):
        return body.encode("utf-8")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Rejected(400, "body is marked base64 but is not valid base64") from exc


def _response(status: int, body: BaseModel, request_id: str | None) -> dict[str, Any]:
    headers = {"content-type": "application/json"}
    if status == 405:
        headers["allow"] = "POST"
    if request_id is not None:
        headers[HEADER_REQUEST_ID.lower()] = request_id
    return {"statusCode": status, "headers": headers, "body": body.model_dump_json(), "isBase64Encoded": False}


@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    cpu_started = time.process_time()
    try:
        return _handle(event, context)
    finally:
        # The invocation's CPU time: beside DetectCpuMs, what the rest of the work costs (decode, queueing, logs);
        # against the billed duration, how much of it was waiting (on SQS, or on a vCPU share below one).
        metrics.add_metric(name="HandlerCpuMs", unit=MetricUnit.Milliseconds,
                           value=(time.process_time() - cpu_started) * 1000)


def _handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    logger.clear_state()
    if context is not None:
        logger.append_keys(aws_request_id=getattr(context, "aws_request_id", None))
    if "Records" in event:  # the ingest queue's SQS event source mapping
        return ingest.handle_batch(event, context)
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    json_upload = is_json(headers.get("content-type"))
    # A JSON upload's request id is in its body: known once parsed.
    request_id = None if json_upload else request_id_of(headers)
    logger.set_correlation_id(request_id)
    try:
        if json_upload:  # the caller is checked before its body is parsed
            upload = with_json_body(bind_to_caller(parse_json_headers(event, headers), event, get_settings()), event)
        else:
            upload = bind_to_caller(parse_upload(event, headers, request_id), event, get_settings())
        request_id = upload.request_id
        logger.set_correlation_id(request_id)
        accepted = process(upload)
    except Rejected as exc:
        status, message = exc.status, str(exc)
    except Exception:  # our fault, never the client's input: answer JSON, keep the details in the log
        logger.exception("detection failed")
        status, message = 500, "internal error"
    else:
        # The course workload client counts anything but 200 as a failure; raw uploads keep 202.
        return _response(200 if json_upload else 202, accepted, request_id)
    metrics.add_dimension(name="status", value=str(status))
    metrics.add_metric(name="Rejected" if status < 500 else "Failed", unit=MetricUnit.Count, value=1)
    logger.warning("frame refused", extra={"status": status, "error": message})
    return _response(status, ErrorBody(error=message, request_id=request_id), request_id)


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    get_detector()  # load the model during Lambda's init phase, not in the first request
    # Then keep freed memory for the next request (cloud/functions/memory.py). After the load, not before: with freed
    # memory
    # kept, the load's own discarded copies of the weights would all stay resident at once (recognition's peak
    # 351 MB instead of 325 MB).
    keep_freed_memory()
