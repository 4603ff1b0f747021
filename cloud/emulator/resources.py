"""The local stack's queues and bucket: template.yaml's own, created by moto's CloudFormation.

moto's CloudFormation honours some properties and skips others, so every property the template
declares is read back through the SQS and S3 APIs after creation. Bucket settings moto skipped are
applied through the S3 API; any other difference stops the local stack rather than let it differ.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

Template = dict[str, Any]
CREATE_TIMEOUT_S = 30.0

# Queue properties that are SQS attributes of the same name.
_QUEUE_ATTRIBUTES = frozenset({
    "ContentBasedDeduplication", "DelaySeconds", "FifoQueue", "KmsDataKeyReusePeriodSeconds", "KmsMasterKeyId",
    "MaximumMessageSize", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds", "RedriveAllowPolicy",
    "RedrivePolicy", "SqsManagedSseEnabled", "VisibilityTimeout",
})
# Bucket property -> the S3 calls that read and write it, and the write's argument name.
_BUCKET_CALLS = {
    "BucketEncryption": ("get_bucket_encryption", "put_bucket_encryption", "ServerSideEncryptionConfiguration"),
    "VersioningConfiguration": ("get_bucket_versioning", "put_bucket_versioning", "VersioningConfiguration"),
    "PublicAccessBlockConfiguration": ("get_public_access_block", "put_public_access_block",
                                       "PublicAccessBlockConfiguration"),
    "OwnershipControls": ("get_bucket_ownership_controls", "put_bucket_ownership_controls", "OwnershipControls"),
    "LifecycleConfiguration": ("get_bucket_lifecycle_configuration", "put_bucket_lifecycle_configuration",
                               "LifecycleConfiguration"),
    "NotificationConfiguration": ("get_bucket_notification_configuration", "put_bucket_notification_configuration",
                                  "NotificationConfiguration"),
}


@dataclass(frozen=True)
class Queue:
    url: str  # on the moto endpoint
    arn: str
    attributes: dict[str, str]  # GetQueueAttributes right after creation

    @property
    def visibility_timeout(self) -> int:
        return int(self.attributes["VisibilityTimeout"])

    @property
    def max_receive_count(self) -> int | None:
        redrive = self.attributes.get("RedrivePolicy")
        return int(json.loads(redrive)["maxReceiveCount"]) if redrive else None


@dataclass(frozen=True)
class Resources:
    stack_name: str
    parameters: dict[str, str]  # as the created stack reports them
    queues: dict[str, Queue]  # by logical id
    bucket: str
    applied: tuple[str, ...]  # bucket properties moto's CloudFormation skipped, applied through the S3 API


def for_moto(template: Template) -> Template:
    """`template` with its Number parameters declared as String. moto 5.2 turns a Number parameter's value
    into an int, so `!FindInMap [RecognitionTimeouts, !Ref RecognitionTimeout, ...]` looks up 60 in a map
    keyed "60" and the stack fails (KeyError, HTTP 500); on CloudFormation a Ref always yields a string.
    The values were checked against the Number constraints before (template.parameter_values)."""
    result = dict(template)
    result["Parameters"] = {
        name: {**declared, "Type": "String", **({"Default": str(declared["Default"])} if "Default" in declared else {})}
        if declared.get("Type") == "Number" else declared
        for name, declared in template.get("Parameters", {}).items()
    }
    return result


def create_resources(cloudformation: Any, sqs: Any, s3: Any, *, stack_name: str, template: Template,
                     parameters: dict[str, str]) -> Resources:
    """Create `template` (template.local_subset) as stack `stack_name` in moto and check it against the template.

    `cloudformation` should not retry: a retried CreateStack would only report that the stack exists.
    """
    try:
        cloudformation.create_stack(
            StackName=stack_name, TemplateBody=json.dumps(for_moto(template)),
            Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
        )
    except ClientError as exc:
        raise RuntimeError(f"moto's CloudFormation refused the local stack's template: {exc}") from exc
    stack = _wait_until_created(cloudformation, stack_name)
    reported = {p["ParameterKey"]: p["ParameterValue"] for p in stack.get("Parameters", [])}
    if reported != parameters:
        raise RuntimeError(f"stack {stack_name} reports parameters {reported}, not {parameters}")
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"]
                for r in cloudformation.describe_stack_resources(StackName=stack_name)["StackResources"]}
    declared = template["Resources"]
    missing = set(declared) - set(physical)
    if missing:
        raise RuntimeError(f"moto's CloudFormation reported {stack_name} complete without {sorted(missing)}")

    queues = {name: _queue(sqs, physical[name]) for name, res in declared.items() if res["Type"] == "AWS::SQS::Queue"}
    resolve = _resolver(parameters, template.get("Mappings", {}), {name: q.arn for name, q in queues.items()})
    for name, queue in queues.items():
        _check_queue(name, queue, resolve(declared[name].get("Properties", {})))
    [bucket_id] = [name for name, res in declared.items() if res["Type"] == "AWS::S3::Bucket"]
    applied = _complete_bucket(s3, physical[bucket_id], resolve(declared[bucket_id].get("Properties", {})))
    if applied:
        log.info("moto's CloudFormation skipped Bucket %s; applied through the S3 API", ", ".join(applied))
    return Resources(stack_name, reported, queues, physical[bucket_id], applied)


def _wait_until_created(cloudformation: Any, stack_name: str) -> dict[str, Any]:
    deadline = time.monotonic() + CREATE_TIMEOUT_S
    while True:
        stack: dict[str, Any] = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
        if not stack["StackStatus"].endswith("_IN_PROGRESS") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise RuntimeError(f"stack {stack_name} in moto: {stack['StackStatus']} {stack.get('StackStatusReason', '')}")
    return stack


def _queue(sqs: Any, physical_id: str) -> Queue:
    # moto's physical id is an https://sqs.<region>.amazonaws.com URL; its name gives the moto endpoint's URL.
    url = str(sqs.get_queue_url(QueueName=physical_id.rstrip("/").rsplit("/", 1)[-1])["QueueUrl"])
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return Queue(url, attributes["QueueArn"], dict(attributes))


def _resolver(parameters: dict[str, str], mappings: dict[str, Any], arns: dict[str, str]) -> Callable[[Any], Any]:
    """Resolve the intrinsics the queues and bucket use (Ref to a parameter, GetAtt Arn, FindInMap), to check
    what moto made of them; anything else is refused rather than compared wrongly."""

    def resolve(node: Any) -> Any:
        if isinstance(node, list):
            return [resolve(item) for item in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            [(key, value)] = node.items()
            if key == "Ref" and value in parameters:
                return parameters[value]
            if key == "Fn::GetAtt":
                target, attribute = value.split(".", 1) if isinstance(value, str) else value
                if attribute == "Arn" and target in arns:
                    return arns[target]
            if key == "Fn::FindInMap":
                name, first, second = (str(resolve(item)) for item in value)
                return mappings[name][first][second]
            if key == "Ref" or key.startswith("Fn::"):
                raise ValueError(f"the local stack cannot check {key} {value} against moto")
        return {key: resolve(value) for key, value in node.items()}

    return resolve


def _plain(value: Any) -> Any:
    """Values as the SQS/S3 APIs report them: booleans as true/false, numbers as strings."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return None if value is None else str(value)


def _contains(actual: Any, expected: Any) -> bool:
    """`actual` has everything `expected` has (the APIs add defaults, e.g. BucketKeyEnabled)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(_contains(actual.get(key), item) for key, item in expected.items())
    if isinstance(expected, list):
        return (isinstance(actual, list) and len(actual) == len(expected)
                and all(_contains(a, e) for a, e in zip(actual, expected, strict=True)))
    return bool(_plain(actual) == _plain(expected))


def _check_queue(name: str, queue: Queue, properties: dict[str, Any]) -> None:
    differences = []
    for prop, expected in properties.items():
        if prop == "QueueName":
            actual: Any = queue.url.rsplit("/", 1)[-1]
        elif prop in _QUEUE_ATTRIBUTES:
            actual = queue.attributes.get(prop)
            if prop.startswith("Redrive") and actual:
                actual = json.loads(actual)
        else:
            raise ValueError(f"template.yaml's {name} sets {prop}, which the local stack does not check in moto")
        if _plain(actual) != _plain(expected):
            differences.append(f"{prop} {actual!r}, template {expected!r}")
    if differences:
        raise RuntimeError(f"moto's CloudFormation created {name} unlike template.yaml: {'; '.join(differences)}")


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in the S3 API's form."""
    api: dict[str, Any] = {"ID": rule["Id"], "Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
    for key, value in rule.items():
        if key == "ExpirationInDays":
            api.setdefault("Expiration", {})["Days"] = int(value)
        elif key == "ExpiredObjectDeleteMarker":
            api.setdefault("Expiration", {})["ExpiredObjectDeleteMarker"] = value
        elif key in ("NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload"):
            api[key] = value
        elif key not in ("Id", "Status", "Prefix"):
            raise ValueError(f"template.yaml's bucket lifecycle rule sets {key}, which the local stack does not apply")
    return api


def _queue_notification(config: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation bucket notification to SQS in the S3 API's form (moto's S3 then delivers it)."""
    unknown = set(config) - {"Event", "Queue", "Filter"}
    if unknown:
        raise ValueError(f"template.yaml's bucket notification sets {sorted(unknown)}, which the local stack "
                         "does not apply")
    api: dict[str, Any] = {"QueueArn": config["Queue"], "Events": [config["Event"]]}
    if "Filter" in config:
        api["Filter"] = {"Key": {"FilterRules": config["Filter"]["S3Key"]["Rules"]}}
    return api


def _api_form(prop: str, value: Any) -> Any:
    if prop == "BucketEncryption":
        return {"Rules": [{"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
                           **{k: v for k, v in rule.items() if k == "BucketKeyEnabled"}}
                          for rule in value["ServerSideEncryptionConfiguration"]]}
    if prop == "LifecycleConfiguration":
        return {"Rules": [_lifecycle_rule(rule) for rule in value["Rules"]]}
    if prop == "NotificationConfiguration":
        return {"QueueConfigurations": [_queue_notification(config) for config in value["QueueConfigurations"]]}
    return value


def _bucket_has(s3: Any, bucket: str, get: str, argument: str, value: Any) -> bool:
    try:
        response = getattr(s3, get)(Bucket=bucket)
    except ClientError as exc:  # moto answers 404 for a setting never made
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] != 404:
            raise
        return False
    # Versioning and lifecycle come back at the top level, the others under the argument's name.
    return _contains(response.get(argument, response), value)


def _complete_bucket(s3: Any, bucket: str, properties: dict[str, Any]) -> tuple[str, ...]:
    """Check each bucket property through the S3 API; apply what moto's CloudFormation skipped."""
    applied = []
    for prop, value in properties.items():
        if prop == "BucketName":
            if value != bucket:
                raise RuntimeError(f"moto named the bucket {bucket}, not {value}")
            continue
        if prop not in _BUCKET_CALLS:
            raise ValueError(f"template.yaml's Bucket sets {prop}, which the local stack does not check in moto")
        get, put, argument = _BUCKET_CALLS[prop]
        expected = _api_form(prop, value)
        if _bucket_has(s3, bucket, get, argument, expected):
            continue
        getattr(s3, put)(Bucket=bucket, **{argument: expected})
        if not _bucket_has(s3, bucket, get, argument, expected):
            raise RuntimeError(f"moto did not keep Bucket {prop} {expected} applied through the S3 API")
        applied.append(prop)
    return tuple(applied)
