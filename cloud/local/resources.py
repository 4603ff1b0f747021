"""The stack's queues and bucket, created the way template.yaml declares them on AWS."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cloud.contracts import MAX_QUEUE_MESSAGE_BYTES

DLQ_RETENTION_SECONDS = 14 * 24 * 3600  # the maximum: a dead letter should outlive its investigation
VISIBILITY_PER_TIMEOUT = 6  # AWS: source queue visibility >= 6x the function timeout


@dataclass(frozen=True)
class Resources:
    request_queue_url: str
    request_queue_arn: str
    request_dlq_url: str
    response_queue_url: str
    response_queue_arn: str
    response_dlq_url: str
    bucket: str


def _queue_arn(sqs: Any, url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def _queue_with_dlq(sqs: Any, name: str, visibility_timeout: int, max_receive_count: int) -> tuple[str, str, str]:
    """Create `name` and `name-dlq` (redrive after `max_receive_count` receives); no queue policy,
    so only the account's own principals can use them."""
    dlq_url = sqs.create_queue(
        QueueName=f"{name}-dlq",
        Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS),
                    "MaximumMessageSize": str(MAX_QUEUE_MESSAGE_BYTES)},
    )["QueueUrl"]
    redrive = {"deadLetterTargetArn": _queue_arn(sqs, dlq_url), "maxReceiveCount": str(max_receive_count)}
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "MaximumMessageSize": str(MAX_QUEUE_MESSAGE_BYTES),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    return url, _queue_arn(sqs, url), dlq_url


def create_resources(
    sqs: Any,
    s3: Any,
    *,
    prefix: str,
    region: str,
    handler_timeout: int,
    max_receive_count: int = 3,
) -> Resources:
    """Request and response queues with their DLQs, and a versioned private bucket (gallery, crops, results).

    The request queue feeds the recognition function, so its visibility timeout is 6x the handler
    timeout; the response queue is read by edge clients and gets the same value.
    """
    visibility = VISIBILITY_PER_TIMEOUT * handler_timeout
    request_url, request_arn, request_dlq = _queue_with_dlq(sqs, f"{prefix}requests", visibility, max_receive_count)
    response_url, response_arn, response_dlq = _queue_with_dlq(
        sqs, f"{prefix}responses", visibility, max_receive_count
    )

    bucket = f"{prefix}data"
    if region == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={"BlockPublicAcls": True, "IgnorePublicAcls": True,
                                        "BlockPublicPolicy": True, "RestrictPublicBuckets": True},
    )
    return Resources(request_url, request_arn, request_dlq, response_url, response_arn, response_dlq, bucket)
