"""Which device a caller is: the naming convention `facepipe device add` creates identities by
(cloud/operator/devices.py), read back by the detection function from a caller's ARN and a queue's tags."""

from __future__ import annotations

import re

DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")  # a valid X-Device-Id, IAM user and queue name part
# Tags of a device's queue: whose it is, and the SQS SenderId of that device (an IAM user's unique id AIDA..., a
# device role session's ROLEID:NAME), which the ingest door compares with a message's sender.
DEVICE_TAG, SENDER_TAG = "facepipe:device", "facepipe:sender"


def device_of_arn(arn: str, prefix: str, account: str, role_name: str = "") -> str | None:
    """The device a caller ARN of `account` is, or None: an IAM user `arn:PARTITION:iam::ACCOUNT:user/[PATH/]PREFIXNAME`
    (user names are unique in an account whatever their path, so the name alone decides), or, with `role_name`, a
    session of the device role `arn:PARTITION:sts::ACCOUNT:assumed-role/ROLE/NAME` (its session name is the device)."""
    parts = arn.split(":", 5)
    if not prefix or len(parts) != 6 or parts[0] != "arn" or not account or parts[4] != account:
        return None
    if parts[2] == "iam" and parts[5].startswith("user/"):
        user = parts[5].rsplit("/", 1)[-1]
        name = user[len(prefix):] if user.startswith(prefix) else ""
    elif role_name and parts[2] == "sts" and parts[5].startswith(f"assumed-role/{role_name}/"):
        name = parts[5].removeprefix(f"assumed-role/{role_name}/")
    else:
        return None
    return name if DEVICE_NAME.fullmatch(name) else None
