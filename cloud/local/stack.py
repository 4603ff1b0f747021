"""`facepipe local up`: the whole backend on 127.0.0.1, with the real handlers.

moto (SQS + S3 + CloudFormation) -> template.yaml's queues and bucket, created as a CloudFormation stack
in moto (cloud/local/resources.py) -> local Function URL (detection handler in-process) and a local SQS
trigger (recognition handler in-process), both run with the parameter values the stack was created with.
The handlers reach SQS and S3 exactly as on AWS: boto3 reading AWS_ENDPOINT_URL and credentials from the
environment, which this module sets in its own process before importing them. So there is one stack per process.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
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
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from cloud.local.resources import Resources

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(".cache/models/facenet-casia-webface.pt")
STACK_NAME = re.compile(r"[A-Za-z][-A-Za-z0-9]{0,127}")  # CloudFormation's rule
# StackConfig field -> the template.yaml parameter it sets.
PARAMETERS = {
    "detection_timeout_s": "DetectionTimeout",
    "recognition_timeout_s": "RecognitionTimeout",
    "batch_size": "RecognitionBatchSize",
    "batching_window_s": "RecognitionBatchingWindow",
    "max_receive_count": "MaxReceiveCount",
}
# Parameters the local stack reads back from the created stack (the ones above, and where the gallery lives).
LOCAL_PARAMETERS = (*PARAMETERS.values(), "GalleryKey")
_active: LocalStack | None = None  # the handlers read process-wide settings: one stack per process


@dataclass
class StackConfig:
    host: str = "127.0.0.1"  # loopback only: moto accepts any credentials
    moto_port: int = 0  # 0 = a free port
    url_port: int = 0
    auth: Literal["aws_iam", "none"] = "aws_iam"
    weights_path: Path = DEFAULT_WEIGHTS
    region: str = "us-east-1"
    prefix: str = "facepipe-local-"  # the CloudFormation stack's name + "-"; queue and bucket names start with it
    # template.yaml parameters; None = the template's Default (read from template.yaml, not repeated here).
    detection_timeout_s: int | None = None  # DetectionTimeout: the detection handler's context deadline
    recognition_timeout_s: int | None = None  # RecognitionTimeout: request queue visibility from its Mapping
    batch_size: int | None = None  # RecognitionBatchSize
    batching_window_s: int | None = None  # RecognitionBatchingWindow, whole seconds as on AWS
    max_receive_count: int | None = None  # MaxReceiveCount: both queues' RedrivePolicy
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
        self.stack_name = self.config.prefix.rstrip("-")
        self.parameters: dict[str, str] = {}  # template parameters, as the created stack reports them
        self.resources: Resources | None = None  # the created stack's queues (by logical id) and bucket
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
        if not STACK_NAME.fullmatch(self.stack_name):
            raise ValueError(f"prefix {self.config.prefix!r} gives no valid CloudFormation stack name "
                             f"(a letter, then letters, digits and hyphens)")
        started = time.perf_counter()
        template, parameters = self._template()  # refuses values CloudFormation would, before anything starts
        self.timings = {"template_s": time.perf_counter() - started}
        if _active is not None:
            raise RuntimeError("a LocalStack is already running in this process (handlers share its settings)")
        _active = self
        try:
            self._start(weights, template, parameters)
        except BaseException:
            self.stop()
            raise
        return self

    def _template(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The queues and bucket of template.yaml (as `sam deploy` transforms it) and every parameter value."""
        from cloud.local.template import as_built, load_template, local_subset, parameter_values, transform

        subset = local_subset(transform(as_built(load_template()), self.region), LOCAL_PARAMETERS)
        overrides = {name: str(getattr(self.config, field)) for field, name in PARAMETERS.items()
                     if getattr(self.config, field) is not None}
        return subset, parameter_values(subset, overrides)

    def _start(self, weights: Path, template: dict[str, Any], parameters: dict[str, str]) -> None:
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
        res = self.resources = create_resources(
            self.client("cloudformation", retries=False), self.client("sqs"), self.client("s3"),
            stack_name=self.stack_name, template=template, parameters=parameters)
        params = self.parameters = res.parameters
        request = res.queues["RequestQueue"]
        self.request_queue_url, self.request_dlq_url = request.url, res.queues["RequestDeadLetterQueue"].url
        self.response_queue_url = res.queues["ResponseQueue"].url
        self.response_dlq_url = res.queues["ResponseDeadLetterQueue"].url
        self.bucket, self.gallery_uri = res.bucket, f"s3://{res.bucket}/{params['GalleryKey']}"
        self._set_env({
            "FACEPIPE_REQUEST_QUEUE_URL": self.request_queue_url,
            "FACEPIPE_RESPONSE_QUEUE_URL": self.response_queue_url,
            "FACEPIPE_BUCKET": self.bucket,
            "FACEPIPE_GALLERY_URI": self.gallery_uri,
            "FACEPIPE_WEIGHTS_PATH": str(weights),
            "FACEPIPE_REPLY_TO_PREFIX": self.reply_to_prefix,
            "FACEPIPE_TORCH_THREADS": str(cfg.torch_threads),
            "FACEPIPE_MAX_MESSAGE_BYTES": request.attributes["MaximumMessageSize"],  # as the template sets it
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
            function_name=f"{cfg.prefix}detection", timeout_s=float(params["DetectionTimeout"]),
        )
        self.function_url = self._url_server.start()
        self.trigger = SqsTrigger(
            self.client("sqs"), recognition.handler, queue_url=request.url, queue_arn=request.arn,
            region=self.region, batch_size=int(params["RecognitionBatchSize"]),
            batching_window_s=float(params["RecognitionBatchingWindow"]),
            timeout_s=float(params["RecognitionTimeout"]), poll_wait_s=cfg.poll_wait_s,
            function_name=f"{cfg.prefix}recognition",
        )
        self.trigger.start()
        self.timings |= {"moto_s": t1 - t0, "resources_s": t2 - t1, "handler_imports_s": t3 - t2,
                        "detection_init_s": t4 - t3, "recognition_init_s": t5 - t4,
                        "total_s": time.perf_counter() - t0 + self.timings["template_s"]}

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

    def client(self, service: str, *, retries: bool = True) -> Any:
        """A new boto3 client for this stack's moto ("sqs", "s3", "cloudformation"), with the stack's credentials."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            service, endpoint_url=self.endpoint_url, region_name=self.region,
            aws_access_key_id=self.credentials.access_key, aws_secret_access_key=self.credentials.secret_key,
            config=None if retries else Config(retries={"total_max_attempts": 1}),
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
    parser.add_argument("--moto-port", type=int, default=0, help="moto (SQS/S3/CloudFormation) port; 0 = free port")
    parser.add_argument("--url-port", type=int, default=0, help="Function URL port; 0 = free port")
    parser.add_argument("--auth", choices=["aws_iam", "none"], default=defaults.auth,
                        help="Function URL auth type (default %(default)s: SigV4-signed requests only)")
    parser.add_argument("--weights", type=Path,
                        default=Path(os.environ.get("FACEPIPE_WEIGHTS_PATH") or DEFAULT_WEIGHTS),
                        help="InceptionResnetV1 weights file (default $FACEPIPE_WEIGHTS_PATH or %(default)s)")
    parser.add_argument("--region", default=defaults.region)
    parser.add_argument("--prefix", default=defaults.prefix,
                        help="stack name + '-': queue and bucket names start with it (default %(default)s)")
    template = parser.add_argument_group(
        "template.yaml parameters", "unset = the template's Default; values CloudFormation refuses are refused")
    template.add_argument("--batch-size", type=int, help="RecognitionBatchSize: SQS trigger batch size")
    template.add_argument("--batching-window", type=int,
                          help="RecognitionBatchingWindow: SQS trigger MaximumBatchingWindowInSeconds")
    template.add_argument("--handler-timeout", type=int,
                          help="DetectionTimeout and RecognitionTimeout, s, unless given one by one")
    template.add_argument("--recognition-timeout", type=int,
                          help="RecognitionTimeout, s (one of the template's AllowedValues); request queue "
                               "visibility from its Mapping, 6x")
    template.add_argument("--detection-timeout", type=int, help="DetectionTimeout, s")
    template.add_argument("--max-receive-count", type=int,
                          help="MaxReceiveCount: receives before a message moves to its DLQ")
    parser.add_argument("--threads", type=int, default=defaults.torch_threads, help="torch threads")


def endpoint_lines(stack: LocalStack) -> list[str]:
    """Human-readable endpoints, then shell `export` lines a client can paste or eval."""
    assert stack.resources is not None, "the stack is not started"
    visibility = stack.resources.queues["RequestQueue"].visibility_timeout
    lines = [
        f"function URL   {stack.function_url} (auth {stack.config.auth})",
        f"moto           {stack.endpoint_url} (SQS, S3, CloudFormation)",
        f"stack          {stack.stack_name} (template.yaml's queues and bucket in moto's CloudFormation): "
        + ", ".join(f"{name} {value}" for name, value in stack.parameters.items()),
        f"request queue  {stack.request_queue_url} (DLQ {stack.request_dlq_url}, visibility {visibility} s)",
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
        batching_window_s=args.batching_window, max_receive_count=args.max_receive_count,
        detection_timeout_s=args.handler_timeout if args.detection_timeout is None else args.detection_timeout,
        recognition_timeout_s=args.handler_timeout if args.recognition_timeout is None else args.recognition_timeout,
        torch_threads=args.threads,
    )
    stopping = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            stack = LocalStack(config).start()
        except (FileNotFoundError, ValueError) as exc:  # missing weights, a value the template does not allow
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
