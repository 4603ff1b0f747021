"""template.yaml: cfn-lint, the offline SAM transform (as `sam build` + `sam deploy` run it), and the
transformed template checked against the code it deploys (settings, contracts, handlers) and against the
issue's rules (least privilege, redrive, visibility, encryption, concurrency, alarms);
events/sqs_request_batch.json."""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import re
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser.models import SqsModel
from cfnlint.api import lint

from cloud.emulator.template import PLACEHOLDER_IMAGE_URI, as_built, load_template, parameter_values, transform
from cloud.functions.contracts import MAX_QUEUE_MESSAGE_BYTES, RequestMessage
from cloud.functions.settings import Settings
from edge_client.config import ResponsesConfig
from tests.dockerfile import dockerfile_env, instructions
from tests.photos import REPO

TEMPLATE_TEXT = (REPO / "template.yaml").read_text()
REGIONS = ["us-east-1", "eu-west-1"]
HANDLERS = {"DetectionFunction": "cloud.functions.detection.handler.handler",
            "RecognitionFunction": "cloud.functions.recognition.handler.handler"}
PREFIXES = {"DetectionFunction": "Detection", "RecognitionFunction": "Recognition"}
ALIAS = "live"
NO_VALUE = {"Ref": "AWS::NoValue"}

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


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _with_defaults(template: Template, **defaults: Any) -> Template:
    """The template deployed with these parameter values: without a value the translator, like
    CloudFormation, takes a parameter's Default."""
    changed = copy.deepcopy(template)
    for name, value in defaults.items():
        changed["Parameters"][name]["Default"] = value
    return changed


def _refs(value: Any) -> set[str]:
    """Resources and parameters a value names (Ref, GetAtt, ${...} in Sub), pseudo parameters left out."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= _refs(item)
    elif isinstance(value, dict):
        for key, arg in value.items():
            if key == "Ref":
                found.add(arg)
            elif key == "Fn::GetAtt":
                found.add(arg[0] if isinstance(arg, list) else arg.split(".")[0])
            elif key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else arg
                found |= {name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", text)} - set(variables)
                found |= _refs(variables)
            else:
                found |= _refs(arg)
    return {name for name in found if not name.startswith("AWS::")}


def _conditions(tpl: Template, value: Any) -> set[str]:
    """Conditions a value depends on (Fn::If, Condition), with the conditions those name."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= _conditions(tpl, item)
    elif isinstance(value, dict):
        for key, arg in value.items():
            if key == "Fn::If" or (key == "Condition" and isinstance(arg, str)):  # not a policy's Condition
                name = arg[0] if key == "Fn::If" else arg
                found |= {name} | _conditions(tpl, tpl["Conditions"][name])
            found |= _conditions(tpl, arg)
    return found


def _parameters_behind(tpl: Template, value: Any) -> set[str]:
    """Parameters whose values can change a value: named in it, or in the conditions it depends on."""
    named = _refs(value) | {ref for cond in _conditions(tpl, value) for ref in _refs(tpl["Conditions"][cond])}
    return named & set(tpl["Parameters"])


def _parameter_values(tpl: Template, **overrides: Any) -> dict[str, str]:
    """Parameter values as CloudFormation sees them (strings): the defaults, then the overrides."""
    values = {name: str(param.get("Default", "")) for name, param in tpl["Parameters"].items()}
    return values | {name: str(value) for name, value in overrides.items()}


def _holds(tpl: Template, condition: str, values: dict[str, str]) -> bool:
    """A template condition evaluated for these parameter values, as CloudFormation does."""

    def evaluate(expr: dict[str, Any]) -> bool:
        (function, args), = expr.items()
        if function == "Fn::Not":
            return not evaluate(args[0])
        if function == "Fn::And":
            return all(evaluate(arg) for arg in args)
        if function == "Fn::Or":
            return any(evaluate(arg) for arg in args)
        if function == "Condition":
            return evaluate(tpl["Conditions"][args])
        if function == "Fn::Equals":
            left, right = (_resolve(tpl, arg, values) for arg in args)
            return str(left) == str(right)
        raise AssertionError(f"unexpected condition function {function}")

    return evaluate(tpl["Conditions"][condition])


def _resolve(tpl: Template, value: Any, values: dict[str, str]) -> Any:
    """A value with Fn::If and parameter Refs resolved for these parameter values; AWS::NoValue -> None."""
    if isinstance(value, list):
        return [item for item in (_resolve(tpl, item, values) for item in value) if item is not None]
    if not isinstance(value, dict):
        return value
    if value == NO_VALUE:
        return None
    if set(value) == {"Ref"} and value["Ref"] in values:
        return values[value["Ref"]]
    if set(value) == {"Fn::If"}:
        condition, then, otherwise = value["Fn::If"]
        return _resolve(tpl, then if _holds(tpl, condition, values) else otherwise, values)
    if set(value) == {"Fn::FindInMap"}:
        mapping, top, second = (_resolve(tpl, arg, values) for arg in value["Fn::FindInMap"])
        return tpl["Mappings"][mapping][str(top)][second]
    return {key: _resolve(tpl, item, values) for key, item in value.items()}


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


def test_sam_build_makes_one_image_from_the_dockerfile(template: Template) -> None:
    # Identical Metadata = one SAM build definition = one image for both functions.
    metadata = [template["Resources"][name]["Metadata"] for name in HANDLERS]
    assert metadata[0] == metadata[1]
    assert (REPO / metadata[0]["DockerContext"] / metadata[0]["Dockerfile"]).is_file()
    declared = {arg.split("=", 1)[0] for arg in instructions("ARG")}
    assert set(metadata[0]["DockerBuildArgs"]) <= declared  # every build arg is one the Dockerfile reads
    args = metadata[0]["DockerBuildArgs"]
    assert args["WEIGHTS_URL"] == args["WEIGHTS_SHA256"] == ""  # the default weights
    # the Dockerfile's base image: the build refuses it until tools/pin_base_image.py pins it by digest
    assert args["BASE_IMAGE"].split("@sha256:")[0] == "public.ecr.aws/lambda/python:3.12"
    assert all("ImageUri" not in template["Resources"][name]["Properties"] for name in HANDLERS)


def test_one_image_two_handlers(transformed: Template) -> None:
    functions = _of_type(transformed, "AWS::Lambda::Function")
    assert set(functions) == set(HANDLERS)
    for name, handler in HANDLERS.items():
        props = functions[name]["Properties"]
        assert props["PackageType"] == "Image"
        assert props["Code"] == {"ImageUri": PLACEHOLDER_IMAGE_URI}  # what `sam build` fills in
        assert props["ImageConfig"]["Command"] == [handler]
        for setting in ("MemorySize", "Timeout"):  # per function, chosen at deploy time
            parameter = f"{PREFIXES[name]}{setting}"
            assert props[setting] == {"Ref": parameter}
            assert transformed["Parameters"][parameter]["Type"] == "Number"


def test_every_handler_named_in_the_template_and_the_dockerfile_is_an_importable_callable(
    transformed: Template, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)  # in Lambda the modules load their models
    commands = [res["Properties"]["ImageConfig"]["Command"]
                for res in _of_type(transformed, "AWS::Lambda::Function").values()]
    dockerfile_cmds = instructions("CMD")
    assert dockerfile_cmds, "Dockerfile.lambda has no CMD"
    commands += [json.loads(cmd) for cmd in dockerfile_cmds]  # exec form: a JSON list
    handlers = set()
    for command in commands:
        assert isinstance(command, list) and len(command) == 1, command  # the runtime takes one `module.function`
        handlers.add(command[0])
    for handler in sorted(handlers):
        module_name, _, function_name = handler.rpartition(".")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, function_name, None)), f"{handler}: no callable {function_name}"


@pytest.mark.parametrize("function", sorted(HANDLERS))
def test_each_function_is_served_by_its_live_alias(transformed: Template, function: str) -> None:
    aliases = {name: res for name, res in _of_type(transformed, "AWS::Lambda::Alias").items()
               if res["Properties"]["FunctionName"] == {"Ref": function}}
    assert list(aliases) == [f"{function}Alias{ALIAS}"]  # the name the template refers to
    alias = aliases[f"{function}Alias{ALIAS}"]["Properties"]
    assert alias["Name"] == ALIAS
    version_id, attribute = alias["FunctionVersion"]["Fn::GetAtt"]
    assert attribute == "Version"
    version = transformed["Resources"][version_id]
    assert version["Type"] == "AWS::Lambda::Version"
    assert version["Properties"]["FunctionName"] == {"Ref": function}


def _version_of(tpl: Template, function: str) -> tuple[str, dict[str, Any]]:
    version_id = tpl["Resources"][f"{function}Alias{ALIAS}"]["Properties"]["FunctionVersion"]["Fn::GetAtt"][0]
    return version_id, tpl["Resources"][version_id]


def _another_value(param: dict[str, Any]) -> Any:
    default = param.get("Default", "")
    if "AllowedValues" in param:
        return next(value for value in param["AllowedValues"] if str(value) != str(default))
    if param["Type"] == "Number":
        return param["MaxValue"] if str(param["MaxValue"]) != str(default) else param["MinValue"]
    return f"{default}x"  # the translator does not check patterns


@pytest.mark.parametrize("function", sorted(HANDLERS))
def test_any_change_to_a_function_publishes_a_version_for_its_alias(
    template: Template, transformed: Template, function: str
) -> None:
    """A version is a snapshot of the function's settings, and the URL and the trigger invoke the alias:
    a parameter that changes the function must also make CloudFormation publish a new version, or the
    alias keeps serving the old settings. SAM's version id hashes the template, not parameter values,
    so such a parameter must be in the version's Description (a change of which replaces the version)."""
    version_id, version = _version_of(transformed, function)
    described = _refs(version["Properties"]["Description"])
    props = dict(transformed["Resources"][function]["Properties"])
    props.pop("ReservedConcurrentExecutions")  # function-wide, not part of a version
    behind = _parameters_behind(transformed, props)
    assert {f"{PREFIXES[function]}MemorySize", "MatchThreshold", "ReplyToPrefix"} <= behind  # the walk finds them
    for name in sorted(behind):
        changed = transform(as_built(_with_defaults(template, **{name: _another_value(template["Parameters"][name])})))
        assert _version_of(changed, function)[0] != version_id or name in described, name
    # A new image is a new version by itself (SAM hashes the ImageUri that `sam build` writes).
    rebuilt = transform(as_built(template, image_uri=PLACEHOLDER_IMAGE_URI + "-rebuilt"))
    assert _version_of(rebuilt, function)[0] != version_id


@pytest.mark.parametrize("function", sorted(HANDLERS))
def test_what_happens_to_old_versions(template: Template, transformed: Template, function: str) -> None:
    """docs/deploy.md: a new image publishes a new Version resource and the old one leaves the template, kept
    by SAM's DeletionPolicy Retain; a parameter change replaces the same Version resource (its Description
    changes) and, without an UpdateReplacePolicy, CloudFormation deletes the replaced version."""
    version_id, version = _version_of(transformed, function)
    assert version.get("DeletionPolicy") == "Retain" and version.get("UpdateReplacePolicy", "Delete") == "Delete"
    changed_id, _ = _version_of(transform(as_built(_with_defaults(template, LogLevel="DEBUG"))), function)
    assert changed_id == version_id and "LogLevel" in _refs(version["Properties"]["Description"])
    rebuilt = transform(as_built(template, image_uri=PLACEHOLDER_IMAGE_URI + "-rebuilt"))
    assert _version_of(rebuilt, function)[0] != version_id and version_id not in rebuilt["Resources"]


@pytest.mark.parametrize("function", sorted(HANDLERS))
def test_version_description_fits_lambdas_limit_at_the_longest_parameter_values(
    transformed: Template, function: str
) -> None:
    text = _version_of(transformed, function)[1]["Properties"]["Description"]["Fn::Sub"]
    params = transformed["Parameters"]

    def longest(name: str) -> int:
        param = params[name]
        if "AllowedValues" in param:
            return max(len(str(value)) for value in param["AllowedValues"])
        if "MaxLength" in param:
            return int(param["MaxLength"])
        if param["Type"] == "Number" and "MinValue" in param and "MaxValue" in param:
            return max(len(str(param["MinValue"])), len(str(param["MaxValue"])))
        raise AssertionError(f"parameter {name} has no length limit")

    names = re.findall(r"\$\{(\w+)\}", text)
    assert names
    assert len(re.sub(r"\$\{\w+\}", "", text)) + sum(longest(name) for name in names) <= 256


# --- concurrency ----------------------------------------------------------------------------------


@pytest.mark.parametrize("function", sorted(HANDLERS))
def test_reserved_concurrency_is_a_parameter_minus_one_for_none(transformed: Template, function: str) -> None:
    name = f"{PREFIXES[function]}ReservedConcurrency"
    param = transformed["Parameters"][name]
    assert param["Default"] == param["MinValue"] == -1  # not reserved, and nothing below that
    reserved = transformed["Resources"][function]["Properties"]["ReservedConcurrentExecutions"]
    assert "Fn::If" in reserved, reserved  # conditional: -1 must leave it out
    assert reserved["Fn::If"][1:] == [{"Ref": name}, NO_VALUE]

    def resolved(value: int) -> Any:
        return _resolve(transformed, reserved, _parameter_values(transformed, **{name: value}))

    assert resolved(-1) is None  # property left out: the account's shared pool
    assert resolved(0) == "0"  # AWS's own meaning: stopped
    assert resolved(param["MaxValue"]) == str(param["MaxValue"])


def test_recognition_reserved_concurrency_explains_the_sqs_maximum_concurrency(transformed: Template) -> None:
    assert "RecognitionMaxConcurrency" in transformed["Parameters"]["RecognitionReservedConcurrency"]["Description"]


@pytest.mark.parametrize("function", sorted(HANDLERS))
def test_provisioned_concurrency_is_optional_and_on_the_alias(transformed: Template, function: str) -> None:
    name = f"{PREFIXES[function]}ProvisionedConcurrency"
    param = transformed["Parameters"][name]
    assert param["Default"] == param["MinValue"] == 0
    assert "ProvisionedConcurrencyConfig" not in transformed["Resources"][function]["Properties"]
    config = transformed["Resources"][f"{function}Alias{ALIAS}"]["Properties"]["ProvisionedConcurrencyConfig"]
    assert "Fn::If" in config, config  # conditional: 0 must leave it out
    assert config["Fn::If"][1:] == [{"ProvisionedConcurrentExecutions": {"Ref": name}}, NO_VALUE]

    def resolved(value: int) -> Any:
        return _resolve(transformed, config, _parameter_values(transformed, **{name: value}))

    assert resolved(0) is None  # none: the property is left out, as Lambda wants at least 1
    for value in {param["MinValue"], param["MinValue"] + 1, param["Default"], param["MaxValue"]}:
        config_value = resolved(value)
        assert config_value is None or int(config_value["ProvisionedConcurrentExecutions"]) >= 1, value
    assert resolved(3) == {"ProvisionedConcurrentExecutions": "3"}


def test_non_default_parameters_transform_to_a_valid_template(template: Template) -> None:
    changed = _with_defaults(template, FunctionUrlAuthType="NONE", DetectionReservedConcurrency=20,
                             RecognitionReservedConcurrency=10, DetectionProvisionedConcurrency=2,
                             RecognitionProvisionedConcurrency=1, AlarmEmail="ops@example.com",
                             ReplyToPrefix="facepipe_answers-", MatchThreshold="0.95", Architecture="arm64")
    result = transform(as_built(changed))
    assert _errors(json.dumps(result)) == []
    values = _parameter_values(result)
    assert _resolve(result, result["Resources"]["DetectionFunctionAliaslive"]["Properties"], values)[
        "ProvisionedConcurrencyConfig"] == {"ProvisionedConcurrentExecutions": "2"}
    assert _resolve(result, result["Resources"]["RecognitionFunction"]["Properties"], values)[
        "ReservedConcurrentExecutions"] == "10"
    assert _holds(result, "IsPublicUrl", values) and _holds(result, "HasAlarmEmail", values)


# --- the endpoint and the trigger -----------------------------------------------------------------


def test_function_url_is_iam_authenticated_and_buffered(transformed: Template) -> None:
    urls = _of_type(transformed, "AWS::Lambda::Url")
    assert list(urls) == ["DetectionFunctionUrl"]
    props = urls["DetectionFunctionUrl"]["Properties"]
    assert props["TargetFunctionArn"] == {"Ref": f"DetectionFunctionAlias{ALIAS}"}  # the alias (an ARN)
    assert props["AuthType"] == {"Ref": "FunctionUrlAuthType"}
    assert transformed["Parameters"]["FunctionUrlAuthType"]["Default"] == "AWS_IAM"
    assert transformed["Parameters"]["FunctionUrlAuthType"]["AllowedValues"] == ["AWS_IAM", "NONE"]
    assert props["InvokeMode"] == "BUFFERED"
    # Public access is granted only under the NONE choice, with both actions (October 2025 rule), on the
    # alias the URL serves: a permission applies only to the ARN it names.
    public = _of_type(transformed, "AWS::Lambda::Permission")
    assert {res["Properties"]["Action"] for res in public.values()} == {"lambda:InvokeFunctionUrl",
                                                                       "lambda:InvokeFunction"}
    assert all(res.get("Condition") == "IsPublicUrl" for res in public.values())
    assert all(res["Properties"]["FunctionName"] == props["TargetFunctionArn"] for res in public.values())
    assert transformed["Conditions"]["IsPublicUrl"] == {"Fn::Equals": [{"Ref": "FunctionUrlAuthType"}, "NONE"]}


def test_sqs_trigger_reports_partial_batch_failures(transformed: Template) -> None:
    mappings = _of_type(transformed, "AWS::Lambda::EventSourceMapping")
    assert len(mappings) == 2  # the request queue's, and the ingest queue's (below)
    [props] = [m["Properties"] for m in mappings.values()
               if m["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["RequestQueue", "Arn"]}]
    assert props["FunctionName"] == {"Ref": f"RecognitionFunctionAlias{ALIAS}"}  # where provisioned concurrency is
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BatchSize"] == {"Ref": "RecognitionBatchSize"}
    assert props["MaximumBatchingWindowInSeconds"] == {"Ref": "RecognitionBatchingWindow"}
    assert transformed["Parameters"]["RecognitionBatchSize"]["MaxValue"] == 10  # SQS event source maximum
    assert props["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "RecognitionMaxConcurrency"}}
    assert transformed["Parameters"]["RecognitionMaxConcurrency"]["MinValue"] >= 2  # the SQS minimum


def test_ingest_queue_triggers_detection_with_partial_batch_failures(transformed: Template) -> None:
    [props] = [m["Properties"] for m in _of_type(transformed, "AWS::Lambda::EventSourceMapping").values()
               if m["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["IngestQueue", "Arn"]}]
    assert props["FunctionName"] == {"Ref": f"DetectionFunctionAlias{ALIAS}"}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BatchSize"] == {"Ref": "IngestBatchSize"}
    assert props["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "IngestMaxConcurrency"}}
    params = transformed["Parameters"]
    assert params["IngestBatchSize"]["MaxValue"] == 10 and params["IngestMaxConcurrency"]["MinValue"] >= 2
    # its visibility and retention: test_queue_timings_hold_for_every_allowed_value


def test_uploads_notify_the_ingest_queue_which_lets_s3_send(transformed: Template) -> None:
    bucket = transformed["Resources"]["Bucket"]
    [notification] = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert notification == {"Event": "s3:ObjectCreated:*", "Queue": {"Fn::GetAtt": ["IngestQueue", "Arn"]},
                            "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": "uploads/"}]}}}
    policy = transformed["Resources"]["IngestQueuePolicy"]["Properties"]
    assert policy["Queues"] == [{"Ref": "IngestQueue"}]
    [allow] = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"} and allow["Action"] == "sqs:SendMessage"
    assert allow["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    # S3 checks the queue's permission when the notification is set: the policy must exist first, and must
    # not name the bucket (a cycle; cfn-lint above reports any).
    assert "IngestQueuePolicy" in _list(bucket["DependsOn"]) and "Bucket" not in _refs(policy)
    rules = {rule.get("Prefix"): rule for rule in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert rules["uploads/"]["ExpirationInDays"] == 1


def test_detection_reads_images_under_uploads_only(transformed: Template) -> None:
    role_id = transformed["Resources"]["DetectionFunction"]["Properties"]["Role"]["Fn::GetAtt"][0]
    reads = [s for s in _statements(transformed["Resources"][role_id]["Properties"]["Policies"])
             if any(action.startswith("s3:Get") for action in _list(s["Action"]))]
    assert reads == [{"Sid": "ReadUploads", "Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                      "Resource": {"Fn::Sub": "${Bucket.Arn}/uploads/*"}}]


# --- queues, bucket, logs -------------------------------------------------------------------------


def _allowed(param: dict[str, Any]) -> list[str]:
    """Every value a Number parameter may take: its AllowedValues, else MinValue..MaxValue."""
    if "AllowedValues" in param:
        return [str(value) for value in param["AllowedValues"]]
    return [str(value) for value in range(int(param["MinValue"]), int(param["MaxValue"]) + 1)]


def _timed_parameters(tpl: Template, queues: dict[str, dict[str, Any]]) -> list[str]:
    """The parameters behind any queue's timings, the function timeouts and the redrive counts."""
    timings = [{key: q["Properties"].get(key) for key in ("VisibilityTimeout", "MessageRetentionPeriod",
                                                          "RedrivePolicy")} for q in queues.values()]
    functions = [tpl["Resources"][name]["Properties"]["Timeout"] for name in HANDLERS]
    return sorted(_parameters_behind(tpl, [timings, functions]))


def test_queue_timings_hold_for_every_allowed_value(transformed: Template) -> None:
    """For every allowed combination: each SQS-triggered queue's visibility is at least 6x its function's
    timeout (Lambda refuses a mapping below 1x; AWS advises 6x), every queue keeps a message longer than
    (MaxReceiveCount + 1) visibility timeouts (or a message that keeps failing expires before it reaches the
    DLQ, and the DLQ alarm never fires), every DLQ keeps messages longer than its source, all within SQS's
    limits."""
    queues = _of_type(transformed, "AWS::SQS::Queue")
    names = _timed_parameters(transformed, queues)
    assert {"DetectionTimeout", "RecognitionTimeout", "MaxReceiveCount"} <= set(names)
    assert len(names) == 3, names  # a new one must be iterated here as well
    functions = {mapping["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]:
                 mapping["Properties"]["FunctionName"]["Ref"].removesuffix(f"Alias{ALIAS}")
                 for mapping in _of_type(transformed, "AWS::Lambda::EventSourceMapping").values()}
    assert sorted(functions) == ["IngestQueue", "RequestQueue"]
    params = transformed["Parameters"]
    combinations = 0
    for detection in _allowed(params["DetectionTimeout"]):
        for recognition in _allowed(params["RecognitionTimeout"]):
            for receives in _allowed(params["MaxReceiveCount"]):
                values = _parameter_values(transformed, DetectionTimeout=detection, RecognitionTimeout=recognition,
                                           MaxReceiveCount=receives)
                props = {name: _resolve(transformed, q["Properties"], values) for name, q in queues.items()}
                for queue, function in functions.items():
                    timeout = int(_resolve(transformed, transformed["Resources"][function]["Properties"]["Timeout"],
                                           values))
                    assert int(props[queue]["VisibilityTimeout"]) >= 6 * timeout, (queue, values)
                for name, queue_props in props.items():
                    visibility = int(queue_props.get("VisibilityTimeout", 30))  # SQS's default
                    retention = int(queue_props["MessageRetentionPeriod"])
                    assert visibility <= 43200 and 60 <= retention <= 1209600, (name, values)
                    if "RedrivePolicy" in queue_props:
                        redrive = queue_props["RedrivePolicy"]
                        dlq = props[redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]]
                        assert retention > (int(redrive["maxReceiveCount"]) + 1) * visibility, (name, values)
                        assert int(dlq["MessageRetentionPeriod"]) > retention, (name, values)
                combinations += 1
    assert combinations == 11 * 12 * 20


def test_queues_dead_letter_size_and_encryption(transformed: Template) -> None:
    queues = _of_type(transformed, "AWS::SQS::Queue")
    # AWS: at least 5 for a queue a Lambda function polls (throttled or cold-start receives count too)
    assert transformed["Parameters"]["MaxReceiveCount"]["Default"] >= 5
    assert MAX_QUEUE_MESSAGE_BYTES == 262144  # SQS's classic 256 KiB
    for source, dlq in (("RequestQueue", "RequestDeadLetterQueue"), ("ResponseQueue", "ResponseDeadLetterQueue"),
                        ("IngestQueue", "IngestDeadLetterQueue")):
        props = queues[source]["Properties"]
        assert props["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq, "Arn"]},
                                          "maxReceiveCount": {"Ref": "MaxReceiveCount"}}
        assert props["MaximumMessageSize"] == MAX_QUEUE_MESSAGE_BYTES
        # retention, the DLQ's above its source's: test_queue_timings_hold_for_every_allowed_value
    assert all(q["Properties"]["SqsManagedSseEnabled"] is True for q in queues.values())


def _denies_insecure(document: dict[str, Any]) -> bool:
    return any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
               for s in document["Statement"])


def test_every_queue_the_bucket_and_the_alarm_topic_refuse_plain_http(transformed: Template) -> None:
    covered = {q["Ref"] for res in _of_type(transformed, "AWS::SQS::QueuePolicy").values()
               if _denies_insecure(res["Properties"]["PolicyDocument"]) for q in res["Properties"]["Queues"]}
    assert covered == set(_of_type(transformed, "AWS::SQS::Queue"))
    bucket_policies = _of_type(transformed, "AWS::S3::BucketPolicy").values()
    assert any(p["Properties"]["Bucket"] == {"Ref": "Bucket"} and _denies_insecure(p["Properties"]["PolicyDocument"])
               for p in bucket_policies)
    topics = {t["Ref"] for res in _of_type(transformed, "AWS::SNS::TopicPolicy").values()
              if _denies_insecure(res["Properties"]["PolicyDocument"]) for t in res["Properties"]["Topics"]}
    assert topics == set(_of_type(transformed, "AWS::SNS::Topic"))


def test_bucket_private_versioned_encrypted_with_expiry(transformed: Template) -> None:
    props = transformed["Resources"]["Bucket"]["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    [encryption] = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert all(props["PublicAccessBlockConfiguration"].values()) and len(props["PublicAccessBlockConfiguration"]) == 4
    rules = {rule.get("Prefix"): rule for rule in props["LifecycleConfiguration"]["Rules"]}
    assert rules["crops/"]["ExpirationInDays"] == 1
    assert rules["results/"]["ExpirationInDays"] == {"Ref": "ResultsRetentionDays"}
    assert "ExpirationInDays" not in rules["gallery/"]  # the gallery itself never expires


def test_kept_faces_expire_by_their_own_rules_known_and_unknown_apart(transformed: Template) -> None:
    rules = {rule.get("Prefix"): rule for rule in
             transformed["Resources"]["Bucket"]["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert rules["faces/known/"]["ExpirationInDays"] == {"Ref": "KnownFacesRetentionDays"}
    assert rules["faces/unknown/"]["ExpirationInDays"] == {"Ref": "UnknownFacesRetentionDays"}
    assert rules["faces/known/"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
    parameters = transformed["Parameters"]
    # people who never enrolled are kept for less time than people who did
    assert parameters["UnknownFacesRetentionDays"]["Default"] < parameters["KnownFacesRetentionDays"]["Default"]
    assert _function_env(transformed, "RecognitionFunction")["FACEPIPE_KEEP_FACES"] == {"Ref": "KeepFaces"}


def test_only_recognition_may_write_faces_and_only_by_put(transformed: Template) -> None:
    def puts(function: str) -> set[str]:
        role = transformed["Resources"][_role_id(transformed, function)]["Properties"]
        return {json.dumps(resource, sort_keys=True) for s in _statements(role["Policies"])
                if "s3:PutObject" in _list(s["Action"]) for resource in _list(s["Resource"])}

    faces = json.dumps({"Fn::Sub": "${Bucket.Arn}/faces/*"}, sort_keys=True)
    assert faces in puts("RecognitionFunction") and faces not in puts("DetectionFunction")
    role = transformed["Resources"][_role_id(transformed, "RecognitionFunction")]["Properties"]
    on_faces = [s for s in _statements(role["Policies"]) if faces in {json.dumps(r, sort_keys=True)
                                                                        for r in _list(s["Resource"])}]
    assert [_list(s["Action"]) for s in on_faces] == [["s3:PutObject"]]


def test_log_groups_with_retention(transformed: Template) -> None:
    groups = _of_type(transformed, "AWS::Logs::LogGroup")
    assert all(g["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"} for g in groups.values())
    for function in HANDLERS:
        log_group = transformed["Resources"][function]["Properties"]["LoggingConfig"]["LogGroup"]
        assert log_group["Ref"] in groups


# --- least privilege ------------------------------------------------------------------------------


def _role_id(transformed: Template, function: str) -> str:
    return str(transformed["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0])


def _statements(policies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # a conditional statement counts with its content (the reply_to one)
    return [s.get("Fn::If", [None, s])[1] for p in policies for s in p["PolicyDocument"]["Statement"]]


def test_function_roles_are_scoped(transformed: Template) -> None:
    assert set(_of_type(transformed, "AWS::IAM::Role")) == {_role_id(transformed, f) for f in HANDLERS} | {"DeviceRole"}
    for function in HANDLERS:
        props = transformed["Resources"][_role_id(transformed, function)]["Properties"]
        # only the basic logging policy is attached by ARN (no account-wide SQS or S3 policy)
        assert [arn.rsplit("/", 1)[-1] for arn in props["ManagedPolicyArns"]] == ["AWSLambdaBasicExecutionRole"]
        for statement in _statements(props["Policies"]):
            assert statement["Resource"] != "*", statement
            assert not any(action.endswith(":*") for action in _list(statement["Action"])), statement


# What each role may do to which queue; besides these, a role names only the bucket and parameters.
ROLE_QUEUES = {
    "DetectionFunction": {
        "RequestQueue": {"sqs:SendMessage*"},
        "IngestQueue": {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                        "sqs:GetQueueAttributes"},
    },
    "RecognitionFunction": {
        "RequestQueue": {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                         "sqs:GetQueueAttributes"},
        "ResponseQueue": {"sqs:SendMessage*"},
    },
}


@pytest.mark.parametrize("function", sorted(ROLE_QUEUES))
def test_each_role_touches_only_its_own_queues_and_the_bucket(transformed: Template, function: str) -> None:
    role_id = transformed["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]
    queues = set(_of_type(transformed, "AWS::SQS::Queue"))
    touched: dict[str, set[str]] = {}
    for statement in _statements(transformed["Resources"][role_id]["Properties"]["Policies"]):
        named = _refs(statement["Resource"])
        assert named <= queues | {"Bucket"} | set(transformed["Parameters"]), statement
        for resource in named - set(transformed["Parameters"]):
            touched.setdefault(resource, set()).update(_list(statement["Action"]))
    assert {name: actions for name, actions in touched.items() if name in queues} == ROLE_QUEUES[function]
    assert all(action.startswith("s3:") for action in touched.get("Bucket", set()))


def test_recognition_may_list_only_the_keys_it_reads(transformed: Template) -> None:
    """ListBucket only makes a missing gallery a 404, not a 403; scoped by s3:prefix to the gallery key (S3 checks
    the key asked for), it lets the function list neither results/ nor crops/ nor anything else."""
    role_id = transformed["Resources"]["RecognitionFunction"]["Properties"]["Role"]["Fn::GetAtt"][0]
    listing = [s for s in _statements(transformed["Resources"][role_id]["Properties"]["Policies"])
               if "s3:ListBucket" in _list(s["Action"])]
    assert [s["Resource"] for s in listing] == [{"Fn::GetAtt": ["Bucket", "Arn"]}]
    [statement] = listing
    assert statement["Condition"] == {"StringEquals": {"s3:prefix": {"Ref": "GalleryKey"}}}
    env = _function_env(transformed, "RecognitionFunction")
    assert env["FACEPIPE_GALLERY_URI"] == {"Fn::Sub": "s3://${Bucket}/${GalleryKey}"}  # the key it reads
    # no wildcard can be slipped into the exact gallery key
    gallery_key = transformed["Parameters"]["GalleryKey"]["AllowedPattern"]
    assert not re.fullmatch(gallery_key, "gallery/*") and not re.fullmatch(gallery_key, "gallery/?")
    for function in HANDLERS:  # and no other statement of either role lists anything
        role = transformed["Resources"][transformed["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]]
        others = [s for s in _statements(role["Properties"]["Policies"]) if s is not statement]
        assert not any(a.startswith("s3:List") for s in others for a in _list(s["Action"])), function


# CloudFormation names a queue without QueueName <stack>-<LogicalId>-<suffix>; a stack name is letters,
# digits and hyphens, starting with a letter (up to 128 characters), the suffix letters and digits.
STACK_NAMES = ["facepipe", "facepipe-prod", "f", "Facepipe-answers", "a" * 128]


def test_reply_to_prefix_can_never_cover_the_stacks_own_queues(transformed: Template) -> None:
    """Devices may receive from and the recognizer send to every queue named ReplyToPrefix*: a prefix
    that also matched the stack's own queues would hand devices the request queue (or a DLQ)."""
    queues = _of_type(transformed, "AWS::SQS::Queue")
    assert all("QueueName" not in q["Properties"] for q in queues.values())  # all named by CloudFormation
    pattern = transformed["Parameters"]["ReplyToPrefix"]["AllowedPattern"]
    for stack in STACK_NAMES:
        for logical_id in queues:
            name = f"{stack}-{logical_id}-1A2b3C4d5E6f"[:80]
            covering = [name[:n] for n in range(1, len(name) + 1)]  # every prefix that would cover it
            assert not [p for p in covering if re.fullmatch(pattern, p)], (stack, logical_id)
    # ... while a usable per-device prefix passes, and empty still switches reply_to off
    for good in ("facepipe_answers-", "facepipe-prod_reply-", "_", ""):
        assert re.fullmatch(pattern, good), good
    assert not _holds(transformed, "HasReplyToPrefix", _parameter_values(transformed))


@pytest.mark.parametrize("prefix", ["facepipe-", "facepipe-Request", "facepipe-RequestQueue-", "f"])
def test_a_reply_to_prefix_covering_stack_queues_is_refused_before_anything_is_created(
    template: Template, prefix: str
) -> None:
    # the local stack's check of parameter values (CloudFormation's AllowedPattern, which moto skips)
    with pytest.raises(ValueError, match="ReplyToPrefix = .*AllowedPattern"):
        parameter_values(template, {"ReplyToPrefix": prefix})
    assert parameter_values(template, {"ReplyToPrefix": "facepipe_answers-"})["ReplyToPrefix"] == "facepipe_answers-"
    # cfn-lint (`sam validate --lint`) refuses such a Default too
    declared = '  ReplyToPrefix:\n    Type: String\n    Default: ""'
    assert declared in TEMPLATE_TEXT
    bad = TEMPLATE_TEXT.replace(declared, declared.replace('""', f'"{prefix}"'))
    default_line = TEMPLATE_TEXT[: TEMPLATE_TEXT.index(declared)].count("\n") + 3
    assert f"E2015 Default should be allowed by AllowedPattern (line {default_line})" in _errors(bad)


def test_edge_device_policy_invokes_the_url_and_reads_answers_only(transformed: Template) -> None:
    listed = transformed["Resources"]["EdgeDevicePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    # image events name their own device and reply_to: no grant where devices are bound (BindsDevices)
    [conditional] = [s["Fn::If"] for s in listed if "Fn::If" in s]
    assert conditional[:2] == ["BindsDevices", {"Ref": "AWS::NoValue"}] and conditional[2]["Sid"] == "SendImageEvents"
    statements = [s for s in listed if "Fn::If" not in s] + [conditional[2]]
    by_sid = {s["Sid"]: s for s in statements}
    assert set(by_sid) == {"UploadFrames", "SendImageEvents", "ReadAnswers"}
    upload = by_sid["UploadFrames"]
    assert set(upload["Action"]) == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    # IAM matches function ARNs exactly: the alias the URL serves, not the bare function or its versions
    assert upload["Resource"] == transformed["Resources"]["DetectionFunctionUrl"]["Properties"]["TargetFunctionArn"]
    assert upload["Resource"] == {"Ref": f"DetectionFunctionAlias{ALIAS}"}
    answers = by_sid["ReadAnswers"]
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"} <= set(answers["Action"])
    assert all(action.startswith("sqs:") for action in answers["Action"])
    # the shared queue only: a device's own queue is in its user's policy
    # (cloud/operator/devices.py), never ReplyToPrefix*
    assert _refs(answers["Resource"]) == {"ResponseQueue"}
    senders = [s for s in statements if any("SendMessage" in action for action in _list(s["Action"]))]
    assert senders == [by_sid["SendImageEvents"]]  # image events to the ingest queue, nothing else
    assert by_sid["SendImageEvents"]["Action"] == "sqs:SendMessage"
    assert by_sid["SendImageEvents"]["Resource"] == {"Fn::GetAtt": ["IngestQueue", "Arn"]}


# --- alarms ---------------------------------------------------------------------------------------


def _alarm_on(tpl: Template, namespace: str, metric: str, dimensions: list[dict[str, Any]]) -> dict[str, Any]:
    """The one alarm on this metric of this resource."""
    alarms = [a["Properties"] for a in _of_type(tpl, "AWS::CloudWatch::Alarm").values()
              if (a["Properties"].get("Namespace"), a["Properties"].get("MetricName")) == (namespace, metric)
              and a["Properties"]["Dimensions"] == dimensions]
    assert len(alarms) == 1, f"{len(alarms)} alarms on {namespace} {metric} {dimensions}"
    return alarms[0]


def _fires_above_zero(alarm: dict[str, Any], statistic: str) -> bool:
    return (alarm["Statistic"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        statistic, 0, "GreaterThanThreshold")


def test_every_dead_letter_queue_has_an_alarm(transformed: Template) -> None:
    queues = _of_type(transformed, "AWS::SQS::Queue")
    dlqs = {q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
            for q in queues.values() if "RedrivePolicy" in q["Properties"]}
    assert dlqs == {"RequestDeadLetterQueue", "ResponseDeadLetterQueue", "IngestDeadLetterQueue"}
    for dlq in dlqs:
        alarm = _alarm_on(transformed, "AWS/SQS", "ApproximateNumberOfMessagesVisible",
                          [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq, "QueueName"]}}])
        assert _fires_above_zero(alarm, "Maximum"), dlq


@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
@pytest.mark.parametrize("function", sorted(HANDLERS))
def test_every_function_has_error_and_throttle_alarms(transformed: Template, function: str, metric: str) -> None:
    # FunctionName alone: every version and alias added up
    alarm = _alarm_on(transformed, "AWS/Lambda", metric, [{"Name": "FunctionName", "Value": {"Ref": function}}])
    assert _fires_above_zero(alarm, "Sum")


def test_request_queue_backlog_alarm(transformed: Template) -> None:
    alarm = _alarm_on(transformed, "AWS/SQS", "ApproximateAgeOfOldestMessage",
                      [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["RequestQueue", "QueueName"]}}])
    assert (alarm["Statistic"], alarm["ComparisonOperator"]) == ("Maximum", "GreaterThanThreshold")
    assert alarm["Threshold"] == {"Ref": "RequestQueueAgeAlarmSeconds"}
    param = transformed["Parameters"]["RequestQueueAgeAlarmSeconds"]
    # by default: when the edge daemon has given up waiting for the answer
    assert param["Default"] == ResponsesConfig.model_fields["answer_timeout_s"].default
    # a threshold must be reachable before requests expire, whatever the recognition timeout
    retention = transformed["Resources"]["RequestQueue"]["Properties"]["MessageRetentionPeriod"]
    for timeout in _allowed(transformed["Parameters"]["RecognitionTimeout"]):
        values = _parameter_values(transformed, RecognitionTimeout=timeout)
        assert param["MaxValue"] <= _resolve(transformed, retention, values)


def test_detection_5xx_alarm_reads_the_metric_the_handler_emits(transformed: Template) -> None:
    # The handler answers its own failures (500, 503), which Lambda's Errors never counts.
    handler = importlib.import_module(HANDLERS["DetectionFunction"].rpartition(".")[0])
    alarm = transformed["Resources"]["DetectionFailedAlarm"]["Properties"]
    [expression] = [m for m in alarm["Metrics"] if m.get("ReturnData", True)]
    stats = {m["Id"]: m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m}
    assert set(re.findall(r"\b[a-z]\w*\b", expression["Expression"])) >= set(stats)  # all of them counted
    statuses = set()
    for stat in stats.values():
        metric = stat["Metric"]
        assert metric["Namespace"] == handler.metrics.namespace
        assert metric["Namespace"] == _function_env(transformed, "DetectionFunction")["POWERTOOLS_METRICS_NAMESPACE"]
        assert metric["MetricName"] == "Failed"
        dimensions = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
        assert set(dimensions) == {"service", "status"}  # the full set, or CloudWatch finds no such metric
        assert dimensions["service"] == handler.metrics.service
        statuses.add(dimensions["status"])
        assert stat["Stat"] == "Sum"
    assert statuses == {"500", "503"}
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")


def test_every_alarm_notifies_the_encrypted_topic(transformed: Template) -> None:
    alarms = _of_type(transformed, "AWS::CloudWatch::Alarm")
    assert len(alarms) == 9  # 3 DLQs, backlog, 5 function alarms
    policy = next(p["Properties"] for p in _of_type(transformed, "AWS::SNS::TopicPolicy").values()
                  if p["Properties"]["Topics"] == [{"Ref": "AlarmTopic"}])
    [publish] = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert publish["Principal"] == {"Service": "cloudwatch.amazonaws.com"} and publish["Action"] == "sns:Publish"
    source = publish["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"]
    assert source.endswith(":alarm:${AWS::StackName}-*")
    for name, alarm in alarms.items():
        props = alarm["Properties"]
        assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        assert props["TreatMissingData"] == "notBreaching", name  # an idle queue or function publishes nothing
        assert props["AlarmName"]["Fn::Sub"].startswith("${AWS::StackName}-"), name  # what the topic lets publish
    # CloudWatch cannot use the AWS managed key alias/aws/sns: a key of the stack's own, granting it
    topic = transformed["Resources"]["AlarmTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Ref": "AlarmTopicKey"}
    key = transformed["Resources"]["AlarmTopicKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    [grant] = [s for s in key["KeyPolicy"]["Statement"] if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert set(grant["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    # the key serves this account's (and stack's) alarms only, as the topic does: no confused deputy
    assert grant["Condition"] == publish["Condition"]
    assert publish["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}


def _rules_refuse(tpl: Template, values: dict[str, str]) -> list[str]:
    """The template Rules whose assertions fail for these parameter values, as CloudFormation checks them
    (before creating or changing anything)."""

    def holds(expr: Any) -> bool:
        (function, args), = expr.items()
        if function == "Fn::Not":
            return not holds(args[0])
        if function == "Fn::And":
            return all(holds(arg) for arg in args)
        if function == "Fn::Or":
            return any(holds(arg) for arg in args)
        if function == "Fn::Equals":
            return str(_resolve(tpl, args[0], values)) == str(_resolve(tpl, args[1], values))
        raise AssertionError(f"unexpected rule function {function}")

    return [name for name, rule in tpl.get("Rules", {}).items()
            if ("RuleCondition" not in rule or holds(rule["RuleCondition"]))
            and not all(holds(assertion["Assert"]) for assertion in rule["Assertions"])]


def test_a_public_url_with_device_queues_is_refused(transformed: Template) -> None:
    # With auth NONE nobody is bound to a device, so X-Reply-To could name any device's queue from the internet.
    for auth in transformed["Parameters"]["FunctionUrlAuthType"]["AllowedValues"]:
        for prefix in ("", "facepipe_answers-"):
            refused = _rules_refuse(transformed, _parameter_values(transformed, FunctionUrlAuthType=auth,
                                                                   ReplyToPrefix=prefix))
            assert bool(refused) == (auth == "NONE" and prefix != ""), (auth, prefix, refused)


def test_alarm_email_subscription_is_optional(transformed: Template) -> None:
    subscriptions = _of_type(transformed, "AWS::SNS::Subscription")
    assert [(s.get("Condition"), s["Properties"]) for s in subscriptions.values()] == [
        ("HasAlarmEmail", {"TopicArn": {"Ref": "AlarmTopic"}, "Protocol": "email", "Endpoint": {"Ref": "AlarmEmail"}})]
    param = transformed["Parameters"]["AlarmEmail"]
    assert param["Default"] == ""
    assert not _holds(transformed, "HasAlarmEmail", _parameter_values(transformed))
    assert _holds(transformed, "HasAlarmEmail", _parameter_values(transformed, AlarmEmail="ops@example.com"))
    assert re.fullmatch(param["AllowedPattern"], "ops@example.com") and re.fullmatch(param["AllowedPattern"], "")
    assert not re.fullmatch(param["AllowedPattern"], "ops at example.com")


# --- outputs --------------------------------------------------------------------------------------


def test_outputs_give_the_client_and_the_operator_everything(transformed: Template) -> None:
    outputs = transformed["Outputs"]
    expected = {
        "FunctionUrl": {"Fn::GetAtt": ["DetectionFunctionUrl", "FunctionUrl"]},
        "RequestQueueUrl": {"Ref": "RequestQueue"},
        "RequestDeadLetterQueueUrl": {"Ref": "RequestDeadLetterQueue"},
        "ResponseQueueUrl": {"Ref": "ResponseQueue"},
        "IngestQueueUrl": {"Ref": "IngestQueue"},
        "IngestDeadLetterQueueUrl": {"Ref": "IngestDeadLetterQueue"},
        "ResponseDeadLetterQueueUrl": {"Ref": "ResponseDeadLetterQueue"},
        "BucketName": {"Ref": "Bucket"},
        "EdgeDevicePolicyArn": {"Ref": "EdgeDevicePolicy"},
        "AlarmTopicArn": {"Ref": "AlarmTopic"},
    }
    assert {name: outputs[name]["Value"] for name in expected if name in outputs} == expected
    assert outputs["GalleryUri"]["Value"] == transformed["Resources"]["DetectionFunction"]["Properties"][
        "Environment"]["Variables"]["FACEPIPE_GALLERY_URI"]


# --- environment variables = cloud.functions.settings fields ------------------------------------------------


def _function_env(transformed: Template, function: str) -> dict[str, Any]:
    return dict(transformed["Resources"][function]["Properties"]["Environment"]["Variables"])


@pytest.mark.parametrize("function", sorted(HANDLERS))
def test_every_facepipe_variable_is_a_settings_field(transformed: Template, function: str) -> None:
    env = _function_env(transformed, function) | dockerfile_env()
    names = {name for name in env if name.startswith("FACEPIPE_")}
    fields = set(Settings.model_fields)
    assert {name.removeprefix("FACEPIPE_").lower() for name in names} <= fields, names
    # what differs per deployment comes from the stack; the engine and its networks' folder from the image
    for required in ("request_queue_url", "response_queue_url", "bucket", "gallery_uri", "engine", "models_dir"):
        assert f"FACEPIPE_{required.upper()}" in names, required
    assert env["FACEPIPE_REQUEST_QUEUE_URL"] == {"Ref": "RequestQueue"}
    assert env["FACEPIPE_RESPONSE_QUEUE_URL"] == {"Ref": "ResponseQueue"}
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "facepipe"


def test_template_values_are_valid_settings(transformed: Template) -> None:
    """Resolve each variable with parameter defaults and boundary values; Settings must accept them all."""
    params = transformed["Parameters"]
    env = _function_env(transformed, "DetectionFunction")
    stand_ins = {"RequestQueue": "https://sqs.us-east-1.amazonaws.com/123456789012/req",
                 "ResponseQueue": "https://sqs.us-east-1.amazonaws.com/123456789012/resp", "Bucket": "facepipe-bucket",
                 "AWS::StackName": "facepipe", "AWS::AccountId": "123456789012",
                 "DeviceRole": "facepipe-DeviceRole-ABC123"}

    def resolve(value: Any, overrides: dict[str, str]) -> str | None:
        if isinstance(value, str):
            return value
        if value == {"Ref": "AWS::NoValue"}:
            return None
        if "Ref" in value:
            name = value["Ref"]
            if name in overrides or name in stand_ins:
                return overrides.get(name) or stand_ins[name]
            return str(params[name].get("Default", ""))
        if "Fn::If" in value:  # empty parameter -> variable left out (the code's default applies)
            condition, then, otherwise = value["Fn::If"]
            if condition == "BindsDevices":  # AWS_IAM (the default) and a ReplyToPrefix
                bound = params["FunctionUrlAuthType"]["Default"] == "AWS_IAM" and overrides.get("ReplyToPrefix")
                return resolve(then if bound else otherwise, overrides)
            return resolve(then, overrides) or None
        if "Fn::Sub" in value:
            return re.sub(r"\$\{([\w:]+)\}", lambda m: resolve({"Ref": m.group(1)}, overrides) or "",
                          value["Fn::Sub"])
        raise AssertionError(f"unexpected intrinsic {value}")

    cases: list[dict[str, str]] = [{}]
    cases += [{"Threads": "1"}, {"Threads": "6"}]
    cases += [{"PersistResults": value} for value in params["PersistResults"]["AllowedValues"]]
    cases += [{"MatchThreshold": "0.95", "MinFaceProbability": "0.85", "ReplyToPrefix": "facepipe_answers-"}]
    for overrides in cases:
        values = {k.removeprefix("FACEPIPE_").lower(): resolve(v, overrides) for k, v in env.items()
                  if k.startswith("FACEPIPE_")}
        if not overrides:  # by default the threads follow the function's memory (cloud/functions/settings.py)
            assert values["threads"] is None
        settings = Settings(**{k: v for k, v in values.items() if v is not None})
        assert settings.max_message_bytes == MAX_QUEUE_MESSAGE_BYTES  # = the queues' MaximumMessageSize
        assert settings.gallery_uri.startswith("s3://facepipe-bucket/gallery/")
        # devices are bound exactly when the URL is signed and per-device queues exist
        assert settings.bind_devices is bool(overrides.get("ReplyToPrefix"))
        assert settings.device_user_prefix == "facepipe-device-"
        assert settings.device_account == "123456789012"
        assert settings.device_role_name == ("facepipe-DeviceRole-ABC123" if settings.bind_devices else "")


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
            assert face.crop_s3_key == f"crops/{request.device_id}/{request.request_id}/{index}.jpg"


def test_device_role_invokes_the_url_only_and_trusts_sessions_named_after_the_cert(transformed: Template) -> None:
    resources = transformed["Resources"]
    role, policy = resources["DeviceRole"], resources["DeviceRolePolicy"]
    output = transformed["Outputs"]["DeviceRoleArn"]
    assert role["Condition"] == policy["Condition"] == output["Condition"] == "BindsDevices"
    assert "RoleName" not in role["Properties"]  # generated: no CAPABILITY_NAMED_IAM; devices.py finds it by path
    assert role["Properties"]["Path"] == {"Fn::Sub": "/facepipe/${AWS::StackName}/device-role/"}
    assert "Policies" not in role["Properties"] and "ManagedPolicyArns" not in role["Properties"]
    assert policy["Properties"]["Roles"] == [{"Ref": "DeviceRole"}]
    [upload] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert set(upload["Action"]) == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    assert upload["Resource"] == {"Ref": f"DetectionFunctionAlias{ALIAS}"}  # no queue: each queue's policy says
    trust = {s["Sid"]: s for s in role["Properties"]["AssumeRolePolicyDocument"]["Statement"]}
    anywhere = trust["RolesAnywhereDeviceCertificates"]
    assert anywhere["Principal"] == {"Service": "rolesanywhere.amazonaws.com"}
    assert anywhere["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"},
                                                     "sts:RoleSessionName": "${aws:PrincipalTag/x509Subject/CN}"}
    root = {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
    assert trust["AccountBrokers"]["Principal"] == {"AWS": root}
    env = _function_env(transformed, "DetectionFunction")
    no_value = {"Ref": "AWS::NoValue"}
    assert env["FACEPIPE_DEVICE_ROLE_NAME"] == {"Fn::If": ["BindsDevices", {"Ref": "DeviceRole"}, no_value]}
    assert env["FACEPIPE_DEVICE_ACCOUNT"] == {"Ref": "AWS::AccountId"}


def test_evidence_answers_only_where_callers_are_signed(transformed: Template) -> None:
    """Answer schema 2 names the nearest enrolled people of any face sent: not to anyone on a public URL."""
    env = _function_env(transformed, "DetectionFunction")["FACEPIPE_EVIDENCE_ANSWERS"]
    assert env == {"Fn::If": ["IsPublicUrl", "false", "true"]}
    assert transformed["Conditions"]["IsPublicUrl"] == {"Fn::Equals": [{"Ref": "FunctionUrlAuthType"}, "NONE"]}
