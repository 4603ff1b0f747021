"""Devices as identities on `facepipe local up --devices`: two cameras made with `facepipe device add` (the CLI in
its own process, through moto's IAM and SQS APIs), each signing with its own access key.

What one camera can do to the other: send as it (403), steer answers to its queue (403), read its answers
(its policy does not allow it; moto enforces no IAM policy, so that part is shown by evaluating the policy the
CLI attached, read back from moto's IAM). A removed camera's key is refused at the URL.
"""

from __future__ import annotations

import base64
import configparser
import fnmatch
import io
import json
import os
import re
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from cloud.functions.contracts import HEADER_DEVICE_ID, HEADER_REPLY_TO, HEADER_REQUEST_ID
from tests.conftest import ENROLLED
from tests.local_up import LocalUp, local_up
from tests.photos import REPO, packaged

pytestmark = pytest.mark.slow
PHOTO_A, PHOTO_B = packaged(ENROLLED["barack_obama"]), packaged(ENROLLED["joe_biden"])


@dataclass
class Camera:
    name: str
    access_key: str
    secret_key: str
    queue_url: str
    reply_to: str
    output: str  # what `device add` printed


def facepipe(stack: LocalUp, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloud.operator.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**stack.env(), "PYTHONPATH": str(REPO)}, timeout=120)


def add_camera(stack: LocalUp, name: str, folder: Path) -> Camera:
    credentials = folder / f"{name}.credentials"
    done = facepipe(stack, "device", "add", name, "--credentials-file", str(credentials))
    assert done.returncode == 0, done.stderr
    keys = configparser.ConfigParser()
    keys.read(credentials)
    yaml_line = {m[1]: m[2] for m in re.finditer(r"^\s+(device_id|queue_url|reply_to): (\S+)$", done.stdout, re.M)}
    assert yaml_line["device_id"] == name
    return Camera(name, keys["default"]["aws_access_key_id"], keys["default"]["aws_secret_access_key"],
                  yaml_line["queue_url"], yaml_line["reply_to"], done.stdout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalUp]:
    with local_up("--devices", "--prefix", f"dev-{uuid.uuid4().hex[:6]}-", "--detection-concurrency", "1",
                  "--recognition-concurrency", "1") as up:
        up.enroll({"barack_obama": [PHOTO_A], "joe_biden": [PHOTO_B]}, tmp_path_factory.mktemp("enroll"))
        yield up


@pytest.fixture(scope="module")
def cameras(stack: LocalUp, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Camera]:
    folder = tmp_path_factory.mktemp("devices")
    return {name: add_camera(stack, name, folder) for name in ("cam-a", "cam-b")}


def post(stack: LocalUp, signer: tuple[str, ...], device_id: str, photo: Path,
         headers: dict[str, str] | None = None) -> requests.Response:
    """A raw upload as the edge sends it, SigV4-signed (service lambda) with `signer`'s key (and session token)."""
    url, body = stack.exports["FACEPIPE_FUNCTION_URL"], photo.read_bytes()
    request = AWSRequest(method="POST", url=url, data=body, headers={
        "Content-Type": "image/jpeg", HEADER_REQUEST_ID: str(uuid.uuid4()), HEADER_DEVICE_ID: device_id,
        **(headers or {})})
    SigV4Auth(Credentials(*signer), "lambda", stack.exports["AWS_REGION"]).add_auth(request)
    return requests.post(url, data=body, headers=dict(request.headers.items()), timeout=120)


def keys(camera: Camera) -> tuple[str, str]:
    return camera.access_key, camera.secret_key


def sqs_as(stack: LocalUp, key: str, secret: str, token: str | None = None) -> Any:
    import boto3

    return boto3.session.Session().client(
        "sqs", endpoint_url=stack.exports["AWS_ENDPOINT_URL"], region_name=stack.exports["AWS_REGION"],
        aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token)


def camera_sqs(stack: LocalUp, camera: Camera) -> Any:
    return sqs_as(stack, camera.access_key, camera.secret_key)


def answers(sqs: Any, queue_url: str, wanted: int, timeout: float = 90) -> list[dict[str, Any]]:
    """Receive and delete until `wanted` answers arrived (then one more short look for strays)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=1 if len(got) >= wanted else 2).get("Messages", [])
        for message in messages:
            got.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        if len(got) >= wanted and not messages:
            break
    return got


def test_add_prints_edge_yaml_lines_and_keeps_the_secret_in_a_0600_file(cameras: dict[str, Camera]) -> None:
    a = cameras["cam-a"]
    assert a.reply_to.endswith("reply-cam-a") and a.queue_url.endswith("/" + a.reply_to)
    assert a.secret_key not in a.output
    files = [line for line in a.output.splitlines() if "credentials (mode 0600):" in line]
    path = Path(files[0].split(": ", 1)[1].split(";")[0])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_cannot_send_as_b(stack: LocalUp, cameras: dict[str, Camera]) -> None:
    a, b = cameras["cam-a"], cameras["cam-b"]
    refused = post(stack, keys(a), b.name, PHOTO_A)
    assert refused.status_code == 403, refused.text
    assert "is not the caller's device 'cam-a'" in refused.json()["error"]


def test_a_cannot_send_answers_to_bs_queue(stack: LocalUp, cameras: dict[str, Camera]) -> None:
    a, b = cameras["cam-a"], cameras["cam-b"]
    refused = post(stack, keys(a), a.name, PHOTO_A, {HEADER_REPLY_TO: b.reply_to})
    assert refused.status_code == 403, refused.text


def test_the_stacks_own_credentials_are_not_a_device(stack: LocalUp, cameras: dict[str, Camera]) -> None:
    admin = stack.exports["AWS_ACCESS_KEY_ID"], stack.exports["AWS_SECRET_ACCESS_KEY"]
    refused = post(stack, admin, "cam-a", PHOTO_A)
    assert refused.status_code == 403 and "not a device" in refused.json()["error"]


def test_each_cameras_answers_arrive_only_on_its_own_queue(stack: LocalUp, cameras: dict[str, Camera]) -> None:
    a, b = cameras["cam-a"], cameras["cam-b"]
    sent = {}
    for camera, photo in ((a, PHOTO_A), (b, PHOTO_B)):
        reply = post(stack, keys(camera), camera.name, photo)  # no X-Reply-To: detection picks the queue
        assert reply.status_code == 202, reply.text
        sent[camera.name] = reply.json()["request_id"]
    at_a, at_b = answers(camera_sqs(stack, a), a.queue_url, 1), answers(camera_sqs(stack, b), b.queue_url, 1)
    assert [(m["request_id"], m["device_id"], m["result"]) for m in at_a] == [(sent["cam-a"], "cam-a", "barack_obama")]
    assert [(m["request_id"], m["device_id"], m["result"]) for m in at_b] == [(sent["cam-b"], "cam-b", "joe_biden")]
    shared = stack.client("sqs").receive_message(QueueUrl=stack.exports["FACEPIPE_RESPONSE_QUEUE_URL"],
                                                 WaitTimeSeconds=1).get("Messages", [])
    assert shared == []


def allows(policy: dict[str, Any], action: str, resource: str) -> bool:
    """IAM's answer for an identity policy of Allow statements only: some statement matches both the action
    (case-insensitive, wildcards) and the resource (wildcards). moto has no simulate_principal_policy and
    its SQS ignores policies, so this is how the test asks the question."""
    assert all(s["Effect"] == "Allow" and "NotAction" not in s and "NotResource" not in s and "Condition" not in s
               for s in policy["Statement"]), "the evaluator handles plain Allow statements only"

    def listed(value: str | list[str]) -> list[str]:
        return [value] if isinstance(value, str) else value

    return any(any(fnmatch.fnmatchcase(action.lower(), pattern.lower()) for pattern in listed(s["Action"]))
               and any(fnmatch.fnmatchcase(resource, pattern) for pattern in listed(s["Resource"]))
               for s in policy["Statement"])


def test_a_may_read_its_own_queue_and_no_other(stack: LocalUp, cameras: dict[str, Camera]) -> None:
    iam, sqs = stack.client("iam"), stack.client("sqs")
    a, b = cameras["cam-a"], cameras["cam-b"]
    user = iam.get_user(UserName=f"{stack.exports['FACEPIPE_STACK_NAME']}-device-cam-a")["User"]["UserName"]
    [name] = iam.list_user_policies(UserName=user)["PolicyNames"]
    assert iam.list_attached_user_policies(UserName=user)["AttachedPolicies"] == []
    policy = iam.get_user_policy(UserName=user, PolicyName=name)["PolicyDocument"]
    policy = json.loads(policy) if isinstance(policy, str) else policy

    def arn(url: str) -> str:
        return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])

    own, other, shared = arn(a.queue_url), arn(b.queue_url), arn(stack.exports["FACEPIPE_RESPONSE_QUEUE_URL"])
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
        assert allows(policy, action, own)
        assert not allows(policy, action, other) and not allows(policy, action, shared)
    assert not allows(policy, "sqs:SendMessage", own) and not allows(policy, "sqs:ChangeMessageVisibility", other)
    assert not allows(policy, "sqs:ReceiveMessage", arn(stack.exports["FACEPIPE_REQUEST_QUEUE_URL"]))
    [invoke] = [s for s in policy["Statement"] if "lambda:InvokeFunctionUrl" in s["Action"]]
    assert invoke["Resource"].endswith(f":function:{stack.exports['FACEPIPE_STACK_NAME']}-DetectionFunction:live")
    assert allows(policy, "lambda:InvokeFunction", invoke["Resource"])
    assert not allows(policy, "lambda:InvokeFunction", invoke["Resource"].removesuffix(":live"))


def test_the_edge_daemon_runs_on_what_device_add_gave_it(stack: LocalUp, tmp_path: Path) -> None:
    """`facepipe-edge run` with the printed edge.yaml lines as they are and the credentials file through the AWS
    chain (AWS_SHARED_CREDENTIALS_FILE, no keys in the environment or the YAML): every frame answered on its queue."""
    camera = add_camera(stack, "cam-edge", tmp_path)
    printed = camera.output.split("edge.yaml lines:\n", 1)[1].split("credentials (mode 0600)", 1)[0]
    config = yaml.safe_load(printed)
    assert config == {"device_id": "cam-edge",
                      "responses": {"queue_url": camera.queue_url, "reply_to": camera.reply_to}}
    stdout, answers = run_edge_daemon(stack, tmp_path, config, ("obama2.jpg", "obama3.jpg"),
                                      {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "cam-edge.credentials"),
                                       "AWS_CONFIG_FILE": os.devnull})
    assert len(answers) == 2 and {(a["device_id"], a["result"]) for a in answers} == {("cam-edge", "barack_obama")}
    counts = {key: int(value) for key, value in re.findall(r"(sent|answered|unanswered|rejected) (\d+)", stdout)}
    assert counts["sent"] == counts["answered"] == 2 and counts["unanswered"] == counts["rejected"] == 0


def run_edge_daemon(stack: LocalUp, tmp_path: Path, config: dict[str, Any], photos: tuple[str, ...],
                    credentials_env: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
    """`facepipe-edge run` to the end of a folder camera of packaged photos, with `config` (device_id, responses)
    completed for the stack and only `credentials_env` for AWS credentials; its stdout and its JSONL answers."""
    (tmp_path / "camera").mkdir()
    for name in photos:
        (tmp_path / "camera" / name).symlink_to(packaged(f"face_recognition/{name}"))
    config = config | {
        "camera": {"source": str(tmp_path / "camera"), "loop": False, "fps": 0},
        "throttle": {"max_fps": 20, "motion": {"enabled": False}},
        "endpoint": {"url": stack.exports["FACEPIPE_FUNCTION_URL"], "auth": "aws_iam",
                     "region": stack.exports["AWS_REGION"]},
        "responses": config["responses"] | {"endpoint_url": stack.exports["AWS_ENDPOINT_URL"], "wait_s": 1},
        "spool": {"directory": str(tmp_path / "spool")}, "metrics": {"listen": None},
        "outputs": {"jsonl": {"path": str(tmp_path / "answers.jsonl")}}, "stop_timeout_s": 5}
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FACEPIPE_"))}
    env |= credentials_env | {"AWS_EC2_METADATA_DISABLED": "true", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "edge_client", "run", "--config", str(tmp_path / "edge.yaml")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    return run.stdout, [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]


def session_of(stack: LocalUp, role_arn: str, name: str) -> tuple[str, str, str]:
    """Temporary credentials as a broker (or IAM Roles Anywhere) gets them: a session of the device role named `name`,
    from moto's STS with the stack's admin credentials."""
    import boto3

    sts = boto3.session.Session().client(
        "sts", endpoint_url=stack.exports["AWS_ENDPOINT_URL"], region_name=stack.exports["AWS_REGION"],
        aws_access_key_id=stack.exports["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack.exports["AWS_SECRET_ACCESS_KEY"])
    issued = sts.assume_role(RoleArn=role_arn, RoleSessionName=name)["Credentials"]
    return issued["AccessKeyId"], issued["SecretAccessKey"], issued["SessionToken"]


@pytest.fixture(scope="module")
def temporary(stack: LocalUp) -> dict[str, str]:
    """`facepipe device add cam-t --temporary`: its printed edge.yaml lines and role."""
    done = facepipe(stack, "device", "add", "cam-t", "--temporary")
    assert done.returncode == 0, done.stderr
    fields = {m[1]: m[2] for m in re.finditer(r"^\s+(device_id|queue_url|reply_to): (\S+)$", done.stdout, re.M)}
    [role_arn] = set(re.findall(r"--role-arn (\S+)", done.stdout))
    return {**fields, "role_arn": role_arn, "output": done.stdout}


def test_a_session_named_after_a_device_is_that_device(stack: LocalUp, cameras: dict[str, Camera],
                                                       temporary: dict[str, str]) -> None:
    """Temporary credentials (moto STS): answered on its own queue; it cannot send as A nor have A's queue answer."""
    assert temporary["device_id"] == "cam-t" and temporary["reply_to"].endswith("reply-cam-t")
    assert ":role/facepipe/" in temporary["role_arn"] and "credential_process" in temporary["output"]
    key, secret, token = session_of(stack, temporary["role_arn"], "cam-t")

    def post_as_session(device_id: str, headers: dict[str, str] | None = None, signer_token: str | None = token,
                        ) -> requests.Response:
        url, body = stack.exports["FACEPIPE_FUNCTION_URL"], PHOTO_A.read_bytes()
        request = AWSRequest(method="POST", url=url, data=body, headers={
            "Content-Type": "image/jpeg", HEADER_REQUEST_ID: str(uuid.uuid4()), HEADER_DEVICE_ID: device_id,
            **(headers or {})})
        SigV4Auth(Credentials(key, secret, signer_token), "lambda", stack.exports["AWS_REGION"]).add_auth(request)
        return requests.post(url, data=body, headers=dict(request.headers.items()), timeout=120)

    accepted = post_as_session("cam-t")
    assert accepted.status_code == 202, accepted.text
    at_t = answers(sqs_as(stack, key, secret, token), temporary["queue_url"], 1)
    assert [(m["request_id"], m["device_id"], m["result"]) for m in at_t] == [
        (accepted.json()["request_id"], "cam-t", "barack_obama")]
    a = cameras["cam-a"]
    as_a = post_as_session(a.name)
    assert as_a.status_code == 403 and "is not the caller's device 'cam-t'" in as_a.json()["error"]
    to_a = post_as_session("cam-t", {HEADER_REPLY_TO: a.reply_to})
    assert to_a.status_code == 403 and "is not the queue of device 'cam-t'" in to_a.json()["error"]
    untokened = post_as_session("cam-t", signer_token=None)  # the session's key and secret without its token
    assert untokened.status_code == 403 and "security token" in untokened.json()["error"]
    other = post(stack, session_of(stack, temporary["role_arn"], "not-a-device@x"), "cam-t", PHOTO_A)
    assert other.status_code == 403 and "not a device" in other.json()["error"]  # no device has that name


def test_a_temporary_devices_queue_is_read_by_its_session_only_over_tls(stack: LocalUp,
                                                                          temporary: dict[str, str]) -> None:
    sqs = stack.client("sqs")
    policy = json.loads(sqs.get_queue_attributes(QueueUrl=temporary["queue_url"], AttributeNames=["Policy"])
                        ["Attributes"]["Policy"])
    deny, read = policy["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    session = temporary["role_arn"].replace(":iam::", ":sts::").split(":role/")[0]
    assert read["Principal"] == {"AWS": f"{session}:assumed-role/{temporary['role_arn'].rsplit('/', 1)[1]}/cam-t"}


def image_event(device: str, reply_to: str) -> dict[str, Any]:
    """Biden's photo inline, scaled to fit a queue message."""
    from PIL import Image

    photo = Image.open(PHOTO_B).convert("RGB")
    photo.thumbnail((640, 640))
    jpeg = io.BytesIO()
    photo.save(jpeg, "JPEG", quality=90)
    return {"request_id": str(uuid.uuid4()), "device_id": device, "reply_to": reply_to,
            "image_b64": base64.b64encode(jpeg.getvalue()).decode("ascii")}


def test_the_ingest_door_answers_on_a_devices_queue_only_for_that_device(
        stack: LocalUp, cameras: dict[str, Camera], temporary: dict[str, str]) -> None:
    """Image events name their own device and reply queue: A sending one as B, to B's queue, is not answered there
    (nor is a session sending as A); B's own event is. The senders are told apart by SQS's SenderId."""
    a, b = cameras["cam-a"], cameras["cam-b"]
    ingest = stack.exports["FACEPIPE_INGEST_QUEUE_URL"]
    forged = image_event(b.name, b.reply_to)
    sqs_as(stack, *keys(a)).send_message(QueueUrl=ingest, MessageBody=json.dumps(forged))
    forged_by_session = image_event(a.name, a.reply_to)
    sqs_as(stack, *session_of(stack, temporary["role_arn"], "cam-t")).send_message(
        QueueUrl=ingest, MessageBody=json.dumps(forged_by_session))
    genuine = image_event(b.name, b.reply_to)
    sqs_as(stack, *keys(b)).send_message(QueueUrl=ingest, MessageBody=json.dumps(genuine))
    at_b = answers(camera_sqs(stack, b), b.queue_url, 1)
    time.sleep(3)  # the forged events were sent first: had they been detected, their answers would be here by now
    at_b += answers(camera_sqs(stack, b), b.queue_url, 0, timeout=3)
    at_a = answers(camera_sqs(stack, a), a.queue_url, 0, timeout=3)
    assert [(m["request_id"], m["result"]) for m in at_b] == [(genuine["request_id"], "joe_biden")]
    assert at_a == []


def test_the_edge_daemon_runs_on_a_credential_process_session(stack: LocalUp, temporary: dict[str, str],
                                                              tmp_path: Path) -> None:
    """`facepipe-edge run` signing with temporary credentials from an AWS profile's credential_process (as IAM Roles
    Anywhere's signing helper supplies them): every frame answered on the device's queue."""
    key, secret, token = session_of(stack, temporary["role_arn"], "cam-t")
    issued = tmp_path / "session.json"
    issued.write_text(json.dumps({"Version": 1, "AccessKeyId": key, "SecretAccessKey": secret, "SessionToken": token}))
    (tmp_path / "config").write_text(f"[default]\ncredential_process = cat {issued}\n")
    config = {"device_id": "cam-t",
              "responses": {"queue_url": temporary["queue_url"], "reply_to": temporary["reply_to"]}}
    _, answered = run_edge_daemon(stack, tmp_path, config, ("obama2.jpg",),
                                  {"AWS_CONFIG_FILE": str(tmp_path / "config"),
                                   "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
    assert [(a["device_id"], a["result"]) for a in answered] == [("cam-t", "barack_obama")]


def test_list_shows_both(stack: LocalUp, cameras: dict[str, Camera]) -> None:
    listed = facepipe(stack, "device", "list")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    by_name = {row[0]: row for row in rows}
    assert {"cam-a", "cam-b"} <= set(by_name)
    for name in ("cam-a", "cam-b"):
        assert by_name[name][2] == f"keys {cameras[name].access_key}"
        assert by_name[name][3] == f"queue {cameras[name].queue_url}"


def test_removed_device_is_gone_and_refused(stack: LocalUp, cameras: dict[str, Camera]) -> None:
    b = cameras["cam-b"]
    assert post(stack, keys(b), b.name, PHOTO_B).status_code == 202  # before: accepted
    answers(camera_sqs(stack, b), b.queue_url, 1)
    done = facepipe(stack, "device", "remove", "cam-b")
    assert done.returncode == 0, done.stderr
    iam, sqs = stack.client("iam"), stack.client("sqs")
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_user(UserName=f"{stack.exports['FACEPIPE_STACK_NAME']}-device-cam-b")
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName=b.reply_to)
    refused = post(stack, keys(b), b.name, PHOTO_B)
    assert refused.status_code == 403 and "unknown access key" in refused.json()["error"]
    assert "cam-b" not in [line.split("\t")[0] for line in facepipe(stack, "device", "list").stdout.splitlines()]
    assert post(stack, keys(cameras["cam-a"]), "cam-a", PHOTO_A).status_code == 202  # A unaffected
