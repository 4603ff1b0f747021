"""`facepipe dlq list|redrive`: what sits in a dead-letter queue, and moving it back to its queue.

`list` receives the DLQ's messages with a short visibility timeout, describes them, then makes them
visible again (`ChangeMessageVisibility` 0): nothing is consumed. Why a message failed is not stored
by SQS; `list` tells what it can from the message itself (a body the contract refuses, a request whose
crop object is missing from the bucket, a reply_to the recognizer refuses) and otherwise says so.

`redrive` starts an SQS message move task (`StartMessageMoveTask`) and waits for it. An endpoint without
move tasks (moto, which the local stack runs on, answers them with HTTP 500 "not implemented") gets a
receive-send-delete move instead, which keeps each message's body and attributes.

Queues: `--queue-url`/`--dlq-url`, else a deployed stack's outputs (`--stack`), else the environment
`facepipe local up` exports (FACEPIPE_REQUEST_QUEUE_URL / FACEPIPE_RESPONSE_QUEUE_URL /
FACEPIPE_INGEST_QUEUE_URL); the DLQ of a queue is read from its RedrivePolicy when not given. `redrive`
refuses a destination whose RedrivePolicy does not name the DLQ (SQS itself would move a request DLQ onto
the response queue devices read).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from cloud.functions import aws
from cloud.functions.contracts import (
    ImageEvent,
    RequestMessage,
    ResponseMessage,
    is_valid_device_id,
    is_valid_request_id,
)

PEEK_VISIBILITY_S = 30  # a `list` cut short leaves the messages hidden this long, no longer
MOVE_VISIBILITY_S = 60  # a fallback move cut short: the message reappears in the DLQ after this
MOVE_TASK_DONE = {"COMPLETED", "CANCELLED", "FAILED"}
# Error codes (or HTTP statuses) meaning "this endpoint has no message move tasks": fall back.
_UNSUPPORTED = {"UnsupportedOperation", "InvalidAction", "NotImplemented", "UnknownOperationException", "500", "501"}


@dataclass(frozen=True)
class QueueKind:
    env: str  # what `facepipe local up` exports
    output: str  # template.yaml's output for the queue
    dlq_output: str


KINDS = {
    "request": QueueKind("FACEPIPE_REQUEST_QUEUE_URL", "RequestQueueUrl", "RequestDeadLetterQueueUrl"),
    "response": QueueKind("FACEPIPE_RESPONSE_QUEUE_URL", "ResponseQueueUrl", "ResponseDeadLetterQueueUrl"),
    "ingest": QueueKind("FACEPIPE_INGEST_QUEUE_URL", "IngestQueueUrl", "IngestDeadLetterQueueUrl"),
}


@dataclass(frozen=True)
class Queues:
    kind: str
    source: str  # the queue messages are redriven to
    dlq: str
    bucket: str  # where request crops live ("" = unknown: missing crops are not checked)


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    request_id: str | None
    device_id: str | None
    first_received: str | None  # ISO 8601 UTC of the first receive (on the source queue)
    receives: int  # ApproximateReceiveCount before this listing's own receive
    reason: str


class DlqError(RuntimeError):
    """A configuration problem the user can fix (no queue given, no redrive policy, ...)."""


class RedriveRefused(DlqError):
    """The destination does not dead-letter into this DLQ: its messages did not come from there."""


# --- clients and queue discovery -------------------------------------------------------------------


def _client(service: str, region: str | None, retries: bool = True) -> Any:
    from botocore.config import Config

    attempts = 5 if retries else 1
    return aws.session(region).client(service, config=Config(retries={"total_max_attempts": attempts}))


def _stack_outputs(stack: str, region: str | None) -> dict[str, str]:
    described = _client("cloudformation", region).describe_stacks(StackName=stack)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}


def dead_letter_target(sqs: Any, queue_url: str) -> str | None:
    """The deadLetterTargetArn of the queue's RedrivePolicy, None without one."""
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"]).get("Attributes", {})
    if "RedrivePolicy" not in attributes:
        return None
    return str(json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"])


def dlq_of(sqs: Any, queue_url: str) -> str:
    """The URL of the DLQ named in the queue's RedrivePolicy."""
    arn = dead_letter_target(sqs, queue_url)
    if arn is None:
        raise DlqError(f"{queue_url} has no RedrivePolicy: give --dlq-url")
    account, name = arn.split(":")[4:6]
    return str(sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])


def queue_arn(sqs: Any, queue_url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def resolve(args: argparse.Namespace, sqs: Any) -> Queues:
    kind = KINDS[args.queue]
    outputs = _stack_outputs(args.stack, args.region) if args.stack else {}
    source = args.queue_url or outputs.get(kind.output) or os.environ.get(kind.env, "")
    if not source:
        raise DlqError(f"no {args.queue} queue: give --queue-url or --stack, or export {kind.env} "
                       "(facepipe local up prints it)")
    dlq = args.dlq_url or outputs.get(kind.dlq_output) or dlq_of(sqs, source)
    bucket = outputs.get("BucketName") or os.environ.get("FACEPIPE_BUCKET", "")
    return Queues(args.queue, source, dlq, bucket)


# --- list ------------------------------------------------------------------------------------------


def peek(sqs: Any, dlq_url: str, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` messages of the DLQ, each once; all of them visible again afterwards."""
    seen: dict[str, dict[str, Any]] = {}
    try:
        while len(seen) < limit:
            batch = sqs.receive_message(
                QueueUrl=dlq_url, MaxNumberOfMessages=min(10, limit - len(seen)), WaitTimeSeconds=1,
                VisibilityTimeout=PEEK_VISIBILITY_S, AttributeNames=["All"], MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not batch:
                break
            for message in batch:
                seen.setdefault(message["MessageId"], message)
    finally:
        _make_visible(sqs, dlq_url, list(seen.values()))
    return list(seen.values())


def _make_visible(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
    for start in range(0, len(messages), 10):
        sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(messages[start : start + 10])])


def describe(message: dict[str, Any], queues: Queues, s3: Any) -> DeadLetter:
    attributes = message.get("Attributes", {})
    try:
        body = json.loads(message["Body"])
    except ValueError:
        body = None
    fields = body if isinstance(body, dict) else {}
    first = attributes.get("ApproximateFirstReceiveTimestamp")
    return DeadLetter(
        message_id=message["MessageId"],
        request_id=_text(fields.get("request_id")),
        device_id=_text(fields.get("device_id")),
        first_received=datetime.fromtimestamp(int(first) / 1000, UTC).isoformat(timespec="seconds") if first else None,
        receives=max(0, int(attributes.get("ApproximateReceiveCount", 1)) - 1),
        reason=diagnose(message, body, queues, s3),
    )


def _text(value: Any) -> str | None:
    return str(value)[:80] if value is not None else None


def diagnose(message: dict[str, Any], body: Any, queues: Queues, s3: Any) -> str:
    """Why the message most likely failed, from what it carries; the recognizer's log has the rest."""
    for name in ("FailureReason", "ErrorMessage"):  # set by a producer that knows (none of ours today)
        if name in message.get("MessageAttributes", {}):
            return str(message["MessageAttributes"][name].get("StringValue", ""))
    if body is None:
        return "body is not JSON"
    if queues.kind == "response":
        try:
            answer = ResponseMessage.model_validate(body)
        except ValidationError as exc:
            return f"not a response message: {_errors(exc)}"
        return (f"answer for device {answer.device_id} received without being deleted until maxReceiveCount: "
                "no daemon of that device reads this queue, or it was gone for longer than the retention")
    if queues.kind == "ingest":
        return _diagnose_ingest(body, s3)
    try:
        request = RequestMessage.model_validate(body)
    except ValidationError as exc:
        return f"not a request message: {_errors(exc)}"
    if not is_valid_request_id(request.request_id):
        return f"request_id {request.request_id[:40]!r} is not a canonical UUID"
    if not is_valid_device_id(request.device_id):
        return f"device_id {request.device_id[:40]!r} is not valid"
    prefix = os.environ.get("FACEPIPE_REPLY_TO_PREFIX", "")  # the recognizer's setting, when known here
    if request.reply_to is not None and prefix and not request.reply_to.startswith(prefix):
        return f"reply_to {request.reply_to!r} refused (the recognizer accepts only names starting with {prefix!r})"
    missing = [face.crop_s3_key for face in request.faces if face.crop_s3_key and queues.bucket
               and not _exists(s3, queues.bucket, face.crop_s3_key)]
    if missing:
        return "crop object(s) missing: " + ", ".join(f"s3://{queues.bucket}/{key}" for key in missing)
    return "not known from the message (a valid request): see the recognition log for its message id"


def _diagnose_ingest(body: Any, s3: Any) -> str:
    if isinstance(body, dict) and "Records" in body:
        return "an S3 notification: see the detection log for its message id"
    try:
        event = ImageEvent.model_validate(body)
    except ValidationError as exc:
        return f"not an image event: {_errors(exc)}"
    ref = event.image_s3
    if ref is not None and not _exists(s3, ref.bucket, ref.key):
        return f"image object missing: s3://{ref.bucket}/{ref.key}"
    return "not known from the message (a valid image event): see the detection log for its message id"


def _errors(exc: ValidationError) -> str:
    """Every field the contract refuses, 'field: why; ...' (at most 300 characters)."""
    text = "; ".join(f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
                     for error in exc.errors())
    return text if len(text) <= 300 else text[:297] + "..."


def _exists(s3: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return False
        raise
    return True


# --- redrive ---------------------------------------------------------------------------------------


def redrive(sqs: Any, queues: Queues, wait_s: float) -> tuple[int, str]:
    """Move the DLQ's messages back to the source queue; (messages moved, how)."""
    from botocore.exceptions import ClientError

    dlq_arn = queue_arn(sqs, queues.dlq)
    target = dead_letter_target(sqs, queues.source)
    if target != dlq_arn:
        raise RedriveRefused(f"refused: {queues.source} has deadLetterTargetArn {target or '(no RedrivePolicy)'}, "
                             f"not {dlq_arn}: a DLQ is redriven only to the queue it takes dead letters from")
    try:
        task = _client("sqs", sqs.meta.region_name, retries=False).start_message_move_task(
            SourceArn=dlq_arn, DestinationArn=queue_arn(sqs, queues.source))
    except ClientError as exc:
        error = exc.response.get("Error", {})
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if error.get("Code") not in _UNSUPPORTED and status not in _UNSUPPORTED:
            raise
        return move_one_by_one(sqs, queues.dlq, queues.source), (
            f"message by message: the endpoint has no StartMessageMoveTask, error {error.get('Code') or status}")
    return _await_move_task(sqs, dlq_arn, task["TaskHandle"], wait_s), "StartMessageMoveTask"


def _await_move_task(sqs: Any, dlq_arn: str, handle: str, wait_s: float) -> int:
    deadline = time.monotonic() + wait_s
    while True:
        tasks = sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=10)["Results"]
        task = next((t for t in tasks if t.get("TaskHandle") == handle), tasks[0] if tasks else {})
        moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
        if task.get("Status") in MOVE_TASK_DONE:
            if task["Status"] != "COMPLETED":
                raise DlqError(f"move task {task['Status']}: {task.get('FailureReason', '')} ({moved} moved)")
            return moved
        if time.monotonic() > deadline:
            raise DlqError(f"move task still running after {wait_s:.0f} s ({moved} moved so far); "
                           "it goes on in SQS")
        time.sleep(2)


def move_one_by_one(sqs: Any, dlq_url: str, source_url: str) -> int:
    """Receive, send to the source (same body and message attributes), delete; returns the count.
    A crash between send and delete leaves a copy in both queues: clients deduplicate by request_id."""
    moved = 0
    while True:
        batch = sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=MOVE_VISIBILITY_S,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            return moved
        sent = sqs.send_message_batch(QueueUrl=source_url, Entries=[
            {"Id": str(i), "MessageBody": m["Body"], "MessageAttributes": _attributes(m)} for i, m in enumerate(batch)])
        ok = {entry["Id"] for entry in sent.get("Successful", [])}
        for failure in sent.get("Failed", []):
            print(f"not moved: {batch[int(failure['Id'])]['MessageId']}: {failure.get('Message', failure['Code'])}",
                  file=sys.stderr)
        done = [m for i, m in enumerate(batch) if str(i) in ok]
        if done:
            sqs.delete_message_batch(QueueUrl=dlq_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])
        moved += len(done)
        if len(done) < len(batch):  # the rest stays in the DLQ (visible again after MOVE_VISIBILITY_S)
            return moved


def _attributes(message: dict[str, Any]) -> dict[str, Any]:
    """Message attributes as SendMessage takes them (ReceiveMessage adds empty list fields)."""
    keep = ("DataType", "StringValue", "BinaryValue")
    return {name: {k: v for k, v in value.items() if k in keep}
            for name, value in message.get("MessageAttributes", {}).items()}


# --- CLI -------------------------------------------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", choices=sorted(KINDS), default="request",
                        help="which queue's DLQ (default %(default)s)")
    parser.add_argument("--stack", help="a deployed stack's name: queues and bucket from its outputs")
    parser.add_argument("--queue-url", help="the source queue's URL (default from --stack or the environment)")
    parser.add_argument("--dlq-url", help="the DLQ's URL (default: the source queue's RedrivePolicy)")
    aws.add_region_argument(parser)


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument("--max", type=int, default=100, help="list at most this many (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="one JSON object per message")


def add_redrive_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument("--wait", type=float, default=300,
                        help="seconds to wait for an SQS move task to finish (default %(default)s)")


def _fail(exc: Exception) -> int:
    print(f"facepipe dlq: {exc}", file=sys.stderr)
    return 1 if isinstance(exc, RedriveRefused) else 2


def run_list(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    sqs = _client("sqs", args.region)
    try:
        queues = resolve(args, sqs)
        s3 = _client("s3", args.region)
        letters = [describe(m, queues, s3) for m in peek(sqs, queues.dlq, args.max)]
    except (DlqError, BotoCoreError, ClientError) as exc:
        return _fail(exc)
    if args.json:
        for letter in letters:
            print(json.dumps(asdict(letter)))
        return 0
    print(f"{queues.kind} DLQ {queues.dlq}: {len(letters)} message(s)")
    for letter in letters:
        print(f"{letter.message_id}  request {letter.request_id or '-'}  device {letter.device_id or '-'}  "
              f"first received {letter.first_received or '-'}  receives {letter.receives}\n    {letter.reason}")
    return 0


def run_redrive(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    sqs = _client("sqs", args.region)
    try:
        queues = resolve(args, sqs)
        moved, how = redrive(sqs, queues, args.wait)
    except (DlqError, BotoCoreError, ClientError) as exc:
        return _fail(exc)
    print(f"moved {moved} message(s) from {queues.dlq} to {queues.source}; {how}")
    return 0
