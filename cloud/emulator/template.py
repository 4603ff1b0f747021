"""template.yaml as plain CloudFormation, offline: the SAM transform run the way `sam deploy` runs it.

The deployed stack and the local stack both come from this one template, so queue names, redrive,
timeouts and the bucket's settings have one source of truth.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

from samtranslator.translator.transform import transform as sam_transform
from samtranslator.yaml_helper import yaml_parse

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"
# What `sam build` writes into ImageUri after building Dockerfile.lambda; the transform needs some URI.
PLACEHOLDER_IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/facepipe:built-by-sam"

Template = dict[str, Any]


class _NoManagedPolicies:
    """The translator's lookup of AWS managed policies by name: the template names none, so no IAM call."""

    def load(self) -> dict[str, str]:
        return {}


def load_template(path: Path = TEMPLATE_PATH) -> Template:
    """template.yaml with its short-form intrinsics (`!Ref`, `!GetAtt`, ...) as plain dicts."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the local stack reads the deployment template of a source checkout")
    template: Template = yaml_parse(path.read_text())
    return template


def as_built(template: Template, image_uri: str = PLACEHOLDER_IMAGE_URI) -> Template:
    """The template after `sam build`: every image function built from a Dockerfile gets its ImageUri."""
    built = copy.deepcopy(template)
    for resource in built["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function" and "Dockerfile" in resource.get("Metadata", {}):
            resource["Properties"]["ImageUri"] = image_uri
    return built


def transform(template: Template, region: str = "us-east-1") -> Template:
    """Plain CloudFormation from the SAM template (after `as_built`), as CloudFormation's own transform makes it."""
    saved = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = region  # the translator reads the region (ARN partitions) from here
    try:
        result: Template = sam_transform(copy.deepcopy(template), {}, _NoManagedPolicies())
    finally:
        if saved is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = saved
    return result


# --- what the local stack creates from it ------------------------------------------------------------

LOCAL_TYPES = ("AWS::SQS::Queue", "AWS::S3::Bucket")


def _references(node: Any, found: dict[str, set[str]]) -> None:
    """Collect the names `node` refers to: Ref/GetAtt/Sub targets, FindInMap maps, conditions."""
    if isinstance(node, list):
        for item in node:
            _references(item, found)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "Ref" and isinstance(value, str):
            found["names"].add(value)
        elif key == "Fn::GetAtt":
            found["names"].add(value.split(".")[0] if isinstance(value, str) else value[0])
        elif key == "Fn::Sub":
            text = value if isinstance(value, str) else value[0]
            found["names"].update(name.split(".")[0] for name in re.findall(r"\$\{([^!}][^}]*)\}", text))
        elif key == "Fn::FindInMap":
            found["mappings"].add(value[0])
        elif key == "Fn::If" or (key == "Condition" and isinstance(value, str)):  # not a policy's Condition
            found["conditions"].add(value if isinstance(value, str) else value[0])
        _references(value, found)


def local_subset(template: Template, also_parameters: tuple[str, ...] = ()) -> Template:
    """The transformed template's queues and bucket, with the Parameters, Mappings and Conditions they use
    (plus `also_parameters`, which the local trigger and Function URL read back from the created stack).

    Left out: functions, event source mappings, IAM, alarms, log groups (the local stack runs the handlers
    itself), Outputs (moto
    answers a queue's Ref with an https://sqs.<region>.amazonaws.com URL, not its own endpoint) and the
    TLS-only queue and bucket policies: moto 5.2's CloudFormation has no AWS::SQS::QueuePolicy or
    AWS::S3::BucketPolicy (it warns, skips them and still reports CREATE_COMPLETE), and moto's S3 applies a
    bucket policy's Deny without its aws:SecureTransport condition, so that policy would refuse every request
    of the local stack, which talks plain HTTP on loopback.
    """
    resources = {name: copy.deepcopy(res) for name, res in template["Resources"].items() if res["Type"] in LOCAL_TYPES}
    for res in resources.values():  # a DependsOn on what is left out (the bucket's on IngestQueuePolicy) goes too
        depends = res.pop("DependsOn", [])
        kept = [name for name in ([depends] if isinstance(depends, str) else depends) if name in resources]
        if kept:
            res["DependsOn"] = kept
    found: dict[str, set[str]] = {"names": set(also_parameters), "mappings": set(), "conditions": set()}
    _references(resources, found)
    seen: set[str] = set()
    while found["conditions"] - seen:  # conditions may use parameters and other conditions
        name = min(found["conditions"] - seen)
        seen.add(name)
        _references(template.get("Conditions", {})[name], found)
    parameters = template.get("Parameters", {})
    unknown = {n for n in found["names"] if n not in parameters and n not in resources and not n.startswith("AWS::")}
    if unknown:
        raise ValueError(f"the template's queues and bucket refer to {sorted(unknown)}, which the local stack lacks")
    subset: Template = {
        "AWSTemplateFormatVersion": template.get("AWSTemplateFormatVersion", "2010-09-09"),
        "Description": "facepipe local stack: template.yaml's queues and bucket",
        "Parameters": {name: parameters[name] for name in sorted(found["names"]) if name in parameters},
        "Resources": resources,
    }
    if found["mappings"]:
        subset["Mappings"] = {name: template["Mappings"][name] for name in sorted(found["mappings"])}
    if found["conditions"]:
        subset["Conditions"] = {name: template["Conditions"][name] for name in sorted(found["conditions"])}
    return copy.deepcopy(subset)


def _parameter_error(declared: dict[str, Any], value: str) -> str | None:
    """Why CloudFormation would refuse `value` for a parameter so declared; None if it takes it."""
    allowed = [str(v) for v in declared.get("AllowedValues", [])]
    if allowed and value not in allowed:
        return f"not one of the allowed values {', '.join(allowed)}"
    if declared.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            return "not a number"
        if "MinValue" in declared and number < float(declared["MinValue"]):
            return f"below MinValue {declared['MinValue']}"
        if "MaxValue" in declared and number > float(declared["MaxValue"]):
            return f"above MaxValue {declared['MaxValue']}"
    if "MinLength" in declared and len(value) < int(declared["MinLength"]):
        return f"shorter than MinLength {declared['MinLength']}"
    if "MaxLength" in declared and len(value) > int(declared["MaxLength"]):
        return f"longer than MaxLength {declared['MaxLength']}"
    pattern = declared.get("AllowedPattern")
    if pattern is not None and not re.fullmatch(pattern, value):
        return f"does not match AllowedPattern {pattern}"
    return None


def parameter_values(template: Template, overrides: dict[str, str]) -> dict[str, str]:
    """Every parameter of `template` as CloudFormation takes it: the override, else the template's Default,
    as a string (what a Ref yields). ValueError, in one line, for a value CloudFormation would refuse
    (moto checks none of AllowedValues, MinValue, MaxValue, AllowedPattern)."""
    declared = template.get("Parameters", {})
    extra = set(overrides) - set(declared)
    if extra:
        raise ValueError(f"parameters {sorted(extra)} are not in the template")
    values: dict[str, str] = {}
    for name, declaration in declared.items():
        if name not in overrides and "Default" not in declaration:
            raise ValueError(f"template parameter {name} has no Default and no value was given")
        value = overrides.get(name, str(declaration.get("Default")))
        error = _parameter_error(declaration, value)
        if error:
            raise ValueError(f"template parameter {name} = {value}: {error}")
        values[name] = value
    return values
