"""Upload: POST one JPEG frame to the detection Function URL, SigV4-signed, with retries.

Retried (exponential backoff, full jitter): timeouts, connection errors, 429 and 5xx. Not retried:
any other 4xx (the request itself is wrong; sending it again cannot help). Credentials come from
botocore's standard chain and are re-read per request, so rotated/refreshed keys are picked up.
"""

from __future__ import annotations

import enum
import json
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.session import Session as BotocoreSession

from cloud.functions.contracts import (
    EVIDENCE_SCHEMA,
    HEADER_ANSWER_SCHEMA,
    HEADER_DEVICE_ID,
    HEADER_FRAME_TIMESTAMP,
    HEADER_REPLY_TO,
    HEADER_REQUEST_ID,
    DetectAccepted,
    ErrorBody,
)
from edge_client.config import EndpointConfig

log = logging.getLogger(__name__)


class CredentialsMissing(RuntimeError):
    """auth aws_iam but the standard AWS chain has no credentials."""


class Outcome(enum.Enum):
    ACCEPTED = "accepted"  # 2xx: the cloud has the frame, an answer will come on the response queue
    REJECTED = "rejected"  # 4xx other than 429: never retried
    UNREACHABLE = "unreachable"  # retries exhausted (or stopping): keep the frame in the spool


@dataclass(frozen=True)
class UploadResult:
    outcome: Outcome
    status: int | None = None  # last HTTP status, if any
    error: str = ""  # last error, for the log
    attempts: int = 0
    accepted: DetectAccepted | None = None


class Signer:
    """Adds SigV4 headers (service `lambda`) to a request; credentials from the standard chain."""

    def __init__(self, region: str, session: BotocoreSession | None = None, credentials: Credentials | None = None):
        self.region = region
        self._credentials = credentials or (session or BotocoreSession()).get_credentials()
        if self._credentials is None:
            raise CredentialsMissing(
                "no AWS credentials found (standard chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                "~/.aws/credentials, instance role); endpoint.auth is aws_iam"
            )

    def sign(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        SigV4Auth(self._credentials.get_frozen_credentials(), "lambda", self.region).add_auth(request)
        return dict(request.headers.items())


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(max_s, base_s * 2**attempt)] (attempt counts from 0)."""
    return (rng or random).uniform(0.0, min(max_s, base_s * 2**attempt))


def _error_kind(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timeout"
    if isinstance(exc, requests.ConnectionError):
        return "connection"
    return "request"


class Uploader:
    """One instance per daemon; thread-safe (one requests.Session per thread)."""

    def __init__(
        self,
        config: EndpointConfig,
        device_id: str,
        reply_to: str | None,
        stop: threading.Event,
        signer: Signer | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config
        self._device_id = device_id
        self._reply_to = reply_to
        self._stop = stop
        self._signer = signer
        self._on_error = on_error or (lambda kind: None)
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _send(self, method: str, body: bytes, headers: dict[str, str]) -> requests.Response:
        if self._signer is not None:
            headers = self._signer.sign(method, self._config.url, body, headers)
        return self._session().request(
            method, self._config.url, data=body, headers=headers, timeout=self._config.timeout_s
        )

    def frame_headers(self, request_id: str, captured_at: float) -> dict[str, str]:
        headers = {
            "Content-Type": "image/jpeg",
            HEADER_REQUEST_ID: request_id,
            HEADER_DEVICE_ID: self._device_id,
            HEADER_FRAME_TIMESTAMP: f"{captured_at:.6f}",
            # the track decision weighs each face's evidence; a cloud older than it ignores the header
            HEADER_ANSWER_SCHEMA: str(EVIDENCE_SCHEMA),
        }
        if self._reply_to:
            headers[HEADER_REPLY_TO] = self._reply_to
        return headers

    def upload(self, jpeg: bytes, request_id: str, captured_at: float, retry: bool = True) -> UploadResult:
        """POST the frame; retry transient failures unless `retry` is False or the daemon is stopping."""
        retries = self._config.retries
        headers = self.frame_headers(request_id, captured_at)
        last_status: int | None = None
        last_error = ""
        for attempt in range(retries.max_attempts):
            try:
                response = self._send("POST", jpeg, headers)
            except requests.RequestException as exc:
                kind = _error_kind(exc)
                last_status, last_error = None, f"{kind}: {exc}"
            else:
                last_status = response.status_code
                if 200 <= response.status_code < 300:
                    return UploadResult(Outcome.ACCEPTED, response.status_code, attempts=attempt + 1,
                                        accepted=_parse_accepted(response))
                message = _error_message(response)
                if response.status_code != 429 and response.status_code < 500:
                    self._on_error("rejected")
                    return UploadResult(Outcome.REJECTED, response.status_code, message, attempt + 1)
                kind = "throttled" if response.status_code == 429 else "server"
                last_error = f"HTTP {response.status_code}: {message}"
            self._on_error(kind)
            last_attempt = attempt + 1 >= retries.max_attempts
            if last_attempt or not retry or self._stop.is_set():
                return UploadResult(Outcome.UNREACHABLE, last_status, last_error, attempt + 1)
            delay = backoff_delay(attempt, retries.base_s, retries.max_s)
            log.debug("upload %s attempt %d failed (%s); retrying in %.2fs", request_id, attempt + 1, last_error, delay)
            if self._stop.wait(delay):
                return UploadResult(Outcome.UNREACHABLE, last_status, last_error, attempt + 1)
        raise AssertionError("unreachable: max_attempts >= 1")

    def probe(self) -> tuple[bool, str]:
        """One signed GET without a frame: any HTTP answer but 403 means reachable and authorised."""
        try:
            response = self._send("GET", b"", {HEADER_DEVICE_ID: self._device_id})
        except requests.RequestException as exc:
            return False, f"{_error_kind(exc)}: {exc}"
        if response.status_code == 403:
            return False, f"HTTP 403 (signature or permission refused): {_error_message(response)}"
        return True, f"HTTP {response.status_code}"


def _parse_accepted(response: requests.Response) -> DetectAccepted | None:
    try:
        return DetectAccepted.model_validate_json(response.content)
    except ValueError:
        return None


def _error_message(response: requests.Response) -> str:
    try:
        return ErrorBody.model_validate_json(response.content).error
    except ValueError:
        try:
            return str(json.loads(response.content).get("message", response.text[:200]))
        except (ValueError, AttributeError):
            return response.text[:200]
