"""Upload: headers, SigV4 signing, retries with backoff on 5xx/429/timeouts/connection errors, no
retry on other 4xx (real HTTP servers on 127.0.0.1)."""

from __future__ import annotations

import random
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.credentials import Credentials

from cloud.emulator import sigv4
from cloud.functions.contracts import is_valid_request_id
from edge_client.config import EndpointConfig
from edge_client.uploader import CredentialsMissing, Outcome, Signer, Uploader, backoff_delay
from tests.edge.conftest import Scripted, free_port
from tests.photos import packaged

RETRIES = {"max_attempts": 4, "base_s": 0.05, "max_s": 0.2}


def _uploader(url: str, signer: Signer | None = None, reply_to: str | None = None, **endpoint: Any) -> Uploader:
    config = EndpointConfig(url=url, auth="aws_iam" if signer else "none", region="us-east-1",
                            retries=endpoint.pop("retries", RETRIES), **endpoint)
    return Uploader(config, "porch", reply_to, threading.Event(), signer)


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return packaged("face_recognition/obama.jpg").read_bytes()


def test_headers_and_signature_verify(scripted_endpoint: tuple[str, Scripted], jpeg: bytes) -> None:
    url, script = scripted_endpoint
    signer = Signer("us-east-1", credentials=Credentials("AKIDEDGE", "right-secret"))
    request_id = str(uuid.uuid4())
    result = _uploader(url, signer, reply_to="facepipe-reply-porch").upload(jpeg, request_id, 1_700_000_000.25)
    assert result.outcome is Outcome.ACCEPTED and result.attempts == 1
    assert result.accepted is not None and result.accepted.request_id == request_id
    received = script.requests[0]
    headers = received["headers"]
    assert received["body"] == jpeg
    assert headers["X-Request-Id"] == request_id and is_valid_request_id(request_id)
    assert headers["X-Device-Id"] == "porch"
    assert float(headers["X-Frame-Timestamp"]) == 1_700_000_000.25
    assert headers["X-Reply-To"] == "facepipe-reply-porch"
    # The local Function URL's verifier (botocore canonicalisation) accepts it, and only with the right secret.
    def check(secret: str) -> sigv4.Verdict:
        return sigv4.verify(method="POST", raw_path="/", headers=headers, body=jpeg, access_key="AKIDEDGE",
                            secret_key=secret, region="us-east-1", now=datetime.now(UTC))
    assert check("right-secret").ok
    assert not check("wrong-secret").ok


def test_5xx_and_429_are_retried_with_backoff(scripted_endpoint: tuple[str, Scripted], jpeg: bytes) -> None:
    url, script = scripted_endpoint
    script.statuses = [503, 429, 500, 202]
    errors: list[str] = []
    uploader = _uploader(url)
    uploader._on_error = errors.append
    result = uploader.upload(jpeg, str(uuid.uuid4()), time.time())
    assert result.outcome is Outcome.ACCEPTED and result.attempts == 4
    assert errors == ["server", "throttled", "server"]
    ids = {r["headers"]["X-Request-Id"] for r in script.requests}
    assert len(ids) == 1  # a retry is the same request: the cloud can deduplicate


def test_retries_exhausted_is_unreachable(scripted_endpoint: tuple[str, Scripted], jpeg: bytes) -> None:
    url, script = scripted_endpoint
    script.statuses = [502]
    result = _uploader(url).upload(jpeg, str(uuid.uuid4()), time.time())
    assert result.outcome is Outcome.UNREACHABLE and result.attempts == 4 and result.status == 502
    assert len(script.requests) == 4


@pytest.mark.parametrize("status", [400, 403, 413])
def test_other_4xx_is_not_retried(scripted_endpoint: tuple[str, Scripted], jpeg: bytes, status: int) -> None:
    url, script = scripted_endpoint
    script.statuses = [status, 202]
    result = _uploader(url).upload(jpeg, str(uuid.uuid4()), time.time())
    assert result.outcome is Outcome.REJECTED and result.status == status and result.attempts == 1
    assert result.error == f"scripted {status}"  # the ErrorBody message, for the log
    assert len(script.requests) == 1


def test_connection_refused_is_retried_then_unreachable(jpeg: bytes) -> None:
    errors: list[str] = []
    uploader = _uploader(f"http://127.0.0.1:{free_port()}/")
    uploader._on_error = errors.append
    result = uploader.upload(jpeg, str(uuid.uuid4()), time.time())
    assert result.outcome is Outcome.UNREACHABLE and result.attempts == 4
    assert errors == ["connection"] * 4


def test_timeout_is_retried(scripted_endpoint: tuple[str, Scripted], jpeg: bytes) -> None:
    url, script = scripted_endpoint
    script.delay_s = 0.5
    errors: list[str] = []
    uploader = _uploader(url, timeout_s=0.1, retries={"max_attempts": 2, "base_s": 0.01, "max_s": 0.01})
    uploader._on_error = errors.append
    result = uploader.upload(jpeg, str(uuid.uuid4()), time.time())
    assert result.outcome is Outcome.UNREACHABLE and errors == ["timeout", "timeout"]


def test_stop_ends_retrying_at_once(scripted_endpoint: tuple[str, Scripted], jpeg: bytes) -> None:
    url, script = scripted_endpoint
    script.statuses = [503]
    uploader = _uploader(url, retries={"max_attempts": 10, "base_s": 5, "max_s": 5})
    threading.Timer(0.2, uploader._stop.set).start()
    start = time.monotonic()
    result = uploader.upload(jpeg, str(uuid.uuid4()), time.time())
    assert result.outcome is Outcome.UNREACHABLE and time.monotonic() - start < 3
    assert len(script.requests) <= 2


def test_backoff_is_exponential_with_full_jitter() -> None:
    rng = random.Random(7)
    samples = [[backoff_delay(attempt, 0.5, 8.0, rng) for _ in range(500)] for attempt in range(7)]
    caps = [0.5, 1, 2, 4, 8, 8, 8]
    for cap, values in zip(caps, samples, strict=True):
        assert min(values) >= 0 and max(values) <= cap
        assert max(values) > 0.9 * cap and min(values) < 0.1 * cap  # spread over the whole range


def test_signer_without_credentials_says_where_they_come_from(monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.session import Session

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(CredentialsMissing, match="standard chain"):
        Signer("us-east-1", session=Session())
