"""`facepipe device add|list|remove`: each camera its own IAM identity and its own response queue.

A device NAME of stack STACK signs either
- with temporary credentials (`add --temporary`, the better form): sessions of the stack's `DeviceRole`
  (template.yaml) named NAME, as IAM Roles Anywhere issues them for a device certificate; the role's policy
  lets a session invoke the detection function's `live` alias, the queue's own policy lets that one session
  read it; or
- as the IAM user `STACK-device-NAME` under the path `/facepipe/STACK/devices/`, with one access key in a
  mode-0600 credentials file and one inline policy: invoke the `live` alias through its URL, and receive,
  delete and read the attributes of its own queue, nothing else;
and has the queue `<ReplyToPrefix>NAME` (TLS only; tagged with the device and its SQS sender id), where its
answers arrive.

The detection function derives the device from the caller's ARN by that naming convention
(`device_of_arn` in cloud/functions/device_identity.py), so binding needs no lookup table: with
FACEPIPE_BIND_DEVICES on, a caller may only send
as its own device and its answers go only to its own queue (cloud/functions/detection/handler.py `bind_to_caller`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud.functions.device_identity import DEVICE_NAME, DEVICE_TAG, SENDER_TAG, device_of_arn

POLICY_NAME = "facepipe-device"
READ_ACTIONS = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
ROLE_PATH = "/facepipe/{stack}/device-role/"  # template.yaml's DeviceRole: found by its path, its name is generated
MAX_USER_NAME = 64  # IAM's limit
MAX_QUEUE_NAME = 80  # SQS's limit
# As template.yaml's ResponseQueue (answers are stale after an hour; long polls; encrypted at rest).
QUEUE_ATTRIBUTES = {"MaximumMessageSize": "262144", "MessageRetentionPeriod": "3600",
                    "ReceiveMessageWaitTimeSeconds": "20", "SqsManagedSseEnabled": "true"}


def user_prefix(stack: str) -> str:
    """IAM user names of the stack's devices start with this (FACEPIPE_DEVICE_USER_PREFIX)."""
    return f"{stack}-device-"


def user_path(stack: str) -> str:
    return f"/facepipe/{stack}/devices/"


def session_arn(role_arn: str, name: str) -> str:
    """The principal of device role `role_arn`'s session named `name` (`arn:...:sts::ACCOUNT:assumed-role/ROLE/NAME`;
    the role's path is not part of it)."""
    partition, account, resource = role_arn.split(":")[1], role_arn.split(":")[4], role_arn.split(":", 5)[5]
    return f"arn:{partition}:sts::{account}:assumed-role/{resource.rsplit('/', 1)[-1]}/{name}"


def queue_policy(queue_arn: str, session: str | None = None) -> dict[str, Any]:
    """A device queue's resource policy: TLS only, as template.yaml's queues; for a device on temporary credentials
    also its one session's right to read it (no IAM policy variable is the session name alone: `aws:userid` is
    ROLEID:NAME, so the role's own policy cannot name the queue)."""
    statements: list[dict[str, Any]] = [
        {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "sqs:*",
         "Resource": queue_arn, "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]
    if session is not None:
        statements.append({"Sid": "ReadOwnAnswers", "Effect": "Allow", "Principal": {"AWS": session},
                           "Action": READ_ACTIONS, "Resource": queue_arn})
    return {"Version": "2012-10-17", "Statement": statements}


def device_policy(alias_arn: str, queue_arn: str) -> dict[str, Any]:
    """The one inline policy of a device's user."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "UploadFrames",
                "Effect": "Allow",
                # New Function URLs need both actions; the URL serves the `live` alias and IAM matches ARNs exactly.
                "Action": ["lambda:InvokeFunctionUrl", "lambda:InvokeFunction"],
                "Resource": alias_arn,
            },
            {
                "Sid": "ReadOwnAnswers",
                "Effect": "Allow",
                "Action": READ_ACTIONS,
                "Resource": queue_arn,
            },
        ],
    }


@dataclass(frozen=True)
class Target:
    """The stack the devices belong to."""

    stack: str
    reply_to_prefix: str
    alias_arn: str  # the detection function's `live` alias
    region: str
    account: str

    def user_name(self, name: str) -> str:
        return user_prefix(self.stack) + name

    def queue_name(self, name: str) -> str:
        return self.reply_to_prefix + name

    def queue_arn(self, name: str) -> str:
        return f"arn:aws:sqs:{self.region}:{self.account}:{self.queue_name(name)}"


@dataclass(frozen=True)
class NewDevice:
    name: str
    user_arn: str
    queue_url: str
    reply_to: str
    access_key_id: str
    secret_access_key: str


@dataclass(frozen=True)
class TemporaryDevice:
    name: str
    role_arn: str
    session_arn: str
    queue_url: str
    reply_to: str


@dataclass(frozen=True)
class Device:
    name: str
    user_arn: str
    access_keys: list[str]
    queue_url: str | None  # None: the queue is gone
    temporary: bool = False  # no user: sessions of the device role (user_arn is empty)


class DeviceError(Exception):
    """A refusal the CLI prints as one line."""


def resolve_target(stack: str, *, cloudformation: Any, sts: Any, region: str) -> Target:
    """ReplyToPrefix and the detection function's name from the deployed stack. The local stack's copy in moto
    holds only the queues and bucket: there they come from FACEPIPE_REPLY_TO_PREFIX (which `facepipe local up`
    exports) and the local function name `<stack>-DetectionFunction`."""
    described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in described.get("Parameters", [])}
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    prefix = parameters.get("ReplyToPrefix", os.environ.get("FACEPIPE_REPLY_TO_PREFIX", ""))
    if not prefix:
        raise DeviceError(f"stack {stack} has no ReplyToPrefix: devices need per-device queues (redeploy with one)")
    function = outputs.get("DetectionFunctionName", f"{stack}-DetectionFunction")
    account = sts.get_caller_identity()["Account"]
    return Target(stack=stack, reply_to_prefix=prefix, region=region, account=account,
                  alias_arn=f"arn:aws:lambda:{region}:{account}:function:{function}:live")


def device_role(target: Target, iam: Any) -> dict[str, Any]:
    """The stack's DeviceRole (template.yaml: there with AWS_IAM auth and a ReplyToPrefix), by its path."""
    path = ROLE_PATH.format(stack=target.stack)
    roles = iam.list_roles(PathPrefix=path)["Roles"]
    if len(roles) != 1:
        raise DeviceError(f"stack {target.stack} has no device role (DeviceRole, path {path}): temporary "
                          "credentials need AWS_IAM auth and a ReplyToPrefix")
    return dict(roles[0])


def _checked_name(target: Target, name: str) -> None:
    if not DEVICE_NAME.fullmatch(name):
        raise DeviceError(f"device name {name!r}: 1-40 characters [A-Za-z0-9_-], starting with a letter or digit")
    user, queue = target.user_name(name), target.queue_name(name)
    if len(user) > MAX_USER_NAME or len(queue) > MAX_QUEUE_NAME:
        raise DeviceError(f"device name {name!r} is too long: IAM user {user!r} (max {MAX_USER_NAME}) or queue "
                          f"{queue!r} (max {MAX_QUEUE_NAME})")


def _create_queue(target: Target, name: str, sender: str, sqs: Any, session: str | None = None) -> str:
    policy = json.dumps(queue_policy(target.queue_arn(name), session))
    url: str = sqs.create_queue(QueueName=target.queue_name(name), Attributes={**QUEUE_ATTRIBUTES, "Policy": policy},
                                tags={DEVICE_TAG: name, SENDER_TAG: sender})["QueueUrl"]
    return url


def add_temporary_device(target: Target, name: str, *, iam: Any, sqs: Any) -> TemporaryDevice:
    """Only the queue of a device on temporary credentials: its sessions of the stack's DeviceRole, named `name`,
    invoke the URL (the role's policy) and read this queue (the queue's policy names that one session)."""
    _checked_name(target, name)
    role = device_role(target, iam)
    with contextlib.suppress(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName=target.queue_name(name))
        raise DeviceError(f"device {name!r} exists (queue {target.queue_name(name)}); `facepipe device remove` first")
    queue_url = _create_queue(target, name, f"{role['RoleId']}:{name}", sqs, session_arn(role["Arn"], name))
    return TemporaryDevice(name=name, role_arn=role["Arn"], session_arn=session_arn(role["Arn"], name),
                           queue_url=queue_url, reply_to=target.queue_name(name))


def add_device(target: Target, name: str, *, iam: Any, sqs: Any) -> NewDevice:
    """Queue, user, policy and access key of a new device."""
    _checked_name(target, name)
    user = target.user_name(name)
    try:
        created = iam.create_user(UserName=user, Path=user_path(target.stack),
                                  Tags=[{"Key": "facepipe:device", "Value": name}])["User"]
    except iam.exceptions.EntityAlreadyExistsException as exc:
        raise DeviceError(f"device {name!r} exists (IAM user {user}); `facepipe device remove {name}` first") from exc
    try:
        queue_url = _create_queue(target, name, created["UserId"], sqs)
    except BaseException:  # e.g. a queue of that name with other attributes: left alone
        _delete_user(iam, user)
        raise
    try:
        iam.put_user_policy(UserName=user, PolicyName=POLICY_NAME,
                            PolicyDocument=json.dumps(device_policy(target.alias_arn, target.queue_arn(name))))
        key = iam.create_access_key(UserName=user)["AccessKey"]
    except BaseException:
        remove_device(target, name, iam=iam, sqs=sqs)  # no half-made device left behind
        raise
    return NewDevice(name=name, user_arn=created["Arn"], queue_url=queue_url, reply_to=target.queue_name(name),
                     access_key_id=key["AccessKeyId"], secret_access_key=key["SecretAccessKey"])


def list_devices(target: Target, *, iam: Any, sqs: Any) -> list[Device]:
    devices = []
    paginator = iam.get_paginator("list_users")
    for page in paginator.paginate(PathPrefix=user_path(target.stack)):
        for user in page["Users"]:
            name = device_of_arn(user["Arn"], user_prefix(target.stack), target.account)
            if name is None:
                continue
            keys = [k["AccessKeyId"] for k in iam.list_access_keys(UserName=user["UserName"])["AccessKeyMetadata"]]
            try:
                queue_url: str | None = sqs.get_queue_url(QueueName=target.queue_name(name))["QueueUrl"]
            except sqs.exceptions.QueueDoesNotExist:
                queue_url = None
            devices.append(Device(name=name, user_arn=user["Arn"], access_keys=keys, queue_url=queue_url))
    users = {device.name for device in devices}
    for queue_url in sqs.list_queues(QueueNamePrefix=target.reply_to_prefix).get("QueueUrls", []):
        name = sqs.list_queue_tags(QueueUrl=queue_url).get("Tags", {}).get(DEVICE_TAG)
        if name is not None and name not in users and queue_url.endswith("/" + target.queue_name(name)):
            devices.append(Device(name=name, user_arn="", access_keys=[], queue_url=queue_url, temporary=True))
    return sorted(devices, key=lambda d: d.name)


def remove_device(target: Target, name: str, *, iam: Any, sqs: Any) -> None:
    """Keys first (the device is locked out at once), the queue (with any answers still on it), then policies and
    user: a run that fails half way can be repeated. A device on temporary credentials has only its queue."""
    user = target.user_name(name)
    try:
        for key in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
            iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
    except iam.exceptions.NoSuchEntityException as exc:
        try:
            queue_url = sqs.get_queue_url(QueueName=target.queue_name(name))["QueueUrl"]
        except sqs.exceptions.QueueDoesNotExist:
            raise DeviceError(f"no device {name!r} (IAM user {user}, queue {target.queue_name(name)})") from exc
        if sqs.list_queue_tags(QueueUrl=queue_url).get("Tags", {}).get(DEVICE_TAG) != name:
            raise DeviceError(f"no device {name!r}: queue {target.queue_name(name)} is not a device's") from exc
        sqs.delete_queue(QueueUrl=queue_url)
        return
    with contextlib.suppress(sqs.exceptions.QueueDoesNotExist):
        sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=target.queue_name(name))["QueueUrl"])
    _delete_user(iam, user)


def _delete_user(iam: Any, user: str) -> None:
    """Its keys, inline and attached policies, then the user itself (IAM refuses to delete a user that has any)."""
    for key in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
        iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
    for policy in iam.list_user_policies(UserName=user)["PolicyNames"]:
        iam.delete_user_policy(UserName=user, PolicyName=policy)
    for attached in iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]:
        iam.detach_user_policy(UserName=user, PolicyArn=attached["PolicyArn"])
    iam.delete_user(UserName=user)


def edge_yaml_lines(device: NewDevice | TemporaryDevice) -> list[str]:
    """What goes into the device's edge.yaml (never its credentials)."""
    return [
        f"device_id: {device.name}",
        "responses:",
        f"  queue_url: {device.queue_url}",
        f"  reply_to: {device.reply_to}",
    ]


def write_credentials(path: Path, device: NewDevice) -> None:
    """An AWS shared credentials file, created with mode 0600 (never overwritten)."""
    text = (f"[default]\naws_access_key_id = {device.access_key_id}\n"
            f"aws_secret_access_key = {device.secret_access_key}\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


# --- command line -------------------------------------------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", default=os.environ.get("FACEPIPE_STACK_NAME"),
                        help="the CloudFormation stack (default FACEPIPE_STACK_NAME, which `facepipe local up` "
                             "exports); AWS credentials, region and endpoint come from the usual AWS environment")
    parser.add_argument("--region", help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, the profile's region)")


def add_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the device id: 1-40 characters [A-Za-z0-9_-]")
    parser.add_argument("--credentials-file", type=Path,
                        help="where to write its access key (mode 0600; default ./facepipe-device-NAME.credentials)")
    parser.add_argument("--temporary", action="store_true",
                        help="no IAM user or key: the device signs with sessions of the stack's DeviceRole named NAME "
                             "(IAM Roles Anywhere, or any broker that assumes the role); only its queue is made")
    _add_common(parser)


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)


def add_remove_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    _add_common(parser)


def _target(args: argparse.Namespace) -> tuple[Target, Any, Any]:
    from cloud.functions import aws

    if not args.stack:
        raise DeviceError("which stack? --stack NAME or FACEPIPE_STACK_NAME")
    session = aws.session(args.region)
    if not session.region_name:
        raise DeviceError("which region? --region, AWS_REGION, AWS_DEFAULT_REGION or a profile's region")
    target = resolve_target(args.stack, cloudformation=session.client("cloudformation"),
                            sts=session.client("sts"), region=session.region_name)
    return target, session.client("iam"), session.client("sqs")


def _run(args: argparse.Namespace, action: Any) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        target, iam, sqs = _target(args)
        action(target, iam, sqs)
    except (DeviceError, BotoCoreError, ClientError) as exc:
        print(f"facepipe device: {exc}", file=sys.stderr)
        return 1
    return 0


def run_add_temporary(args: argparse.Namespace) -> int:
    def add(target: Target, iam: Any, sqs: Any) -> None:
        device = add_temporary_device(target, args.name, iam=iam, sqs=sqs)
        print(f"device {device.name}: temporary credentials, sessions of {device.role_arn} named {device.name} "
              f"({device.session_arn})")
        print("edge.yaml lines:")
        print("\n".join(f"  {line}" for line in edge_yaml_lines(device)))
        print("credentials: an AWS profile whose credential_process prints a session of that role named "
              f"{device.name}, e.g. IAM Roles Anywhere's\n"
              "  credential_process = aws_signing_helper credential-process --certificate device.pem --private-key "
              f"device.key\n    --trust-anchor-arn TA --profile-arn PROFILE --role-arn {device.role_arn} "
              f"--role-session-name {device.name}\n"
              "  (docs/deploy.md, \"A second camera on temporary credentials\"); or, from a broker holding other "
              f"credentials:\n  aws sts assume-role --role-arn {device.role_arn} --role-session-name {device.name}")

    return _run(args, add)


def run_add(args: argparse.Namespace) -> int:
    if args.temporary:
        return run_add_temporary(args)
    path: Path = args.credentials_file or Path(f"facepipe-device-{args.name}.credentials")
    if path.exists():
        print(f"facepipe device: {path} exists; not overwriting credentials", file=sys.stderr)
        return 1

    def add(target: Target, iam: Any, sqs: Any) -> None:
        device = add_device(target, args.name, iam=iam, sqs=sqs)
        write_credentials(path, device)
        print(f"device {device.name}: IAM user {device.user_arn}, access key {device.access_key_id}")
        print("edge.yaml lines:")
        print("\n".join(f"  {line}" for line in edge_yaml_lines(device)))
        print(f"credentials (mode 0600): {path}; never put them in edge.yaml. On the device install it as\n"
              "  /var/lib/facepipe/.aws/credentials (owner facepipe, mode 0600), or as /etc/facepipe/aws-credentials\n"
              "  (root, 0600) handed over by the unit's LoadCredential= (docs/raspberry-pi.md, section 3); then\n"
              f"  delete {path} here.")

    return _run(args, add)


def run_list(args: argparse.Namespace) -> int:
    def show(target: Target, iam: Any, sqs: Any) -> None:
        for device in list_devices(target, iam=iam, sqs=sqs):
            identity = "(temporary credentials)" if device.temporary else device.user_arn
            print(f"{device.name}\t{identity}\tkeys {','.join(device.access_keys) or '-'}\t"
                  f"queue {device.queue_url or '(missing)'}")

    return _run(args, show)


def run_remove(args: argparse.Namespace) -> int:
    def remove(target: Target, iam: Any, sqs: Any) -> None:
        remove_device(target, args.name, iam=iam, sqs=sqs)
        print(f"device {args.name} removed: its access keys, policy, IAM user and queue are gone")

    return _run(args, remove)
