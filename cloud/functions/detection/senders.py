"""The ingest door's binding, where devices are identities (FACEPIPE_BIND_DEVICES): an image event names its own
device id and reply queue, so an event that names a device (its id, or its queue `<ReplyToPrefix>NAME`) must come
from that device. A device's queue says whose it is: its `facepipe:sender` tag (cloud/operator/devices.py) holds the SQS
SenderId of the device (an IAM user's unique id, a device role session's ROLEID:NAME), compared with the message's
SenderId, or, for an object put under uploads/, with the principal S3's notification names. Names that are no
device's (an admin's `facepipe submit` queue, the shared response queue) stay free.
"""

from __future__ import annotations

from typing import Any

from cloud.functions import aws
from cloud.functions.device_identity import DEVICE_NAME, DEVICE_TAG, SENDER_TAG
from cloud.functions.settings import Settings


class NotTheSender(ValueError):
    """An image event naming a device that did not send it; it ends in the ingest DLQ."""


def s3_principal(record: dict[str, Any]) -> str | None:
    """Who put the object of an S3 notification record: its userIdentity.principalId without the `AWS:` prefix."""
    principal = (record.get("userIdentity") or {}).get("principalId")
    return str(principal).removeprefix("AWS:") if principal else None


def owner_of(queue_name: str) -> str | None:
    """The SenderId of the device whose queue this is; None when the queue is no device's (or does not exist)."""
    sqs = aws.client("sqs")
    try:
        url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        return None
    tags = sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
    return str(tags[SENDER_TAG]) if DEVICE_TAG in tags and SENDER_TAG in tags else None


def check_sender(device_id: str, reply_to: str | None, sender: str | None, settings: Settings) -> None:
    """Raise NotTheSender unless every device the event names (by id or by queue) is its sender."""
    if not settings.bind_devices:
        return
    named = {reply_to} if reply_to else set()
    if DEVICE_NAME.fullmatch(device_id):
        named.add(settings.reply_to_prefix + device_id)
    for queue in sorted(named):
        owner = owner_of(queue)
        if owner is not None and owner != sender:
            raise NotTheSender(f"queue {queue!r} is a device's, and that device did not send this event "
                               f"(sender {sender or 'unknown'!r})")
