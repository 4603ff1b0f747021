"""The device naming convention (IAM user ARN -> device id), the device policy, the setting's guard, and
add/list/remove against a moto server's IAM and SQS over HTTP."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from cloud.functions import aws
from cloud.functions.settings import Settings
from cloud.operator.devices import (
    DEVICE_TAG,
    ROLE_PATH,
    SENDER_TAG,
    DeviceError,
    Target,
    add_device,
    add_temporary_device,
    device_of_arn,
    device_policy,
    list_devices,
    remove_device,
    user_prefix,
)
from tests.moto_env import point_boto3_at

PREFIX = user_prefix("facepipe")
ACCOUNT, ROLE = "123456789012", "facepipe-DeviceRole-X1"


@pytest.mark.parametrize(("arn", "device"), [
    ("arn:aws:iam::123456789012:user/facepipe/facepipe/devices/facepipe-device-cam-1", "cam-1"),
    ("arn:aws:iam::123456789012:user/facepipe-device-cam_2", "cam_2"),  # the name decides, not the path
    ("arn:aws-cn:iam::123456789012:user/facepipe-device-A", "A"),
    ("arn:aws:iam::123456789012:user/facepipe-device-", None),  # no name
    ("arn:aws:iam::123456789012:user/facepipe-devices-cam-1", None),
    ("arn:aws:iam::123456789012:user/other-device-cam-1", None),  # another stack's device
    ("arn:aws:iam::123456789012:user/facepipe/devices/admin", None),
    ("arn:aws:iam::123456789012:root", None),
    ("arn:aws:iam::123456789012:role/facepipe-device-cam-1", None),  # roles are not devices
    ("arn:aws:sts::123456789012:assumed-role/facepipe-device-cam-1/session", None),
    ("arn:aws:iam::999999999999:user/facepipe-device-cam-1", None),  # a user of another account
    ("arn:aws:sts::123456789012:assumed-role/facepipe-DeviceRole-X1/cam-3", "cam-3"),  # the device role's session
    ("arn:aws:sts::999999999999:assumed-role/facepipe-DeviceRole-X1/cam-3", None),  # ... of another account
    ("arn:aws:sts::123456789012:assumed-role/other-role/cam-3", None),  # another role's session
    ("arn:aws:sts::123456789012:assumed-role/facepipe-DeviceRole-X1/cam.3", None),
    ("arn:aws:sts::123456789012:assumed-role/facepipe-DeviceRole-X1/a/b", None),
    ("arn:aws:iam::123456789012:assumed-role/facepipe-DeviceRole-X1/cam-3", None),  # sessions are sts ARNs
    ("arn:aws:iam::123456789012:user/facepipe-device-cam.1", None),  # "." is no queue-name character
    ("", None),
    ("facepipe-device-cam-1", None),
])
def test_device_of_arn(arn: str, device: str | None) -> None:
    assert device_of_arn(arn, PREFIX, ACCOUNT, ROLE) == device


def test_no_prefix_or_account_no_device() -> None:
    assert device_of_arn("arn:aws:iam::123456789012:user/cam-1", "", ACCOUNT) is None
    assert device_of_arn("arn:aws:iam::123456789012:user/facepipe-device-cam-1", PREFIX, "") is None
    assert device_of_arn("arn:aws:sts::123456789012:assumed-role/facepipe-DeviceRole-X1/cam-3", PREFIX, ACCOUNT) is None


def test_device_policy_names_one_alias_and_one_queue() -> None:
    alias = "arn:aws:lambda:us-east-1:123456789012:function:facepipe-DetectionFunction-x:live"
    queue = "arn:aws:sqs:us-east-1:123456789012:facepipe_answers-cam-1"
    statements = device_policy(alias, queue)["Statement"]
    assert [(s["Effect"], s["Resource"]) for s in statements] == [("Allow", alias), ("Allow", queue)]
    assert set(statements[0]["Action"]) == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    assert set(statements[1]["Action"]) == {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
    assert "*" not in str(statements)


@pytest.mark.parametrize("name", ["", "-cam", "cam.1", "cam:1", "a" * 41, "cam/1"])
def test_add_refuses_names_that_are_no_queue_or_user_name(name: str) -> None:
    target = Target("facepipe", "facepipe_answers-", "arn:aws:lambda:us-east-1:1:function:f:live", "us-east-1", "1")
    with pytest.raises(DeviceError):
        add_device(target, name, iam=None, sqs=None)  # refused before any AWS call


def test_add_refuses_a_name_whose_user_would_be_too_long() -> None:
    target = Target("s" * 40, "facepipe_answers-", "arn:aws:lambda:us-east-1:1:function:f:live", "us-east-1", "1")
    with pytest.raises(DeviceError, match="too long"):
        add_device(target, "c" * 20, iam=None, sqs=None)


def test_binding_needs_its_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FACEPIPE_REPLY_TO_PREFIX", "FACEPIPE_DEVICE_USER_PREFIX"):  # a running local stack sets them
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError, match="FACEPIPE_BIND_DEVICES needs"):
        Settings(bind_devices=True, reply_to_prefix="facepipe_answers-")
    with pytest.raises(ValidationError, match="FACEPIPE_BIND_DEVICES needs"):
        Settings(bind_devices=True, device_user_prefix=PREFIX)
    with pytest.raises(ValidationError, match="FACEPIPE_BIND_DEVICES needs"):
        Settings(bind_devices=True, reply_to_prefix="facepipe_answers-", device_user_prefix=PREFIX, device_account="")
    assert Settings(bind_devices=True, reply_to_prefix="facepipe_answers-", device_user_prefix=PREFIX,
                    device_account=ACCOUNT).bind_devices


@pytest.fixture
def on_moto(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Target, Any, Any]:
    """A stack name of its own on the module's moto server; IAM and SQS clients for it."""
    point_boto3_at(moto_endpoint, monkeypatch.setenv)
    stack = f"s{uuid.uuid4().hex[:8]}"
    target = Target(stack, f"{stack}_answers-", "arn:aws:lambda:us-east-1:123456789012:function:f:live",
                    "us-east-1", "123456789012")
    return target, aws.client("iam"), aws.client("sqs")


def test_add_list_remove(on_moto: tuple[Target, Any, Any]) -> None:
    target, iam, sqs = on_moto
    added = add_device(target, "cam-1", iam=iam, sqs=sqs)
    assert device_of_arn(added.user_arn, user_prefix(target.stack), target.account) == "cam-1"
    assert added.reply_to == f"{target.stack}_answers-cam-1" and added.queue_url.endswith("/" + added.reply_to)
    attributes = sqs.get_queue_attributes(QueueUrl=added.queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["MessageRetentionPeriod"] == "3600" and attributes["ReceiveMessageWaitTimeSeconds"] == "20"
    # a user under the devices' path whose name is not a device's is not listed
    iam.create_user(UserName="operator", Path=f"/facepipe/{target.stack}/devices/")
    [listed] = list_devices(target, iam=iam, sqs=sqs)
    assert (listed.name, listed.access_keys, listed.queue_url) == ("cam-1", [added.access_key_id], added.queue_url)
    with pytest.raises(DeviceError, match="exists"):
        add_device(target, "cam-1", iam=iam, sqs=sqs)
    remove_device(target, "cam-1", iam=iam, sqs=sqs)
    assert list_devices(target, iam=iam, sqs=sqs) == []
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_user(UserName=target.user_name("cam-1"))
    with pytest.raises(DeviceError, match="no device"):
        remove_device(target, "cam-1", iam=iam, sqs=sqs)


def test_a_failed_add_leaves_no_user_and_an_existing_queue_alone(on_moto: tuple[Target, Any, Any]) -> None:
    target, iam, sqs = on_moto
    existing = sqs.create_queue(QueueName=target.queue_name("cam-2"), Attributes={"VisibilityTimeout": "5"})
    with pytest.raises(sqs.exceptions.QueueNameExists):  # same name, other attributes
        add_device(target, "cam-2", iam=iam, sqs=sqs)
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_user(UserName=target.user_name("cam-2"))
    assert sqs.get_queue_url(QueueName=target.queue_name("cam-2"))["QueueUrl"] == existing["QueueUrl"]


def _policy(sqs: Any, queue_url: str) -> dict[str, Any]:
    policy: dict[str, Any] = json.loads(sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["Policy"])
                                        ["Attributes"]["Policy"])
    return policy


def test_a_device_queue_is_tls_only_and_tagged_with_its_sender(on_moto: tuple[Target, Any, Any]) -> None:
    """As template.yaml's queues (*TlsOnly): every action over plain HTTP denied; the tags say whose it is."""
    target, iam, sqs = on_moto
    added = add_device(target, "cam-1", iam=iam, sqs=sqs)
    [deny] = _policy(sqs, added.queue_url)["Statement"]
    assert deny == {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "sqs:*",
                    "Resource": target.queue_arn("cam-1"), "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    user_id = iam.get_user(UserName=target.user_name("cam-1"))["User"]["UserId"]
    assert sqs.list_queue_tags(QueueUrl=added.queue_url)["Tags"] == {DEVICE_TAG: "cam-1", SENDER_TAG: user_id}


def test_a_temporary_device_is_a_queue_its_one_session_may_read(on_moto: tuple[Target, Any, Any]) -> None:
    target, iam, sqs = on_moto
    with pytest.raises(DeviceError, match="no device role"):
        add_temporary_device(target, "cam-t", iam=iam, sqs=sqs)
    role = iam.create_role(RoleName=f"{target.stack}-DeviceRole-X1", Path=ROLE_PATH.format(stack=target.stack),
                           AssumeRolePolicyDocument="{}")["Role"]
    added = add_temporary_device(target, "cam-t", iam=iam, sqs=sqs)
    session = f"arn:aws:sts::123456789012:assumed-role/{target.stack}-DeviceRole-X1/cam-t"
    assert (added.role_arn, added.session_arn, added.reply_to) == (role["Arn"], session, target.queue_name("cam-t"))
    deny, read = _policy(sqs, added.queue_url)["Statement"]
    assert deny["Sid"] == "DenyInsecureTransport" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert read == {"Sid": "ReadOwnAnswers", "Effect": "Allow", "Principal": {"AWS": session},
                    "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
                    "Resource": target.queue_arn("cam-t")}
    tags = sqs.list_queue_tags(QueueUrl=added.queue_url)["Tags"]
    assert tags == {DEVICE_TAG: "cam-t", SENDER_TAG: f"{role['RoleId']}:cam-t"}
    assert iam.list_users(PathPrefix=f"/facepipe/{target.stack}/")["Users"] == []  # no user, no key
    with pytest.raises(DeviceError, match="exists"):
        add_temporary_device(target, "cam-t", iam=iam, sqs=sqs)
    sqs.create_queue(QueueName=target.queue_name("submit-run"))  # an admin's queue under the prefix: no device
    [listed] = list_devices(target, iam=iam, sqs=sqs)
    assert (listed.name, listed.temporary, listed.access_keys, listed.queue_url) == ("cam-t", True, [], added.queue_url)
    remove_device(target, "cam-t", iam=iam, sqs=sqs)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName=target.queue_name("cam-t"))
    with pytest.raises(DeviceError, match="no device"):
        remove_device(target, "cam-t", iam=iam, sqs=sqs)
