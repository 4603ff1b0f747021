"""The local Function URL's Lambda semantics over real HTTP, with stand-in functions: event shape
(payload format 2.0), response mapping, 502 on a crash, the 6 MB limit, auth NONE."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from cloud.emulator.function_url import FunctionUrlServer

Function = Callable[[dict[str, Any], Any], Any]


@pytest.fixture
def serve() -> Iterator[Callable[[Function], str]]:
    servers: list[FunctionUrlServer] = []

    def start(function: Function) -> str:
        server = FunctionUrlServer(function, auth="none", max_body_bytes=1024)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    remaining = context.get_remaining_time_in_millis()
    return {"statusCode": 200, "body": json.dumps({"event": event, "remaining": remaining})}


def test_binary_post_becomes_a_base64_payload_2_event(serve: Callable[[Function], str]) -> None:
    url = serve(echo)
    body = bytes(range(256))
    reply = requests.post(url + "frames?b=2&a=1&a=3", data=body,
                          headers={"Content-Type": "image/jpeg", "X-Device-Id": "cam-1"}, timeout=10)
    event = reply.json()["event"]
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["rawPath"] == "/frames" and event["rawQueryString"] == "b=2&a=1&a=3"
    assert event["queryStringParameters"] == {"b": "2", "a": "1,3"}
    assert event["headers"]["x-device-id"] == "cam-1"  # lower-cased names
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == body
    http = event["requestContext"]["http"]
    assert http["method"] == "POST" and http["sourceIp"] == "127.0.0.1" and http["path"] == "/frames"
    assert event["requestContext"]["requestId"] == reply.headers["x-amzn-RequestId"]
    assert event["requestContext"]["timeEpoch"] > 1_600_000_000_000
    assert 0 < reply.json()["remaining"] <= 30_000


def test_text_body_stays_text(serve: Callable[[Function], str]) -> None:
    event = requests.post(serve(echo), data="héllo", headers={"Content-Type": "text/plain; charset=utf-8"},
                          timeout=10).json()["event"]
    assert event["isBase64Encoded"] is False and event["body"] == "héllo"


def test_return_value_mapping(serve: Callable[[Function], str]) -> None:
    plain = requests.get(serve(lambda e, c: {"answer": 42}), timeout=10)
    assert plain.status_code == 200 and plain.json() == {"answer": 42}
    assert plain.headers["Content-Type"] == "application/json"
    binary = requests.get(serve(lambda e, c: {"statusCode": 201, "headers": {"content-type": "image/png"},
                                              "body": base64.b64encode(b"\x89PNG").decode(),
                                              "isBase64Encoded": True}), timeout=10)
    assert binary.status_code == 201 and binary.content == b"\x89PNG"
    assert binary.headers["Content-Type"] == "image/png"


def test_a_crashing_function_is_a_502_and_the_server_stays_up(serve: Callable[[Function], str]) -> None:
    calls = 0

    def crash_once(event: dict[str, Any], context: Any) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("stand-in crash")
        return {"statusCode": 204}

    url = serve(crash_once)
    reply = requests.post(url, data=b"x", timeout=10)
    assert reply.status_code == 502 and reply.json()["error"] == "Internal Server Error"
    assert requests.post(url, data=b"x", timeout=10).status_code == 204


def test_body_over_the_limit_is_413_without_invoking(serve: Callable[[Function], str]) -> None:
    invoked: list[int] = []
    url = serve(lambda e, c: invoked.append(1))
    reply = requests.post(url, data=b"x" * 1025, timeout=10)
    assert reply.status_code == 413 and "exceeds the 1024-byte limit" in reply.json()["error"]
    assert requests.post(url, data=b"x" * 1024, timeout=10).status_code == 200
    assert invoked == [1]


def test_aws_iam_event_names_the_signer_as_aws_does() -> None:
    """authorizer.iam carries the signer's accessKey, accountId, callerId, userArn, userId (AWS's field names):
    the stack's own key is the account root; other keys are whoever `callers` says (moto's IAM in the stack)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from cloud.emulator.function_url import Caller

    device = Caller("AKIADEVICE0000000001", "device-secret", "arn:aws:iam::123456789012:user/p/s-device-cam", "AIDAX")
    server = FunctionUrlServer(echo, access_key="AKIAADMIN00000000001", secret_key="admin-secret",
                               callers=lambda key: device if key == device.access_key else None)
    url = server.start()
    try:
        def iam_of(key: str, secret: str) -> Any:
            request = AWSRequest(method="POST", url=url, data=b"x", headers={"Content-Type": "image/jpeg"})
            SigV4Auth(Credentials(key, secret), "lambda", "us-east-1").add_auth(request)
            reply = requests.post(url, data=b"x", headers=dict(request.headers.items()), timeout=10)
            return reply.json()["event"]["requestContext"]["authorizer"]["iam"] if reply.ok else reply.status_code

        assert iam_of(device.access_key, "device-secret") == {
            "accessKey": device.access_key, "accountId": "123456789012", "callerId": "AIDAX",
            "userArn": device.user_arn, "userId": "AIDAX"}
        assert iam_of("AKIAADMIN00000000001", "admin-secret")["userArn"] == "arn:aws:iam::123456789012:root"
        assert iam_of(device.access_key, "admin-secret") == 403  # a known key with another's secret
        assert iam_of("AKIAUNKNOWN000000001", "whatever") == 403
    finally:
        server.stop()
