"""template.yaml: cfn-lint, the offline SAM transform (as `sam build` + `sam deploy` run it), and the
transformed template checked against the code it deploys (settings, contracts, handlers) and against the
issue's rules (least privilege, redrive, visibility, encryption); events/sqs_request_batch.json."""

from __future__ import annotations

import ast
import hashlib
import json
import re
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser.models import SqsModel
from cfnlint.api import lint

from cloud.contracts import MAX_QUEUE_MESSAGE_BYTES, RequestMessage
from cloud.local.template import PLACEHOLDER_IMAGE_URI, as_built, load_template, transform
from cloud.settings import Settings
from tests.dockerfile import dockerfile_env
from tests.photos import REPO

TEMPLATE_TEXT = (REPO / "template.yaml").read_text()
REGIONS = ["us-east-1", "eu-west-1"]
HANDLERS = {"DetectionFunction": "cloud.detection.handler.handler",
            "RecognitionFunction": "cloud.recognition.handler.handler"}

Template = dict[str, Any]


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template()


@pytest.fixture(scope="module")
def transformed(template: Template) -> Template:
    return transform(as_built(template))


def _of_type(tpl: Template, kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in tpl["Resources"].items() if res["Type"] == kind}


def _errors(text: str) -> list[str]:
    return [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in lint(text, regions=REGIONS)]


# --- lint and transform ---------------------------------------------------------------------------


def test_cfn_lint_passes_on_the_sam_template() -> None:
    assert _errors(TEMPLATE_TEXT) == []


def test_cfn_lint_passes_on_the_transformed_template(transformed: Template) -> None:
    assert "Transform" not in transformed
    assert _errors(json.dumps(transformed)) == []


def test_cfn_lint_can_fail() -> None:
    # The lint above is not vacuous: a misspelt enum value is reported.
    broken = TEMPLATE_TEXT.replace("[ReportBatchItemFailures]", "[ReportBatchFailures]")
    assert any(error.startswith("E3030") and "ReportBatchFailures" in error for error in _errors(broken))


# --- the two functions ----------------------------------------------------------------------------


def test_one_image_two_handlers(transformed: Template) -> None:
    functions = _of_type(transformed, "AWS::Lambda::Function")
    assert set(functions) == set(HANDLERS)
    for name, handler in HANDLERS.items():
        props = functions[name]["Properties"]
        assert props["PackageType"] == "Image"
        assert props["Code"] == {"ImageUri": PLACEHOLDER_IMAGE_URI}  # what `sam build` fills in
        assert props["ImageConfig"]["Command"] == [handler]


@pytest.mark.parametrize("handler", sorted(set(HANDLERS.values())))
def test_handler_exists_in_the_code(handler: str) -> None:
    # `module.function`: the file exists and defines the function (parsed, not imported: no torch here).
    module, function = handler.rsplit(".", 1)
    source = REPO / (module.replace(".", "/") + ".py")
    assert source.is_file(), source
    tree = ast.parse(source.read_text())
    assert function in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_function_url_is_iam_authenticated_and_buffered(transformed: Template) -> None:
    urls = _of_type(transformed, "AWS::Lambda::Url")
    assert list(urls) == ["DetectionFunctionUrl"]
    props = urls["DetectionFunctionUrl"]["Properties"]
    assert props["TargetFunctionArn"] == {"Ref": "DetectionFunction"}
    assert props["AuthType"] == {"Ref": "FunctionUrlAuthType"}
    assert transformed["Parameters"]["FunctionUrlAuthType"]["Default"] == "AWS_IAM"
    assert props["InvokeMode"] == "BUFFERED"
    # Public access is granted only under the NONE choice, with both actions (October 2025 rule).
    public = _of_type(transformed, "AWS::Lambda::Permission")
    assert {res["Properties"]["Action"] for res in public.values()} == {"lambda:InvokeFunctionUrl",
                                                                       "lambda:InvokeFunction"}
    assert all(res.get("Condition") == "IsPublicUrl" for res in public.values())
    assert transformed["Conditions"]["IsPublicUrl"] == {"Fn::Equals": [{"Ref": "FunctionUrlAuthType"}, "NONE"]}


def test_sqs_trigger_reports_partial_batch_failures(transformed: Template) -> None:
    mappings = _of_type(transformed, "AWS::Lambda::EventSourceMapping")
    assert len(mappings) == 1
    props = next(iter(mappings.values()))["Properties"]
    assert props["EventSourceArn"] == {"Fn::GetAtt": ["RequestQueue", "Arn"]}
    assert props["FunctionName"] == {"Ref": "RecognitionFunction"}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BatchSize"] == {"Ref": "RecognitionBatchSize"}
    assert props["MaximumBatchingWindowInSeconds"] == {"Ref": "RecognitionBatchingWindow"}
    assert transformed["Parameters"]["RecognitionBatchSize"]["MaxValue"] == 10  # SQS event source maximum
    assert props["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "RecognitionMaxConcurrency"}}


def test_visibility_timeout_is_at_least_six_times_the_recognition_timeout(transformed: Template) -> None:
    timeout_param = transformed["Parameters"]["RecognitionTimeout"]
    recognition = transformed["Resources"]["RecognitionFunction"]["Properties"]
    assert recognition["Timeout"] == {"Ref": "RecognitionTimeout"}
    visibility = transformed["Resources"]["RequestQueue"]["Properties"]["VisibilityTimeout"]
    assert visibility == {"Fn::FindInMap": ["RecognitionTimeouts", {"Ref": "RecognitionTimeout"}, "VisibilityTimeout"]}
    table = transformed["Mappings"]["RecognitionTimeouts"]
    allowed = [str(value) for value in timeout_param["AllowedValues"]]
    assert sorted(table) == sorted(allowed)  # every allowed timeout has its row
    for seconds in allowed:
        assert table[seconds]["VisibilityTimeout"] >= 6 * int(seconds)
        assert table[seconds]["VisibilityTimeout"] <= 43200  # SQS maximum
    assert str(timeout_param["Default"]) in allowed


def test_queues_dead_letter_size_and_encryption(transformed: Template) -> None:
    queues = _of_type(transformed, "AWS::SQS::Queue")
    for source, dlq in (("RequestQueue", "RequestDeadLetterQueue"), ("ResponseQueue", "ResponseDeadLetterQueue")):
        props = queues[source]["Properties"]
        assert props["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq, "Arn"]},
                                          "maxReceiveCount": {"Ref": "MaxReceiveCount"}}
        assert props["MaximumMessageSize"] == MAX_QUEUE_MESSAGE_BYTES
        # a DLQ keeps messages longer than its source, or they expire before anyone looks
        assert queues[dlq]["Properties"]["MessageRetentionPeriod"] > props["MessageRetentionPeriod"]
    assert all(q["Properties"]["SqsManagedSseEnabled"] is True for q in queues.values())


def test_every_queue_and_the_bucket_refuse_plain_http(transformed: Template) -> None:
    def denies_insecure(document: dict[str, Any]) -> bool:
        return any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
                   for s in document["Statement"])

    covered = {q["Ref"] for res in _of_type(transformed, "AWS::SQS::QueuePolicy").values()
               if denies_insecure(res["Properties"]["PolicyDocument"]) for q in res["Properties"]["Queues"]}
    assert covered == set(_of_type(transformed, "AWS::SQS::Queue"))
    bucket_policies = _of_type(transformed, "AWS::S3::BucketPolicy").values()
    assert any(p["Properties"]["Bucket"] == {"Ref": "Bucket"} and denies_insecure(p["Properties"]["PolicyDocument"])
               for p in bucket_policies)


def test_bucket_private_versioned_encrypted_with_expiry(transformed: Template) -> None:
    props = transformed["Resources"]["Bucket"]["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert all(props["PublicAccessBlockConfiguration"].values()) and len(props["PublicAccessBlockConfiguration"]) == 4
    rules = {rule.get("Prefix"): rule for rule in props["LifecycleConfiguration"]["Rules"]}
    assert rules["crops/"]["ExpirationInDays"] == 1
    assert rules["results/"]["ExpirationInDays"] == {"Ref": "ResultsRetentionDays"}
    assert "ExpirationInDays" not in rules["gallery/"]  # the gallery itself never expires


def test_log_groups_with_retention(transformed: Template) -> None:
    groups = _of_type(transformed, "AWS::Logs::LogGroup")
    assert all(g["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"} for g in groups.values())
    for function in HANDLERS:
        log_group = transformed["Resources"][function]["Properties"]["LoggingConfig"]["LogGroup"]
        assert log_group["Ref"] in groups


def test_function_roles_are_scoped(transformed: Template) -> None:
    for role in _of_type(transformed, "AWS::IAM::Role").values():
        props = role["Properties"]
        # only the basic logging policy is attached by ARN (no account-wide SQS or S3 policy)
        assert [arn.rsplit("/", 1)[-1] for arn in props["ManagedPolicyArns"]] == ["AWSLambdaBasicExecutionRole"]
        for policy in props["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                statement = statement.get("Fn::If", [None, statement])[1]  # the conditional reply_to statement
                assert statement["Resource"] != "*", statement
                assert not any(action.endswith(":*") for action in _list(statement["Action"])), statement


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_edge_device_policy(transformed: Template) -> None:
    statements = transformed["Resources"]["EdgeDevicePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    by_sid = {s["Sid"]: s for s in statements}
    upload = by_sid["UploadFrames"]
    assert set(upload["Action"]) == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    assert upload["Resource"] == {"Fn::GetAtt": ["DetectionFunction", "Arn"]}
    answers = by_sid["ReadAnswers"]
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"} <= set(answers["Action"])
    assert {"Fn::GetAtt": ["ResponseQueue", "Arn"]} in answers["Resource"]
    assert not any("SendMessage" in action for s in statements for action in _list(s["Action"]))


def test_outputs_give_the_client_everything(transformed: Template) -> None:
    outputs = transformed["Outputs"]
    for name in ("FunctionUrl", "RequestQueueUrl", "ResponseQueueUrl", "BucketName", "GalleryUri",
                 "EdgeDevicePolicyArn"):
        assert name in outputs, name
    assert outputs["FunctionUrl"]["Value"] == {"Fn::GetAtt": ["DetectionFunctionUrl", "FunctionUrl"]}
    assert outputs["GalleryUri"]["Value"] == transformed["Resources"]["DetectionFunction"]["Properties"][
        "Environment"]["Variables"]["FACEPIPE_GALLERY_URI"]


# --- environment variables = cloud.settings fields ------------------------------------------------


def _function_env(transformed: Template, function: str) -> dict[str, Any]:
    return dict(transformed["Resources"][function]["Properties"]["Environment"]["Variables"])


@pytest.mark.parametrize("function", sorted(HANDLERS))
def test_every_facepipe_variable_is_a_settings_field(transformed: Template, function: str) -> None:
    env = _function_env(transformed, function) | dockerfile_env()
    names = {name for name in env if name.startswith("FACEPIPE_")}
    fields = set(Settings.model_fields)
    assert {name.removeprefix("FACEPIPE_").lower() for name in names} <= fields, names
    # what differs per deployment comes from the stack; the weights path from the image
    for required in ("request_queue_url", "response_queue_url", "bucket", "gallery_uri", "weights_path"):
        assert f"FACEPIPE_{required.upper()}" in names, required
    assert env["FACEPIPE_REQUEST_QUEUE_URL"] == {"Ref": "RequestQueue"}
    assert env["FACEPIPE_RESPONSE_QUEUE_URL"] == {"Ref": "ResponseQueue"}
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "facepipe"


def test_template_values_are_valid_settings(transformed: Template) -> None:
    """Resolve each variable with parameter defaults and boundary values; Settings must accept them all."""
    params = transformed["Parameters"]
    env = _function_env(transformed, "DetectionFunction")
    stand_ins = {"RequestQueue": "https://sqs.us-east-1.amazonaws.com/123456789012/req",
                 "ResponseQueue": "https://sqs.us-east-1.amazonaws.com/123456789012/resp", "Bucket": "facepipe-bucket"}

    def resolve(value: Any, overrides: dict[str, str]) -> str | None:
        if isinstance(value, str):
            return value
        if "Ref" in value:
            name = value["Ref"]
            if name in overrides or name in stand_ins:
                return overrides.get(name) or stand_ins[name]
            return str(params[name].get("Default", ""))
        if "Fn::If" in value:  # empty parameter -> variable left out (the code's default applies)
            _, then, _ = value["Fn::If"]
            return resolve(then, overrides) or None
        if "Fn::Sub" in value:
            return re.sub(r"\$\{(\w+)\}", lambda m: resolve({"Ref": m.group(1)}, overrides) or "", value["Fn::Sub"])
        raise AssertionError(f"unexpected intrinsic {value}")

    cases: list[dict[str, str]] = [{}]
    for name in ("TorchThreads",):
        cases += [{name: str(params[name]["MinValue"])}, {name: str(params[name]["MaxValue"])}]
    cases += [{"PersistResults": value} for value in params["PersistResults"]["AllowedValues"]]
    cases += [{"MatchThreshold": "0.95", "MinFaceProbability": "0.85", "ReplyToPrefix": "facepipe-answers-"}]
    for overrides in cases:
        values = {k.removeprefix("FACEPIPE_").lower(): resolve(v, overrides) for k, v in env.items()
                  if k.startswith("FACEPIPE_")}
        settings = Settings(**{k: v for k, v in values.items() if v is not None})
        assert settings.max_message_bytes == MAX_QUEUE_MESSAGE_BYTES  # = the queues' MaximumMessageSize
        assert settings.gallery_uri.startswith("s3://facepipe-bucket/gallery/")


# --- sample event ---------------------------------------------------------------------------------


def test_sample_sqs_event_matches_the_contract() -> None:
    event = json.loads((REPO / "events" / "sqs_request_batch.json").read_text())
    parsed = SqsModel.model_validate(event)  # powertools' model of a Lambda SQS event
    assert len(parsed.Records) >= 2
    requests = []
    for record in event["Records"]:
        assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
        requests.append(RequestMessage.model_validate_json(record["body"]))
    assert any(r.faces for r in requests) and any(not r.faces for r in requests)  # a frame with and without faces
    for request in requests:
        for index, face in enumerate(request.faces):
            # crops by S3 pointer (no photo data in the repository), at the detector's key layout
            assert face.crop_s3_key == f"crops/{request.request_id}/{index}.jpg"
