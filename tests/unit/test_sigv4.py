"""SigV4 verification of the local Function URL against requests signed by botocore itself."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from cloud.local.sigv4 import verify

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
