"""`facepipe local up`: the whole backend on 127.0.0.1, with the real handlers.

moto (SQS + S3) -> queues and bucket -> local Function URL (detection handler in-process) and a
local SQS trigger (recognition handler in-process). The handlers reach SQS and S3 exactly as on
AWS: boto3 reading AWS_ENDPOINT_URL and credentials from the environment, which this module sets
in its own process before importing them. So there is one stack per process.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import secrets
import shlex
import signal
import string
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Literal

from cloud.local.resources import VISIBILITY_PER_TIMEOUT

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(".cache/models/facenet-casia-webface.pt")
GALLERY_KEY = "gallery/gallery.npz"
_active: LocalStack | None = None  # the handlers read process-wide settings: one stack per process


@dataclass
class StackConfig:
    host: str = "127.0.0.1"  # loopback only: moto accepts any credentials
    moto_port: int = 0  # 0 = a free port
    url_port: int = 0
    auth: Literal["aws_iam", "none"] = "aws_iam"
    weights_path: Path = DEFAULT_WEIGHTS
    region: str = "us-east-1"
    prefix: str = "facepipe-local-"  # queue and bucket names start with it
    batch_size: int = 10
    batching_window_s: float = 0.0
    handler_timeout_s: int = 30  # Lambda timeout of both functions; request queue visibility = 6x this
    max_receive_count: int = 3
    torch_threads: int = 2
    poll_wait_s: int = 1  # trigger long-poll wait; short so stop() is prompt
    extra_env: dict[str, str] = field(default_factory=dict)  # more FACEPIPE_* settings for the handlers


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str


def _random_credentials() -> Credentials:
    alphabet = string.ascii_uppercase + string.digits
    key = "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))
    return Credentials(key, secrets.token_urlsafe(30))


class LocalStack:
    """Start with `start()` or `with LocalStack(config) as stack:`; endpoints are attributes."""

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.credentials = _random_credentials()
        self.region = self.config.region
        self.reply_to_prefix = f"{self.config.prefix}reply-"
        self.endpoint_url = ""
        self.function_url = ""
        self.request_queue_url = self.response_queue_url = ""
        self.request_dlq_url = self.response_dlq_url = ""
        self.bucket = self.gallery_uri = ""
        self.timings: dict[str, float] = {}  # start-up phases in seconds
        self.trigger: Any = None  # SqsTrigger; `with stack.trigger.paused():` holds recognition
        self._moto: Any = None
        self._url_server: Any = None
        self._saved_env: dict[str, str | None] = {}

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> LocalStack:
        global _active
        if not ipaddress.ip_address(self.config.host).is_loopback:
            raise ValueError(f"the local stack binds loopback addresses only, not {self.config.host}")
        weights = Path(self.config.weights_path).resolve()
        if not weights.is_file():
            raise FileNotFoundError(f"recognition weights {weights} missing: run `facepipe models prepare`")
        if _active is not None:
            raise RuntimeError("a LocalStack is already running in this process (handlers share its settings)")
        _active = self
        try:
            self._start(weights)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, weights: Path) -> None:
        from cloud.local.function_url import FunctionUrlServer
        from cloud.local.moto_server import MotoServer
        from cloud.local.resources import create_resources
        from cloud.local.sqs_trigger import SqsTrigger

        cfg = self.config
        t0 = time.perf_counter()
        self._moto = MotoServer(cfg.host, cfg.moto_port)
        self.endpoint_url = self._moto.start()
        t1 = time.perf_counter()
        self._set_env({
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": self.credentials.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        })
        res = create_resources(self.client("sqs"), self.client("s3"), prefix=cfg.prefix, region=self.region,
                               handler_timeout=cfg.handler_timeout_s, max_receive_count=cfg.max_receive_count)
        self.request_queue_url, self.request_dlq_url = res.request_queue_url, res.request_dlq_url
        self.response_queue_url, self.response_dlq_url = res.response_queue_url, res.response_dlq_url
        self.bucket, self.gallery_uri = res.bucket, f"s3://{res.bucket}/{GALLERY_KEY}"
        self._set_env({
            "FACEPIPE_REQUEST_QUEUE_URL": self.request_queue_url,
            "FACEPIPE_RESPONSE_QUEUE_URL": self.response_queue_url,
            "FACEPIPE_BUCKET": self.bucket,
            "FACEPIPE_GALLERY_URI": self.gallery_uri,
            "FACEPIPE_WEIGHTS_PATH": str(weights),
            "FACEPIPE_REPLY_TO_PREFIX": self.reply_to_prefix,
            "FACEPIPE_TORCH_THREADS": str(cfg.torch_threads),
            **cfg.extra_env,
        })
        t2 = time.perf_counter()

        # The handlers' init phase: import, then build the models once (they cache per process).
        detection, recognition = _fresh_handlers()
        t3 = time.perf_counter()
        detection.get_detector()
        t4 = time.perf_counter()
        settings = recognition.get_settings()
        recognition.get_embedder(settings.weights_path, settings.torch_threads)
        t5 = time.perf_counter()

        self._url_server = FunctionUrlServer(
            detection.handler, host=cfg.host, port=cfg.url_port, auth=cfg.auth,
            access_key=self.credentials.access_key, secret_key=self.credentials.secret_key, region=self.region,
            function_name=f"{cfg.prefix}detection", timeout_s=cfg.handler_timeout_s,
        )
        self.function_url = self._url_server.start()
        self.trigger = SqsTrigger(
            self.client("sqs"), recognition.handler, queue_url=res.request_queue_url,
            queue_arn=res.request_queue_arn, region=self.region, batch_size=cfg.batch_size,
            batching_window_s=cfg.batching_window_s, timeout_s=cfg.handler_timeout_s,
            poll_wait_s=cfg.poll_wait_s, function_name=f"{cfg.prefix}recognition",
        )
        self.trigger.start()
        self.timings = {"moto_s": t1 - t0, "resources_s": t2 - t1, "handler_imports_s": t3 - t2,
                        "detection_init_s": t4 - t3, "recognition_init_s": t5 - t4,
                        "total_s": time.perf_counter() - t0}

    def stop(self) -> None:
        """Stop the trigger, the URL server and moto (in that order), then restore the environment."""
        global _active
        if self.trigger is not None:
            self.trigger.stop()
            self.trigger = None
        if self._url_server is not None:
            self._url_server.stop()
            self._url_server = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        _clear_client_caches()
        if _active is self:
            _active = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- for clients and tests ---------------------------------------------------------------------

    def client(self, service: str) -> Any:
        """A new boto3 client for this stack's moto ("sqs", "s3"), with the stack's credentials."""
        import boto3

        return boto3.session.Session().client(
            service, endpoint_url=self.endpoint_url, region_name=self.region,
            aws_access_key_id=self.credentials.access_key, aws_secret_access_key=self.credentials.secret_key,
        )

    def client_env(self) -> dict[str, str]:
        """What a client process (edge daemon, `facepipe enroll`, the AWS CLI) needs to use this stack."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": self.credentials.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "FACEPIPE_FUNCTION_URL": self.function_url,
            "FACEPIPE_RESPONSE_QUEUE_URL": self.response_queue_url,
            "FACEPIPE_REQUEST_QUEUE_URL": self.request_queue_url,
            "FACEPIPE_BUCKET": self.bucket,
            "FACEPIPE_GALLERY_URI": self.gallery_uri,
            "FACEPIPE_WEIGHTS_PATH": str(Path(self.config.weights_path).resolve()),
            "FACEPIPE_REPLY_TO_PREFIX": self.reply_to_prefix,
            # The edge daemon's config overrides (edge_client/config.py).
            "FACEPIPE_EDGE__ENDPOINT__URL": self.function_url,
            "FACEPIPE_EDGE__ENDPOINT__AUTH": self.config.auth,
            "FACEPIPE_EDGE__ENDPOINT__REGION": self.region,
            "FACEPIPE_EDGE__RESPONSES__QUEUE_URL": self.response_queue_url,
            "FACEPIPE_EDGE__RESPONSES__ENDPOINT_URL": self.endpoint_url,
        }

    def enroll(self, people: dict[str, list[Path]]) -> Any:
        """Enroll photos into this stack's gallery with the handlers' own models; the recognizer
        sees the new gallery from its next batch. Returns cloud.enrollment's report."""
        from cloud.detection import handler as detection
        from cloud.enrollment import enroll_photos
        from cloud.recognition import handler as recognition

        settings = recognition.get_settings()
        embedder = recognition.get_embedder(settings.weights_path, settings.torch_threads)
        report = enroll_photos(self.gallery_uri, settings.weights_path, people,
                               detector=detection.get_detector(), embedder=embedder)
        # A warm recognizer rechecks the gallery only every GALLERY_REFRESH_SECONDS; drop its copy now.
        recognition.forget_gallery()
        return report

    def _set_env(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        _clear_client_caches()


def _clear_client_caches() -> None:
    """Settings and boto3 clients are cached per process; they must follow the environment."""
    from cloud import aws
    from cloud.settings import get_settings

    get_settings.cache_clear()
    aws.client.cache_clear()


def _fresh_handlers() -> tuple[Any, Any]:
    """The handler modules with their per-container caches emptied (they may have been imported
    earlier in this process with other settings)."""
    from cloud.detection import handler as detection
    from cloud.recognition import handler as recognition

    detection.get_detector.cache_clear()
    recognition.reset_caches()
    return detection, recognition


# --- CLI ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = StackConfig()
    parser.add_argument("--moto-port", type=int, default=0, help="moto (SQS/S3) port; 0 = free port")
    parser.add_argument("--url-port", type=int, default=0, help="Function URL port; 0 = free port")
    parser.add_argument("--auth", choices=["aws_iam", "none"], default=defaults.auth,
                        help="Function URL auth type (default %(default)s: SigV4-signed requests only)")
    parser.add_argument("--weights", type=Path,
                        default=Path(os.environ.get("FACEPIPE_WEIGHTS_PATH") or DEFAULT_WEIGHTS),
                        help="InceptionResnetV1 weights file (default $FACEPIPE_WEIGHTS_PATH or %(default)s)")
    parser.add_argument("--region", default=defaults.region)
    parser.add_argument("--prefix", default=defaults.prefix, help="queue and bucket name prefix")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="SQS trigger batch size")
    parser.add_argument("--batching-window", type=float, default=defaults.batching_window_s,
                        help="SQS trigger MaximumBatchingWindowInSeconds")
    parser.add_argument("--handler-timeout", type=int, default=defaults.handler_timeout_s,
                        help=f"function timeout, s; request queue visibility = {VISIBILITY_PER_TIMEOUT}x this")
    parser.add_argument("--max-receive-count", type=int, default=defaults.max_receive_count,
                        help="receives before a message moves to its DLQ")
    parser.add_argument("--threads", type=int, default=defaults.torch_threads, help="torch threads")


def endpoint_lines(stack: LocalStack) -> list[str]:
    """Human-readable endpoints, then shell `export` lines a client can paste or eval."""
    lines = [
        f"function URL   {stack.function_url} (auth {stack.config.auth})",
        f"moto (SQS/S3)  {stack.endpoint_url}",
        f"request queue  {stack.request_queue_url} (DLQ {stack.request_dlq_url})",
        f"response queue {stack.response_queue_url} (DLQ {stack.response_dlq_url})",
        f"bucket         {stack.bucket}; gallery {stack.gallery_uri}",
        f"reply_to queue names must start with {stack.reply_to_prefix}",
        "client environment:",
    ]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in stack.client_env().items()]
    return lines


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = StackConfig(
        moto_port=args.moto_port, url_port=args.url_port, auth=args.auth,
        weights_path=args.weights, region=args.region, prefix=args.prefix, batch_size=args.batch_size,
        batching_window_s=args.batching_window, handler_timeout_s=args.handler_timeout,
        max_receive_count=args.max_receive_count, torch_threads=args.threads,
    )
    stopping = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            stack = LocalStack(config).start()
        except (FileNotFoundError, ValueError) as exc:  # missing weights, impossible batching settings
            print(f"facepipe local up: {exc}", file=sys.stderr)
            return 2
        try:
            print("\n".join(endpoint_lines(stack)), flush=True)
            phases = ", ".join(f"{name[:-2]} {seconds:.1f} s" for name, seconds in stack.timings.items()
                               if name != "total_s")
            print(f"ready in {stack.timings['total_s']:.1f} s ({phases}); Ctrl-C or SIGTERM stops", flush=True)
            while not stopping.wait(0.5):
                pass
            print("stopping", flush=True)
        finally:
            stack.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("stopped", flush=True)
    return 0
