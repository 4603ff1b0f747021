"""template.yaml as plain CloudFormation, offline: the SAM transform run the way `sam deploy` runs it.

The deployed stack and the local stack both come from this one template, so queue names, redrive,
timeouts and the bucket's settings have one source of truth.
"""

from __future__ import annotations

import copy
import os
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
