"""A local Lambda Function URL: HTTP in, payload-format-2.0 event, the function invoked, HTTP out.

It behaves like the AWS front door in the ways a client can observe: BUFFERED-mode 6 MB request
limit (checked from Content-Length before the body is read), AWS_IAM auth via SigV4 (service
`lambda`) or NONE, 2.0 events (binary bodies base64-encoded), the handler's return value mapped
to the response, 502 when the function fails (an error, a timeout, a crashed worker) and 429
`TooManyRequestsException` when it is throttled (cloud/emulator/pool.py: every allowed worker busy).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from cloud.emulator import sigv4
from cloud.emulator.pool import Throttled
from cloud.functions.contracts import HEADER_REQUEST_ID, MAX_REQUEST_BODY_BYTES

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]
AuthType = Literal["aws_iam", "none"]

_TEXT_TYPES = ("application/json", "application/xml", "application/javascript",
               "application/x-www-form-urlencoded")
_DRAIN_LIMIT = 64 * 1024 * 1024  # read and discard at most this much of a rejected body, then hang up
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Caller:
    """An identity the local URL accepts signatures from, as the event's requestContext.authorizer.iam shows it."""

    access_key: str
    secret_key: str
    user_arn: str
    user_id: str
    account_id: str = "123456789012"
    session_token: str | None = None  # temporary credentials: the request must carry it (X-Amz-Security-Token)

    def iam(self) -> dict[str, str]:
        """AWS's field names (payload format 2.0, auth AWS_IAM)."""
        return {"accessKey": self.access_key, "accountId": self.account_id, "callerId": self.user_id,
                "userArn": self.user_arn, "userId": self.user_id}


CallerLookup = Callable[[str], Caller | None]  # access key id -> the identity it belongs to


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that handlers and powertools read."""

    function_name: str
    timeout_s: float
    region: str = "us-east-1"
    memory_limit_in_mb: int = 3008
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _deadline: float = 0.0

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s
        self.invoked_function_arn = f"arn:aws:lambda:{self.region}:123456789012:function:{self.function_name}"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _is_text(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media.startswith("text/") or media in _TEXT_TYPES or media.endswith(("+json", "+xml"))


def build_event(
    *,
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    source_ip: str,
    domain: str,
    request_id: str,
    access_key: str | None = None,
    caller: Caller | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The payload-format-2.0 event AWS builds for a Function URL request; `caller` (or just its
    `access_key`) is the verified signer of an AWS_IAM request."""
    if caller is not None:
        access_key = caller.access_key
    raw_path, _, raw_query = target.partition("?")
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        lname = name.lower()
        if lname == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        # 2.0 events join repeated headers with commas.
        merged[lname] = f"{merged[lname]},{value}" if lname in merged else value
    query: dict[str, str] = {}
    for pair in filter(None, raw_query.split("&")):
        key, _, value = pair.partition("=")
        query[key] = f"{query[key]},{value}" if key in query else value

    epoch = time.time() if now is None else now
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": merged,
        "requestContext": {
            "accountId": "anonymous" if access_key is None else "123456789012",
            "apiId": domain.split(".")[0],
            "domainName": domain,
            "domainPrefix": domain.split(".")[0],
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": datetime.fromtimestamp(epoch, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(epoch * 1000),
        },
        "isBase64Encoded": False,
    }
    if caller is not None:
        event["requestContext"]["authorizer"] = {"iam": caller.iam()}
    elif access_key is not None:
        event["requestContext"]["authorizer"] = {"iam": {"accessKey": access_key, "accountId": "123456789012"}}
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if body:
        try:
            text = body.decode("utf-8") if _is_text(merged.get("content-type", "")) else None
        except UnicodeDecodeError:
            text = None
        if text is None:
            event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode("ascii"), True
        else:
            event["body"] = text
    return event


def to_http(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Map a handler's return value to (status, headers, body) as Function URLs do."""
    if not (isinstance(result, dict) and "statusCode" in result):
        # No statusCode: the whole value is the JSON body of a 200.
        body = result if isinstance(result, str) else json.dumps(result)
        return 200, [("Content-Type", "application/json")], body.encode("utf-8")
    raw = result.get("body") or ""
    payload = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode("utf-8")
    headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
    if not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("Content-Type", "application/json"))
    headers.extend(("Set-Cookie", str(cookie)) for cookie in result.get("cookies") or [])
    return int(result["statusCode"]), headers, payload


class FunctionUrlServer(ThreadingHTTPServer):
    """Serve `function` at http://host:port/ (port 0 = a free port) from a background thread until stop().

    `function` has a handler's signature: in the local stack it is the detection function's pool of
    execution environments (which raises Throttled when all are busy); a plain handler runs in-process."""

    daemon_threads = True
    # The listen backlog (socketserver's default is 5): a burst of clients connecting at once must queue for
    # accept, not overflow it; an overflowing queue makes the kernel reset connections that sent data early.
    request_queue_size = 1024

    def __init__(
        self,
        function: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        auth: AuthType = "aws_iam",
        access_key: str = "",
        secret_key: str = "",
        region: str = "us-east-1",
        function_name: str = "facepipe-detection",
        timeout_s: float = 30.0,
        max_body_bytes: int = MAX_REQUEST_BODY_BYTES,
        callers: CallerLookup | None = None,
    ) -> None:
        if auth == "aws_iam" and not (access_key and secret_key):
            raise ValueError("auth aws_iam needs the credentials to verify signatures with")
        super().__init__((host, port), FunctionUrlRequestHandler)
        self.function = function
        self.auth = auth
        self.access_key, self.secret_key, self.region = access_key, secret_key, region
        self.function_name, self.timeout_s, self.max_body_bytes = function_name, timeout_s, max_body_bytes
        self.callers = callers
        self._thread: threading.Thread | None = None
        bound_host, bound_port = self.server_address[:2]
        self.url = f"http://{bound_host!s}:{bound_port}/"

    def caller(self, access_key: str) -> Caller | None:
        """Who signs with this key: the stack's own pair (the account's root, the admin), else `callers`."""
        if self.access_key and hmac.compare_digest(access_key, self.access_key):
            account = "123456789012"
            return Caller(access_key, self.secret_key, f"arn:aws:iam::{account}:root", account, account)
        return self.callers(access_key) if self.callers is not None else None

    def start(self) -> str:
        self._thread = threading.Thread(target=self.serve_forever, name="function-url", daemon=True)
        self._thread.start()
        log.info("function URL listening on %s (auth %s)", self.url, self.auth)
        return self.url

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def invoke(self, event: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        """Run the function on one event: its response, 429 when throttled, 502 when it fails (an error,
        a timeout, a crash), as on AWS."""
        context = LambdaContext(self.function_name, self.timeout_s, self.region,
                                aws_request_id=event["requestContext"]["requestId"])
        started = time.perf_counter()
        try:
            result = self.function(event, context)
        except Throttled as exc:
            log.warning("%s throttled: %s; answering 429", self.function_name, exc)
            return 429, [("Content-Type", "application/json"), ("x-amzn-ErrorType", "TooManyRequestsException")], \
                b'{"Message": "Rate Exceeded."}'
        except Exception:
            log.exception("%s failed; answering 502", self.function_name)
            return 502, [("Content-Type", "application/json")], b'{"error": "Internal Server Error"}'
        finally:
            log.debug("%s took %.1f ms", self.function_name, (time.perf_counter() - started) * 1000)
        try:
            return to_http(result)
        except (TypeError, ValueError) as exc:
            log.error("%s returned a value that is not a valid response: %s", self.function_name, exc)
            return 502, [("Content-Type", "application/json")], b'{"error": "Internal Server Error"}'


def _error(status: int, message: str, request_id: str | None) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps({"error": message, "request_id": request_id}).encode("utf-8")
    return status, [("Content-Type", "application/json")], body


class FunctionUrlRequestHandler(BaseHTTPRequestHandler):
    server: FunctionUrlServer
    protocol_version = "HTTP/1.1"  # keep-alive, like the real endpoint
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall
    server_version = "facepipe-local-function-url"
    timeout = 60  # a stalled client must not hold a thread forever

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, response: tuple[int, list[tuple[str, str]], bytes], lambda_request_id: str) -> None:
        status, headers, body = response
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("x-amzn-RequestId", lambda_request_id)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _content_length(self) -> int | str:
        """The declared body length, or the reason it cannot be accepted."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return "chunked bodies are not supported: send Content-Length"
        declared = self.headers.get("Content-Length", "0")
        if not declared.isdigit():
            return f"invalid Content-Length {declared!r}"
        return int(declared)

    def _too_large(self, length: int) -> bool:
        return length > self.server.max_body_bytes

    def handle_expect_100(self) -> bool:
        # A client that asks first gets the 413 before sending the body at all.
        length = self._content_length()
        if isinstance(length, int) and self._too_large(length):
            self.close_connection = True
            self._send(self._limit_error(length), str(uuid.uuid4()))
            return False
        return super().handle_expect_100()

    def _limit_error(self, length: int) -> tuple[int, list[tuple[str, str]], bytes]:
        return _error(413, f"request body of {length} bytes exceeds the {self.server.max_body_bytes}-byte limit",
                      self.headers.get(HEADER_REQUEST_ID))

    def _discard_body(self, length: int) -> None:
        """Read and drop a rejected body so the client can read our answer; hang up on huge ones."""
        if length > _DRAIN_LIMIT:
            self.close_connection = True
            return
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)

    def _handle(self) -> None:
        server = self.server
        lambda_request_id = str(uuid.uuid4())
        client_request_id = self.headers.get(HEADER_REQUEST_ID)
        length = self._content_length()
        if isinstance(length, str):
            self.close_connection = True
            self._send(_error(411 if "chunked" in length else 400, length, client_request_id), lambda_request_id)
            return
        if self._too_large(length):
            # Checked from the header: the body is never buffered.
            self._send(self._limit_error(length), lambda_request_id)
            self._discard_body(length)
            return
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            self.close_connection = True
            self._send(_error(400, "body shorter than Content-Length", client_request_id), lambda_request_id)
            return

        caller: Caller | None = None
        if server.auth == "aws_iam":
            callers: dict[str, Caller | None] = {}  # one lookup per request

            def secret_for(key_id: str) -> str | None:
                found = callers.setdefault(key_id, server.caller(key_id))
                return None if found is None else found.secret_key

            verdict = sigv4.verify(method=self.command, raw_path=self.path, headers=dict(self.headers.items()),
                                   body=body, region=server.region, secret_for=secret_for)
            if not verdict.ok:
                log.info("403 for %s %s: %s", self.command, self.path, verdict.reason)
                self._send(_error(403, f"forbidden: {verdict.reason}", client_request_id), lambda_request_id)
                return
            caller = callers[verdict.access_key]
            token = self.headers.get("X-Amz-Security-Token")
            if caller is not None and caller.session_token is not None and not (
                    token and hmac.compare_digest(token, caller.session_token)):
                log.info("403 for %s %s: session token missing or wrong", self.command, self.path)
                self._send(_error(403, "forbidden: the security token included in the request is invalid",
                                  client_request_id), lambda_request_id)
                return

        event = build_event(
            method=self.command, target=self.path, headers=self.headers.items(), body=body,
            source_ip=self.client_address[0], domain=self.headers.get("Host", "localhost"),
            request_id=lambda_request_id, caller=caller,
        )
        self._send(server.invoke(event), lambda_request_id)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle
