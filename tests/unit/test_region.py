"""The operator commands read the region as AWS CLI v2 does (--region, AWS_REGION, AWS_DEFAULT_REGION, the
profile's), through cloud.functions.aws.session: with only AWS_REGION set, `facepipe device`, `dlq` and `submit
--stack` find a stack that exists in that region of a moto server (over HTTP) and sign for that region."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from cloud.functions import aws
from cloud.operator.cli import main
from tests.http_server import QuietHandler, serving

STACK_REGION = "eu-west-1"


@pytest.fixture
def no_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No region anywhere: no variables, no profile, empty AWS config files."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "aws-config").write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-config"))
    aws.client.cache_clear()


@pytest.mark.parametrize(("flag", "env", "profile", "expected"), [
    (None, {"AWS_REGION": "eu-west-1"}, None, "eu-west-1"),
    (None, {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "us-west-2"}, "ap-south-1", "eu-west-1"),
    (None, {"AWS_DEFAULT_REGION": "us-west-2"}, "ap-south-1", "us-west-2"),
    (None, {}, "ap-south-1", "ap-south-1"),
    ("ca-central-1", {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "us-west-2"}, "ap-south-1", "ca-central-1"),
    (None, {}, None, None),
])
def test_the_region_in_the_aws_clis_order(no_region: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          flag: str | None, env: dict[str, str], profile: str | None,
                                          expected: str | None) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if profile:
        (tmp_path / "aws-config").write_text(f"[default]\nregion = {profile}\n")
    assert aws.session(flag).region_name == expected
    if flag is None and expected:
        assert aws.client("sqs").meta.region_name == expected  # the handlers' clients too


@pytest.fixture
def stack_in_eu_west_1(no_region: None, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """A stack with the outputs the commands read, in eu-west-1 only; AWS_REGION is the only region setting."""
    for name, value in {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": STACK_REGION}.items():
        monkeypatch.setenv(name, value)
    signed: list[str] = []

    class FunctionUrl(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            signed.append(self.headers.get("Authorization", ""))
            self.send_response(202)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    with serving(FunctionUrl) as url:
        name = f"facepipe-{uuid.uuid4().hex[:8]}"
        queue = {"Type": "AWS::SQS::Queue"}
        template = {
            "Parameters": {"ReplyToPrefix": {"Type": "String", "Default": "facepipe_answers-"}},
            "Resources": {"RequestDeadLetterQueue": queue, "ResponseQueue": queue, "RequestQueue": {
                "Type": "AWS::SQS::Queue", "Properties": {"RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": ["RequestDeadLetterQueue", "Arn"]}, "maxReceiveCount": 5}}}},
            "Outputs": {"RequestQueueUrl": {"Value": {"Ref": "RequestQueue"}},
                        "RequestDeadLetterQueueUrl": {"Value": {"Ref": "RequestDeadLetterQueue"}},
                        "ResponseQueueUrl": {"Value": {"Ref": "ResponseQueue"}},
                        "FunctionUrl": {"Value": url + "/"}, "FunctionUrlAuthType": {"Value": "AWS_IAM"}},
        }
        boto3.client("cloudformation", region_name=STACK_REGION).create_stack(
            StackName=name, TemplateBody=json.dumps(template))
        with pytest.raises(ClientError):  # only there: a command looking in us-east-1 would not find it
            boto3.client("cloudformation", region_name="us-east-1").describe_stacks(StackName=name)
        yield {"name": name, "signed": signed}


def test_device_list_finds_the_stack_in_aws_region(stack_in_eu_west_1: dict, capsys: pytest.CaptureFixture) -> None:
    assert main(["device", "list", "--stack", stack_in_eu_west_1["name"]]) == 0, capsys.readouterr().err


def test_dlq_list_finds_the_stack_in_aws_region(stack_in_eu_west_1: dict, capsys: pytest.CaptureFixture) -> None:
    assert main(["dlq", "list", "--stack", stack_in_eu_west_1["name"]]) == 0, capsys.readouterr().err
    assert "RequestDeadLetterQueue" in capsys.readouterr().out


def test_region_flag_wins_over_the_environment(stack_in_eu_west_1: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    assert main(["device", "list", "--stack", stack_in_eu_west_1["name"]]) == 1
    assert main(["device", "list", "--stack", stack_in_eu_west_1["name"], "--region", STACK_REGION]) == 0


def test_submit_finds_the_stack_and_signs_for_aws_region(stack_in_eu_west_1: dict, tmp_path: Path) -> None:
    from PIL import Image

    photo = tmp_path / "grey.jpg"
    Image.new("RGB", (64, 48), (128, 128, 128)).save(photo)
    # Sent and signed; no recognition behind this URL, so it goes unanswered (exit 1).
    assert main(["submit", "--stack", stack_in_eu_west_1["name"], str(photo), "--via", "url", "--timeout", "1"]) == 1
    [authorization] = stack_in_eu_west_1["signed"]
    assert f"/{STACK_REGION}/lambda/aws4_request" in authorization
