"""template.yaml's queues and bucket, transformed offline by aws-sam-translator, created in moto's CloudFormation
over HTTP and checked through the SQS and S3 APIs; and the local stack's queues and bucket are exactly these."""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.config import Config

from cloud.emulator.resources import Resources, create_resources
from cloud.emulator.stack import LOCAL_PARAMETERS, LocalStack, StackConfig
from cloud.emulator.template import as_built, load_template, local_subset, parameter_values, transform
from cloud.functions.contracts import MAX_QUEUE_MESSAGE_BYTES
from tests.conftest import INGEST_VISIBILITY_S, MAX_RECEIVE_COUNT, RECOGNITION_TIMEOUT_S, RECOGNITION_WORKERS
from tests.moto_env import REGION, moto_server
from tests.photos import models_dir

Template = dict[str, Any]
QUEUES = {"RequestQueue": "RequestDeadLetterQueue", "ResponseQueue": "ResponseDeadLetterQueue",
          "IngestQueue": "IngestDeadLetterQueue"}
DLQ_RETENTION_S = 14 * 24 * 3600


@pytest.fixture(scope="module")
def subset() -> Template:
    return local_subset(transform(as_built(load_template())), LOCAL_PARAMETERS)


@pytest.fixture(scope="module")
def aws() -> Iterator[SimpleNamespace]:
    """Clients of a fresh moto server on loopback (moto's state is per process: stack names are unique)."""
    with moto_server() as endpoint:
        kwargs = {"endpoint_url": endpoint, "region_name": REGION, "aws_access_key_id": "testing",
                  "aws_secret_access_key": "testing"}
        yield SimpleNamespace(
            cloudformation=boto3.client("cloudformation", config=Config(retries={"total_max_attempts": 1}),
                                        **kwargs),
            sqs=boto3.client("sqs", **kwargs), s3=boto3.client("s3", **kwargs))


def create(aws: SimpleNamespace, template: Template, overrides: dict[str, str]) -> Resources:
    return create_resources(aws.cloudformation, aws.sqs, aws.s3, stack_name=f"t-{uuid.uuid4().hex[:8]}",
                            template=template, parameters=parameter_values(template, overrides))


def attributes(sqs: Any, url: str) -> dict[str, str]:
    return dict(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"])


def test_the_subset_is_queues_and_bucket_with_what_they_use(subset: Template) -> None:
    assert {res["Type"] for res in subset["Resources"].values()} == {"AWS::SQS::Queue", "AWS::S3::Bucket"}
    assert set(subset["Resources"]) == {*QUEUES, *QUEUES.values(), "Bucket"}
    assert list(subset["Mappings"]) == ["DetectionTimeouts", "RecognitionTimeouts"]
    assert {"RecognitionTimeout", "MaxReceiveCount", "ResultsRetentionDays"} <= set(subset["Parameters"])


@pytest.mark.parametrize("timeout", ["3", "90"])  # both off the template's default (60)
def test_created_queues_and_bucket_have_the_templates_settings(
    aws: SimpleNamespace, subset: Template, timeout: str
) -> None:
    defaults = parameter_values(subset, {})
    assert defaults["RecognitionTimeout"] != timeout and defaults["MaxReceiveCount"] != "7"
    res = create(aws, subset, {"RecognitionTimeout": timeout, "MaxReceiveCount": "7", "ResultsRetentionDays": "9"})

    # The stack in moto's CloudFormation, as CloudFormation reports it.
    stack = aws.cloudformation.describe_stacks(StackName=res.stack_name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    created = {r["LogicalResourceId"]: r for r in
               aws.cloudformation.describe_stack_resources(StackName=res.stack_name)["StackResources"]}
    assert set(created) == set(subset["Resources"])
    assert all(r["ResourceStatus"] == "CREATE_COMPLETE" for r in created.values())

    # Queues, read through the SQS API; retention from the Mappings, per the function timeout behind each queue.
    mappings = subset["Mappings"]
    retention = {"RequestQueue": mappings["RecognitionTimeouts"][timeout]["MessageRetentionPeriod"],
                 "IngestQueue": mappings["DetectionTimeouts"][defaults["DetectionTimeout"]]["MessageRetentionPeriod"],
                 "ResponseQueue": 3600}
    for queue, dlq in QUEUES.items():
        url = res.queues[queue].url
        assert url.rsplit("/", 1)[1].startswith(f"{res.stack_name}-{queue}-")  # CloudFormation's generated name
        got, got_dlq = attributes(aws.sqs, url), attributes(aws.sqs, res.queues[dlq].url)
        assert json.loads(got["RedrivePolicy"]) == {"deadLetterTargetArn": got_dlq["QueueArn"], "maxReceiveCount": 7}
        assert got["MaximumMessageSize"] == str(MAX_QUEUE_MESSAGE_BYTES) == "262144"
        assert got["MessageRetentionPeriod"] == str(retention[queue]) and got["ReceiveMessageWaitTimeSeconds"] == "20"
        assert got["SqsManagedSseEnabled"] == "true" and got_dlq["SqsManagedSseEnabled"] == "true"
        assert got_dlq["MessageRetentionPeriod"] == str(DLQ_RETENTION_S)
        assert "RedrivePolicy" not in got_dlq
    # The request queue's visibility is the Mapping's 6x RecognitionTimeout; the response queue's a literal.
    assert attributes(aws.sqs, res.queues["RequestQueue"].url)["VisibilityTimeout"] == str(6 * int(timeout))
    assert res.queues["RequestQueue"].visibility_timeout == 6 * int(timeout)
    assert attributes(aws.sqs, res.queues["ResponseQueue"].url)["VisibilityTimeout"] == "30"

    # The bucket, read through the S3 API.
    s3, bucket = aws.s3, res.bucket
    assert bucket == created["Bucket"]["PhysicalResourceId"]
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    [rule] = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
    assert s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"] == [
        {"ObjectOwnership": "BucketOwnerEnforced"}]
    lifecycle = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert lifecycle["expire-results"]["Expiration"] == {"Days": 9}  # the ResultsRetentionDays given
    assert lifecycle["expire-crops"]["Filter"] == {"Prefix": "crops/"}
    assert lifecycle["expire-crops"]["Expiration"] == {"Days": 1}
    # Objects put under uploads/ (only there) are notified to the ingest queue, by moto's S3 as by AWS's.
    [notify] = s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    assert (notify["QueueArn"], notify["Events"]) == (res.queues["IngestQueue"].arn, ["s3:ObjectCreated:*"])
    assert notify["Filter"] == {"Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/"}]}}
    s3.put_object(Bucket=bucket, Key="crops/x.jpg", Body=b"not notified")
    s3.put_object(Bucket=bucket, Key="uploads/x.jpg", Body=b"notified")
    bodies = [json.loads(m["Body"]) for m in aws.sqs.receive_message(
        QueueUrl=res.queues["IngestQueue"].url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]]
    assert [b["Records"][0]["s3"]["object"]["key"] for b in bodies if "Records" in b] == ["uploads%2Fx.jpg"]
    # moto 5.2's CloudFormation applies only BucketEncryption (and Tags) itself; the rest came through the S3 API.
    print(f"\n[moto] bucket settings applied through the S3 API after CreateStack: {', '.join(res.applied)}")


def test_a_value_moto_would_take_but_cloudformation_refuses_is_refused(subset: Template) -> None:
    with pytest.raises(ValueError, match=r"RecognitionTimeout = 4: not one of the allowed values 3, 5, 10, "):
        parameter_values(subset, {"RecognitionTimeout": "4"})
    with pytest.raises(ValueError, match="MaxReceiveCount = 0: below MinValue 1"):
        parameter_values(subset, {"MaxReceiveCount": "0"})


def test_a_difference_between_moto_and_the_template_stops_creation(aws: SimpleNamespace, subset: Template) -> None:
    # moto truncates a queue name to 80 characters where CloudFormation would fail: reported, not ignored.
    long_name = copy.deepcopy(subset)
    long_name["Resources"]["ResponseDeadLetterQueue"]["Properties"]["QueueName"] = "q" * 90
    with pytest.raises(RuntimeError, match="created ResponseDeadLetterQueue unlike template.yaml: QueueName"):
        create(aws, long_name, {})
    # A bucket setting the local stack neither gets from moto nor applies.
    accelerated = copy.deepcopy(subset)
    accelerated["Resources"]["Bucket"]["Properties"]["AccelerateConfiguration"] = {"AccelerationStatus": "Enabled"}
    with pytest.raises(ValueError, match="Bucket sets AccelerateConfiguration"):
        create(aws, accelerated, {})


def test_the_local_stacks_queues_and_bucket_are_the_templates(local_stack: Any, subset: Template) -> None:
    # GIVEN the session's stack, started with MaxReceiveCount and RecognitionTimeout off the template's defaults
    defaults = parameter_values(subset, {})
    assert defaults["MaxReceiveCount"] != str(MAX_RECEIVE_COUNT)
    assert defaults["RecognitionTimeout"] != str(RECOGNITION_TIMEOUT_S)
    cloudformation, sqs = local_stack.client("cloudformation"), local_stack.client("sqs")
    stack = cloudformation.describe_stacks(StackName=local_stack.stack_name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    assert {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]} == local_stack.parameters
    assert local_stack.parameters["MaxReceiveCount"] == str(MAX_RECEIVE_COUNT)
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in
                cloudformation.describe_stack_resources(StackName=local_stack.stack_name)["StackResources"]}
    # THEN its queues and bucket are that stack's resources
    urls = {"RequestQueue": local_stack.request_queue_url, "RequestDeadLetterQueue": local_stack.request_dlq_url,
            "ResponseQueue": local_stack.response_queue_url, "ResponseDeadLetterQueue": local_stack.response_dlq_url}
    for logical, url in urls.items():
        assert url.rsplit("/", 1)[1] == physical[logical].rsplit("/", 1)[1]
        assert url.startswith(local_stack.endpoint_url)
    assert local_stack.bucket == physical["Bucket"]
    assert local_stack.gallery_uri == f"s3://{physical['Bucket']}/{local_stack.parameters['GalleryKey']}"
    # AND the queues carry the values given to LocalStack
    urls |= {name: local_stack.resources.queues[name].url for name in ("IngestQueue", "IngestDeadLetterQueue")}
    for queue, dlq in QUEUES.items():
        redrive = json.loads(attributes(sqs, urls[queue])["RedrivePolicy"])
        assert redrive == {"deadLetterTargetArn": attributes(sqs, urls[dlq])["QueueArn"],
                           "maxReceiveCount": MAX_RECEIVE_COUNT}
    assert attributes(sqs, urls["RequestQueue"])["VisibilityTimeout"] == str(6 * RECOGNITION_TIMEOUT_S)
    assert attributes(sqs, urls["IngestQueue"])["VisibilityTimeout"] == str(INGEST_VISIBILITY_S)  # the tests' own
    # AND the local SQS trigger runs with the stack's RecognitionTimeout, batch size and window
    trigger = local_stack.trigger
    assert trigger.queue_url == local_stack.request_queue_url
    assert trigger.timeout_s == RECOGNITION_TIMEOUT_S
    assert trigger.batch_size == int(local_stack.parameters["RecognitionBatchSize"])
    assert trigger.batching_window_s == float(local_stack.parameters["RecognitionBatchingWindow"])


def test_local_stack_runs_each_function_with_its_template_settings(local_stack: Any) -> None:
    source = load_template()["Resources"]
    params = local_stack.parameters
    for name, prefix in (("DetectionFunction", "Detection"), ("RecognitionFunction", "Recognition")):
        spec = local_stack.functions[name].spec
        assert spec.handler == source[name]["Properties"]["ImageConfig"]["Command"][0]
        assert spec.timeout_s == float(params[f"{prefix}Timeout"])
        assert spec.memory_mb == int(params[f"{prefix}MemorySize"])
        assert spec.name == f"{local_stack.stack_name}-{name}"
    # Concurrency: detection's reserved concurrency is the template's -1 (unreserved): the core count here;
    # recognition's is what the test stack asked for, and the trigger runs that many batches at once.
    assert params["DetectionReservedConcurrency"] == "-1"
    assert local_stack.functions["DetectionFunction"].concurrency == (os.cpu_count() or 1)
    assert local_stack.functions["RecognitionFunction"].concurrency == RECOGNITION_WORKERS
    assert local_stack.trigger.concurrency == RECOGNITION_WORKERS


def test_local_stack_refuses_a_timeout_the_template_does_not_allow() -> None:
    # Refused before anything starts (so also while the session's stack runs in this process).
    with pytest.raises(ValueError, match="RecognitionTimeout = 4: not one of the allowed values 3, 5, 10, 15, 30, "
                                         "60, 90, 120, 180, 300, 600, 900"):
        LocalStack(StackConfig(models_dir=models_dir(), recognition_timeout_s=4)).start()
    with pytest.raises(ValueError, match="DetectionTimeout = 3: not one of the allowed values 5, 10, "):
        LocalStack(StackConfig(models_dir=models_dir(), detection_timeout_s=3)).start()
    with pytest.raises(ValueError, match="stack name"):
        LocalStack(StackConfig(models_dir=models_dir(), prefix="local_")).start()
