"""SigV4 verification for the local Function URL (auth type AWS_IAM).

The canonical request is rebuilt from what was received with botocore's own `SigV4Auth`, so the
local check and a real client agree on every canonicalisation detail; only the signature
comparison and the envelope checks (key id, scope, signed headers, clock skew, payload hash)
are ours.

A header the client did not sign could have been added or changed by anyone on the way, so every
header the handler acts on (request id, device id, frame timestamp, reply-to) must be among the
signed ones when it is present; otherwise a captured request could be replayed with another
reply-to queue or device id.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from cloud.functions.contracts import (
    HEADER_ANSWER_SCHEMA,
    HEADER_DEVICE_ID,
    HEADER_FRAME_TIMESTAMP,
    HEADER_REPLY_TO,
    HEADER_REQUEST_ID,
)

SERVICE = "lambda"
ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_SECONDS = 300  # AWS rejects requests whose x-amz-date is more than 5 minutes off
# Headers the detection handler reads: unsigned, they could be added after signing.
MUST_SIGN_WHEN_PRESENT = tuple(
    name.lower()
    for name in (HEADER_REQUEST_ID, HEADER_DEVICE_ID, HEADER_FRAME_TIMESTAMP, HEADER_REPLY_TO, HEADER_ANSWER_SCHEMA)
)

_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*$"
)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""
    access_key: str = ""


def _fail(reason: str) -> Verdict:
    return Verdict(ok=False, reason=reason)


def verify(
    *,
    method: str,
    raw_path: str,
    headers: Mapping[str, str],
    body: bytes,
    access_key: str = "",
    secret_key: str = "",
    region: str,
    now: datetime | None = None,
    secret_for: Callable[[str], str | None] | None = None,
) -> Verdict:
    """Check a received request's SigV4 signature against the one known credential pair, or, with
    `secret_for`, against the secret it returns for the request's key id (None: an unknown key).

    `raw_path` is the request target as received (path and query, still percent-encoded);
    `headers` are the received headers (any case; one value per name).
    """
    lower = {name.lower(): value for name, value in headers.items()}
    authorization = lower.get("authorization", "")
    if not authorization:
        return _fail("missing Authorization header (request is not SigV4-signed)")
    match = _AUTH_RE.match(authorization.strip())
    if match is None:
        return _fail(f"Authorization header is not {ALGORITHM} with Credential, SignedHeaders, Signature")

    parts = match["credential"].split("/")
    if len(parts) != 5:
        return _fail("Credential must be <key id>/<date>/<region>/<service>/aws4_request")
    key_id, scope_date, scope_region, scope_service, terminator = parts
    if secret_for is not None:
        known_secret = secret_for(key_id)
    else:
        known_secret = secret_key if hmac.compare_digest(key_id, access_key) else None
    if not known_secret:
        return _fail(f"unknown access key id {key_id!r}")
    secret_key = known_secret
    if scope_service != SERVICE or terminator != "aws4_request":
        return _fail(f"credential scope must name service {SERVICE!r} and end in aws4_request")
    if scope_region != region:
        return _fail(f"credential scope region {scope_region!r} is not {region!r}")

    signed = match["signed"].split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        return _fail("SignedHeaders must include host and x-amz-date")
    if signed != sorted(signed):
        return _fail("SignedHeaders must be sorted")
    missing = [name for name in signed if name not in lower]
    if missing:
        return _fail(f"signed headers missing from the request: {', '.join(missing)}")
    unsigned = [name for name in MUST_SIGN_WHEN_PRESENT if name in lower and name not in signed]
    if unsigned:
        return _fail(f"headers not covered by the signature (SignedHeaders): {', '.join(unsigned)}")

    amz_date = lower["x-amz-date"]
    try:
        signed_at = datetime.strptime(amz_date, SIGV4_TIMESTAMP).replace(tzinfo=UTC)
    except ValueError:
        return _fail(f"x-amz-date {amz_date!r} is not YYYYMMDDTHHMMSSZ")
    if scope_date != amz_date[:8]:
        return _fail("credential scope date does not match x-amz-date")
    skew = abs(((now or datetime.now(UTC)) - signed_at).total_seconds())
    if skew > MAX_SKEW_SECONDS:
        return _fail(f"x-amz-date is {skew:.0f} s away from server time (limit {MAX_SKEW_SECONDS} s)")

    claimed_hash = lower.get("x-amz-content-sha256")
    if claimed_hash is not None and not hmac.compare_digest(claimed_hash, hashlib.sha256(body).hexdigest()):
        return _fail("x-amz-content-sha256 does not match the body")

    # Only the headers the client signed take part, exactly as it listed them.
    request = AWSRequest(
        method=method.upper(),
        url=f"http://{lower['host']}{raw_path}",
        headers={name: lower[name] for name in signed},
        data=body,
    )
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(access_key, secret_key), SERVICE, region)
    if signer.signed_headers(signer.headers_to_sign(request)) != match["signed"]:
        return _fail("SignedHeaders lists headers that cannot be signed (e.g. user-agent, expect)")
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if not hmac.compare_digest(expected, match["signature"]):
        return _fail("signature does not match (wrong secret key, or the request was altered)")
    return Verdict(ok=True, access_key=key_id)
