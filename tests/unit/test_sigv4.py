"""SigV4 verification of the local Function URL against requests signed by botocore itself."""

from __future__ import annotations

import hashlib
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from cloud.emulator.sigv4 import verify
from cloud.functions.contracts import (
    HEADER_ANSWER_SCHEMA,
    HEADER_DEVICE_ID,
    HEADER_FRAME_TIMESTAMP,
    HEADER_REPLY_TO,
    HEADER_REQUEST_ID,
)
from edge_client.config import EndpointConfig
from edge_client.uploader import Signer, Uploader

KEY, SECRET, REGION = "AKIALOCALTEST0000001", "local-secret-for-unit-tests", "eu-west-1"
HOST = "127.0.0.1:8123"
BODY = b"\xff\xd8\xff\xe0 not really a jpeg, bytes are bytes"


def sign(
    path: str = "/?b=2&a=1",
    body: bytes = BODY,
    *,
    secret: str = SECRET,
    key: str = KEY,
    service: str = "lambda",
    region: str = REGION,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Headers as a client would send them: botocore-signed plus the Host header of the wire."""
    request = AWSRequest(method="POST", url=f"http://{HOST}{path}", data=body,
                         headers={"Content-Type": "image/jpeg", **(extra or {})})
    SigV4Auth(Credentials(key, secret), service, region).add_auth(request)
    return {"Host": HOST, **dict(request.headers.items())}


def check(headers: dict[str, str], path: str = "/?b=2&a=1", body: bytes = BODY, method: str = "POST",
          now: datetime | None = None):
    return verify(method=method, raw_path=path, headers=headers, body=body,
                  access_key=KEY, secret_key=SECRET, region=REGION, now=now)


def test_a_botocore_signed_request_verifies() -> None:
    verdict = check(sign())
    assert verdict.ok, verdict.reason
    assert verdict.access_key == KEY


def test_signed_content_sha256_header_verifies() -> None:
    headers = sign(extra={"X-Amz-Content-SHA256": hashlib.sha256(BODY).hexdigest()})
    assert check(headers).ok


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Host": HOST}, "missing Authorization"),
        ({"Host": HOST, "Authorization": "Bearer abc"}, "is not AWS4-HMAC-SHA256"),
        (sign(secret="not-the-secret"), "signature does not match"),
        (sign(key="AKIASOMEONEELSE00001"), "unknown access key"),
        (sign(service="execute-api"), "service 'lambda'"),
        (sign(region="us-east-1"), "region 'us-east-1'"),
    ],
    ids=["unsigned", "other-scheme", "wrong-secret", "other-key", "other-service", "other-region"],
)
def test_rejections_name_their_reason(headers: dict[str, str], reason: str) -> None:
    # Signed at collection: judged at their signing time, however long the suite ran before this test.
    signed = headers.get("X-Amz-Date")
    verdict = check(headers, now=datetime.strptime(signed, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) if signed else None)
    assert not verdict.ok
    assert reason in verdict.reason


def test_altered_body_path_query_or_method_fail() -> None:
    headers = sign()
    assert "signature does not match" in check(headers, body=BODY + b"x").reason
    assert "signature does not match" in check(headers, path="/other?b=2&a=1").reason
    assert "signature does not match" in check(headers, path="/?b=3&a=1").reason
    assert "signature does not match" in check(headers, method="PUT").reason


def test_query_parameter_order_does_not_matter() -> None:
    assert check(sign(path="/?b=2&a=1"), path="/?a=1&b=2").ok


def test_clock_skew_over_five_minutes_fails() -> None:
    headers = sign()
    signed_at = datetime.strptime(headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert check(headers, now=signed_at + timedelta(minutes=4, seconds=59)).ok
    assert "away from server time" in check(headers, now=signed_at + timedelta(minutes=5, seconds=1)).reason
    assert "away from server time" in check(headers, now=signed_at - timedelta(minutes=6)).reason


def test_content_sha256_must_match_body() -> None:
    headers = sign(extra={"X-Amz-Content-SHA256": hashlib.sha256(b"other").hexdigest()})
    assert "x-amz-content-sha256" in check(headers).reason


def test_host_and_date_must_be_signed() -> None:
    headers = sign()
    headers["Authorization"] = headers["Authorization"].replace("SignedHeaders=content-type;host;x-amz-date",
                                                                "SignedHeaders=content-type;x-amz-date")
    assert "must include host and x-amz-date" in check(headers).reason


def test_a_signed_header_that_was_changed_fails() -> None:
    headers = sign()
    headers["Content-Type"] = "text/plain"
    assert "signature does not match" in check(headers).reason


CONTRACT_HEADERS = {
    HEADER_REQUEST_ID: "0b9a6c3e-4f4a-4a53-9e43-5d0f1f6c2a11", HEADER_DEVICE_ID: "cam-1",
    HEADER_FRAME_TIMESTAMP: "1700000000.250000", HEADER_REPLY_TO: "facepipe-replies-cam-1", HEADER_ANSWER_SCHEMA: "2",
}


@pytest.mark.parametrize("added", list(CONTRACT_HEADERS))
def test_a_handler_header_added_after_signing_is_refused(added: str) -> None:
    # GIVEN a request signed with every contract header but one, which is then added unsigned
    headers = sign(extra={name: value for name, value in CONTRACT_HEADERS.items() if name != added})
    assert check(headers).ok
    headers[added] = CONTRACT_HEADERS[added]
    # THEN the signature alone would still verify, but the unsigned header is refused by name
    verdict = check(headers)
    assert not verdict.ok
    assert verdict.reason == f"headers not covered by the signature (SignedHeaders): {added.lower()}"


def test_signed_contract_headers_verify_and_a_changed_one_fails() -> None:
    headers = sign(extra=CONTRACT_HEADERS)
    assert check(headers).ok
    headers[HEADER_REPLY_TO] = "someone-elses-queue"
    assert "signature does not match" in check(headers).reason


def test_the_edge_uploader_signs_every_header_it_sends() -> None:
    # GIVEN the edge daemon's own signer and frame headers (with a reply-to queue)
    config = EndpointConfig(url=f"http://{HOST}/", auth="aws_iam", region=REGION)
    signer = Signer(REGION, credentials=Credentials(KEY, SECRET))
    uploader = Uploader(config, "cam-1", "facepipe-replies-cam-1", threading.Event(), signer)
    headers = signer.sign("POST", config.url, BODY, uploader.frame_headers(str(uuid.uuid4()), 1700000000.25))
    # THEN all four contract headers are in SignedHeaders and the local check accepts the request
    signed = headers["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {name.lower() for name in CONTRACT_HEADERS} <= set(signed)
    verdict = check({"Host": HOST, **headers}, path="/")
    assert verdict.ok, verdict.reason


def test_any_key_the_lookup_knows_verifies_with_its_own_secret() -> None:
    """Devices: each access key has its own secret (cloud/emulator/stack.py reads them from moto's IAM)."""
    secrets = {"AKIADEVICEA000000001": "secret-of-a", "AKIADEVICEB000000001": "secret-of-b"}

    for key, secret in secrets.items():
        verdict = verify(method="POST", raw_path="/", headers=sign("/", key=key, secret=secret), body=BODY,
                         region=REGION, secret_for=secrets.get)
        assert verdict.ok and verdict.access_key == key, verdict.reason
    # A's key id with B's secret, and a key the lookup does not know (a removed device's)
    forged = sign("/", key="AKIADEVICEA000000001", secret="secret-of-b")
    assert "signature does not match" in verify(method="POST", raw_path="/", headers=forged, body=BODY,
                                                region=REGION, secret_for=secrets.get).reason
    gone = sign("/", key="AKIADEVICEC000000001", secret="secret-of-c")
    assert "unknown access key" in verify(method="POST", raw_path="/", headers=gone, body=BODY, region=REGION,
                                          secret_for=secrets.get).reason
