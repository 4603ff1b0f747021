"""The local stack: the whole backend on 127.0.0.1, with the real handlers in Lambda-like worker processes.

moto (SQS + S3 + CloudFormation) -> template.yaml's queues and bucket, created as a CloudFormation stack
in moto (cloud/emulator/resources.py) -> each function of the template (DetectionFunction, RecognitionFunction)
as a pool of worker processes running awslambdaric against a local Runtime API (cloud/emulator/pool.py) ->
a local Function URL and an SQS trigger from the ingest queue in front of detection, and a local SQS
trigger feeding recognition, all run with the
parameter values the stack was created with. The handlers reach SQS and S3 exactly as on AWS: boto3
reading AWS_ENDPOINT_URL and credentials from their environment. This process's own environment gets
the same AWS_* and FACEPIPE_* values (for `enroll` and for tests' clients), so there is one stack per process.
`facepipe local up` (cloud/emulator/up.py) is its command line.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import re
import secrets
import string
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from cloud.emulator.pool import FunctionPool
    from cloud.emulator.resources import Resources

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(".cache/models/facenet-casia-webface.pt")
DEFAULT_MODELS = Path(".cache/models")  # `make models` exports the ONNX networks there
STACK_NAME = re.compile(r"[A-Za-z][-A-Za-z0-9]{0,127}")  # CloudFormation's rule
# StackConfig field -> the template.yaml parameter it sets.
PARAMETERS = {
    "detection_timeout_s": "DetectionTimeout",
    "recognition_timeout_s": "RecognitionTimeout",
    "batch_size": "RecognitionBatchSize",
    "batching_window_s": "RecognitionBatchingWindow",
    "max_receive_count": "MaxReceiveCount",
    "known_faces_days": "KnownFacesRetentionDays",
    "unknown_faces_days": "UnknownFacesRetentionDays",
}
# Parameters the local stack reads back from the created stack (the ones above, where the gallery lives,
# and what the functions' workers get: memory size and concurrency limits).
LOCAL_PARAMETERS = (*PARAMETERS.values(), "KeepFaces", "GalleryKey", "DetectionMemorySize", "RecognitionMemorySize",
                    "DetectionReservedConcurrency", "RecognitionMaxConcurrency", "IngestBatchSize",
                    "IngestMaxConcurrency")
DETECTION, RECOGNITION = "DetectionFunction", "RecognitionFunction"  # template.yaml's logical IDs
ACCOUNT = "123456789012"  # moto's default account: the local stack's
_active: LocalStack | None = None  # the handlers read process-wide settings: one stack per process


@dataclass
class StackConfig:
    host: str = "127.0.0.1"  # loopback only: moto accepts any credentials
    moto_port: int = 0  # 0 = a free port
    url_port: int = 0
    auth: Literal["aws_iam", "none"] = "aws_iam"
    # What runs the networks in both functions and in enroll(): "onnx" (the exported files in models_dir, what
    # the image ships) or "torch" (facenet-pytorch on weights_path, the reference).
    engine: Literal["onnx", "torch"] = "onnx"
    models_dir: Path = DEFAULT_MODELS  # engine onnx
    weights_path: Path = DEFAULT_WEIGHTS  # engine torch
    region: str = "us-east-1"
    prefix: str = "facepipe-local-"  # the CloudFormation stack's name + "-"; queue and bucket names start with it
    # template.yaml parameters; None = the template's Default (read from template.yaml, not repeated here).
    detection_timeout_s: int | None = None  # DetectionTimeout: the detection handler's context deadline
    recognition_timeout_s: int | None = None  # RecognitionTimeout: request queue visibility from its Mapping
    batch_size: int | None = None  # RecognitionBatchSize
    batching_window_s: int | None = None  # RecognitionBatchingWindow, whole seconds as on AWS
    max_receive_count: int | None = None  # MaxReceiveCount: every queue's RedrivePolicy
    keep_faces: bool | None = None  # KeepFaces: answered faces kept under faces/ for the faces library
    known_faces_days: int | None = None  # KnownFacesRetentionDays: the faces/known/ lifecycle rule
    unknown_faces_days: int | None = None  # UnknownFacesRetentionDays: the faces/unknown/ lifecycle rule
    # The ingest queue's visibility, when a failed image event comes back. None = the template's (6x
    # DetectionTimeout, from its Mapping); tests shorten it.
    ingest_visibility_timeout_s: int | None = None
    # the engine's intra-op threads per worker; None = this machine's cores shared by the workers that may run at
    # once (at least 1): more threads than cores across workers makes every invocation slower.
    threads: int | None = None
    poll_wait_s: int = 1  # trigger long-poll wait; short so stop() is prompt
    extra_env: dict[str, str] = field(default_factory=dict)  # more function settings: FACEPIPE_*, POWERTOOLS_*
    # Both functions' worker output (JSON logs, EMF metrics: CloudWatch's part) appended to this file; None: to
    # this process's stdout and stderr.
    function_log: Path | None = None
    # Worker processes per function at most; None = DetectionReservedConcurrency / RecognitionMaxConcurrency
    # from the template when set (not -1), else this machine's core count.
    detection_concurrency: int | None = None
    recognition_concurrency: int | None = None
    # How long a Function URL request may wait for a busy detection worker before its 429.
    url_queue_wait_s: float = 2.0
    prestart: bool = True  # one initialised worker per function at start() (no cold start for the first frame)
    # FACEPIPE_BIND_DEVICES: URL callers must be `facepipe device add` devices (the stack's own credentials, the
    # admin, are then refused at the URL); off by default so the stack's credentials can send as any device.
    bind_devices: bool = False


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
        self.ingest_queue_url = self.ingest_dlq_url = ""
        self.bucket = self.gallery_uri = ""
        self.timings: dict[str, float] = {}  # start-up phases in seconds
        self.model_env: dict[str, str] = {}  # FACEPIPE_ENGINE and its model files, as the functions get them
        self.trigger: Any = None  # SqsTrigger; `with stack.trigger.paused():` holds recognition
        self.ingest_trigger: Any = None  # SqsTrigger: the ingest queue's image events into detection
        self.handlers: dict[str, str] = {}  # by logical ID: the function's handler (template ImageConfig.Command)
        self.functions: dict[str, FunctionPool] = {}  # by logical ID: each function's worker processes
        self._enroll_models: tuple[Any, Any] | None = None  # (detector, embedder) in this process, for enroll()
        self._moto: Any = None
        self._url_server: Any = None
        self._saved_env: dict[str, str | None] = {}

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> LocalStack:
        global _active
        if not ipaddress.ip_address(self.config.host).is_loopback:
            raise ValueError(f"the local stack binds loopback addresses only, not {self.config.host}")
        self.model_env = self._model_env()  # refuses missing model files before anything starts
        if self.config.bind_devices and self.config.auth != "aws_iam":
            raise ValueError("binding devices needs auth aws_iam: with auth none a caller has no identity")
        if not STACK_NAME.fullmatch(self.stack_name):
            raise ValueError(f"prefix {self.config.prefix!r} gives no valid CloudFormation stack name "
                             f"(a letter, then letters, digits and hyphens)")
        started = time.perf_counter()
        template, parameters = self._template()  # refuses values CloudFormation would, before anything starts
        self.timings = {"template_s": time.perf_counter() - started}
        if _active is not None:
            raise RuntimeError("a LocalStack is already running in this process (its settings are in os.environ)")
        _active = self
        try:
            self._start(template, parameters)
        except BaseException:
            self.stop()
            raise
        return self

    def _template(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The queues and bucket of template.yaml (as `sam deploy` transforms it) and every parameter value;
        also reads each function's handler (its image command) into `self.handlers`."""
        from cloud.emulator.template import as_built, load_template, local_subset, parameter_values, transform

        source = load_template()
        self.handlers = {name: source["Resources"][name]["Properties"]["ImageConfig"]["Command"][0]
                         for name in (DETECTION, RECOGNITION)}
        subset = local_subset(transform(as_built(source), self.region), LOCAL_PARAMETERS)
        overrides = {name: str(getattr(self.config, field)) for field, name in PARAMETERS.items()
                     if getattr(self.config, field) is not None}
        if self.config.keep_faces is not None:
            overrides["KeepFaces"] = str(self.config.keep_faces).lower()
        visibility = self.config.ingest_visibility_timeout_s
        if visibility is not None:  # a test's shortcut past the template's 6x
            subset["Resources"]["IngestQueue"]["Properties"]["VisibilityTimeout"] = visibility
        return subset, parameter_values(subset, overrides)

    def _model_env(self) -> dict[str, str]:
        """FACEPIPE_ENGINE and the engine's model files for the functions and enroll(); FileNotFoundError naming
        how to make them when one is missing."""
        if self.config.engine == "torch":
            weights = Path(self.config.weights_path).resolve()
            if not weights.is_file():
                raise FileNotFoundError(f"recognition weights {weights} missing (engine torch): run "
                                        f"`facepipe models prepare`")
            return {"FACEPIPE_ENGINE": "torch", "FACEPIPE_WEIGHTS_PATH": str(weights)}
        from cloud.functions.detection.mtcnn import NETWORK_FILES
        from cloud.functions.onnx_session import EXPORT_HINT
        from cloud.functions.recognition.network import ONNX_FILE

        models = Path(self.config.models_dir).resolve()
        missing = [name for name in (*NETWORK_FILES, ONNX_FILE) if not (models / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{', '.join(missing)} missing under {models} (engine onnx): {EXPORT_HINT}")
        return {"FACEPIPE_ENGINE": "onnx", "FACEPIPE_MODELS_DIR": str(models)}

    def _start(self, template: dict[str, Any], parameters: dict[str, str]) -> None:
        from cloud.emulator.backend_sqs import BackendDelete, BackendReceive
        from cloud.emulator.function_url import FunctionUrlServer
        from cloud.emulator.identities import sender_id
        from cloud.emulator.moto_server import MotoServer, record_sender_ids
        from cloud.emulator.resources import create_resources
        from cloud.emulator.sqs_trigger import SqsTrigger
        from cloud.operator.devices import user_prefix

        cfg = self.config
        t0 = time.perf_counter()
        self._moto = MotoServer(cfg.host, cfg.moto_port)
        self.endpoint_url = self._moto.start()
        t1 = time.perf_counter()
        aws_env = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": self.credentials.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }
        self._set_env(aws_env)
        record_sender_ids(functools.partial(sender_id, root_key=self.credentials.access_key, account_id=ACCOUNT))
        res = self.resources = create_resources(
            self.client("cloudformation", retries=False), self.client("sqs"), self.client("s3"),
            stack_name=self.stack_name, template=template, parameters=parameters)
        params = self.parameters = res.parameters
        request = res.queues["RequestQueue"]
        self.request_queue_url, self.request_dlq_url = request.url, res.queues["RequestDeadLetterQueue"].url
        self.response_queue_url = res.queues["ResponseQueue"].url
        self.response_dlq_url = res.queues["ResponseDeadLetterQueue"].url
        ingest = res.queues["IngestQueue"]
        self.ingest_queue_url, self.ingest_dlq_url = ingest.url, res.queues["IngestDeadLetterQueue"].url
        self.bucket, self.gallery_uri = res.bucket, f"s3://{res.bucket}/{params['GalleryKey']}"
        function_env = {
            "FACEPIPE_REQUEST_QUEUE_URL": self.request_queue_url,
            "FACEPIPE_RESPONSE_QUEUE_URL": self.response_queue_url,
            "FACEPIPE_BUCKET": self.bucket,
            "FACEPIPE_GALLERY_URI": self.gallery_uri,
            **self.model_env,
            "FACEPIPE_REPLY_TO_PREFIX": self.reply_to_prefix,
            "FACEPIPE_THREADS": str(self._threads(params)),
            "FACEPIPE_MAX_MESSAGE_BYTES": request.attributes["MaximumMessageSize"],  # as the template sets it
            "FACEPIPE_KEEP_FACES": params["KeepFaces"],
            "FACEPIPE_EVIDENCE_ANSWERS": str(cfg.auth == "aws_iam").lower(),  # as the template: not on a public URL
            # Workers recheck the gallery's version every batch, so `enroll()` reaches warm ones at once.
            "FACEPIPE_GALLERY_REFRESH_S": "0",
            "FACEPIPE_BIND_DEVICES": str(cfg.bind_devices).lower(),
            "FACEPIPE_DEVICE_USER_PREFIX": user_prefix(self.stack_name),
            "FACEPIPE_DEVICE_ROLE_NAME": self._device_role() if cfg.bind_devices else "",
            "FACEPIPE_DEVICE_ACCOUNT": ACCOUNT,
            **cfg.extra_env,
        }
        self._set_env(function_env)
        t2 = time.perf_counter()

        self.functions = self._pools({**aws_env, **function_env}, params)
        if cfg.prestart:  # both models load at once, each in its own worker
            self._prestart()
        t3 = time.perf_counter()

        detection = self.functions[DETECTION]
        self._url_server = FunctionUrlServer(
            detection.invoke, host=cfg.host, port=cfg.url_port, auth=cfg.auth,
            access_key=self.credentials.access_key, secret_key=self.credentials.secret_key, region=self.region,
            function_name=detection.spec.name, timeout_s=detection.spec.timeout_s, callers=moto_iam_caller,
        )
        self.function_url = self._url_server.start()
        recognition = self.functions[RECOGNITION]
        self.trigger = SqsTrigger(
            self.client("sqs"), recognition.invoke, queue_url=request.url, queue_arn=request.arn,
            region=self.region, batch_size=int(params["RecognitionBatchSize"]),
            batching_window_s=float(params["RecognitionBatchingWindow"]),
            timeout_s=recognition.spec.timeout_s, poll_wait_s=cfg.poll_wait_s,
            function_name=recognition.spec.name, concurrency=recognition.concurrency,
            receive=BackendReceive(request.arn), delete=BackendDelete(request.arn),
        )
        self.trigger.start()
        # template.yaml's DetectionIngest: the same detection workers as the URL (one function, one concurrency),
        # image events and the bucket's uploads/ notifications (moto's S3 delivers them) in batches.
        self.ingest_trigger = SqsTrigger(
            self.client("sqs"), detection.invoke_when_free, queue_url=ingest.url, queue_arn=ingest.arn,
            region=self.region,
            batch_size=int(params["IngestBatchSize"]), batching_window_s=0.0, timeout_s=detection.spec.timeout_s,
            poll_wait_s=cfg.poll_wait_s, function_name=detection.spec.name,
            concurrency=min(int(params["IngestMaxConcurrency"]), detection.concurrency),
            receive=BackendReceive(ingest.arn), delete=BackendDelete(ingest.arn),
        )
        self.ingest_trigger.start()
        self.timings |= {"moto_s": t1 - t0, "resources_s": t2 - t1, "workers_s": t3 - t2,
                         **{f"{name}_init_s": pool.environments[0].init_ms / 1000
                            for name, pool in self.functions.items() if pool.environments},
                         "total_s": time.perf_counter() - t0 + self.timings["template_s"]}

    def _device_role(self) -> str:
        """template.yaml's DeviceRole in moto's IAM (the local stack's CloudFormation has queues and bucket only): the
        same path, trusting this account, so `facepipe device add --temporary` finds it and AssumeRole issues its
        sessions. moto enforces no policy: its permissions are the template's (tests/unit/test_template.py)."""
        import json

        from cloud.operator.devices import ROLE_PATH

        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                         "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}}]}
        name = f"{self.stack_name}-DeviceRole"
        self.client("iam").create_role(RoleName=name, Path=ROLE_PATH.format(stack=self.stack_name),
                                       AssumeRolePolicyDocument=json.dumps(trust), MaxSessionDuration=3600)
        return name

    def _concurrency(self, params: dict[str, str]) -> dict[str, int]:
        """Each function's worker limit: the configured one, else the template's (not -1), else the core count."""
        cfg = self.config
        limits = {DETECTION: (cfg.detection_concurrency, params["DetectionReservedConcurrency"]),
                  RECOGNITION: (cfg.recognition_concurrency, params["RecognitionMaxConcurrency"])}
        return {name: chosen if chosen is not None else (
                    int(template_limit) if int(template_limit) != -1 else os.cpu_count() or 1)
                for name, (chosen, template_limit) in limits.items()}

    def _threads(self, params: dict[str, str]) -> int:
        if self.config.threads is not None:
            return self.config.threads
        return max(1, (os.cpu_count() or 1) // max(1, sum(self._concurrency(params).values())))

    def _pools(self, environment: dict[str, str], params: dict[str, str]) -> dict[str, FunctionPool]:
        """Each function of the template as a pool of worker processes, with its parameters."""
        from cloud.emulator.environment import FunctionSpec
        from cloud.emulator.pool import FunctionPool

        cfg = self.config
        concurrency_of = self._concurrency(params)
        pools = {}
        for name, prefix in ((DETECTION, "Detection"), (RECOGNITION, "Recognition")):
            concurrency = concurrency_of[name]
            spec = FunctionSpec(
                logical_id=name, handler=self.handlers[name], name=f"{self.stack_name}-{name}", region=self.region,
                timeout_s=float(params[f"{prefix}Timeout"]), memory_mb=int(params[f"{prefix}MemorySize"]),
                environment=environment, host=cfg.host, log_file=cfg.function_log)
            # The Function URL answers 429 after a short wait; the SQS pollers wait for their worker.
            pools[name] = FunctionPool(spec, concurrency, cfg.url_queue_wait_s if name == DETECTION else None)
        return pools

    def _prestart(self) -> None:
        """One initialised worker per function (at most its concurrency), started side by side."""
        errors: list[BaseException] = []

        def prestart(pool: FunctionPool) -> None:
            try:
                pool.prestart()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=prestart, args=(pool,)) for pool in self.functions.values()
                   if pool.concurrency > 0]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise RuntimeError(f"a function failed to initialise: {errors[0]}") from errors[0]

    def start_every_worker(self) -> None:
        """Every function's workers up to its concurrency, initialised (a provisioned concurrency of all of
        them): a measurement that follows pays no cold start."""
        for pool in self.functions.values():
            while len(pool.environments) < pool.concurrency:
                pool.prestart()

    def stop(self) -> None:
        """Stop the trigger (in-flight batches finish), the URL server, every worker, then moto; restore the
        environment. No worker outlives this: each is killed with its process group."""
        global _active
        for trigger in (self.trigger, self.ingest_trigger):
            if trigger is not None:
                trigger.stop()
        self.trigger = self.ingest_trigger = None
        if self._url_server is not None:
            self._url_server.stop()
            self._url_server = None
        for pool in self.functions.values():
            pool.stop()
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
            "FACEPIPE_INGEST_QUEUE_URL": self.ingest_queue_url,
            "FACEPIPE_BUCKET": self.bucket,
            "FACEPIPE_GALLERY_URI": self.gallery_uri,
            **self.model_env,  # `facepipe enroll` embeds as the functions do
            "FACEPIPE_REPLY_TO_PREFIX": self.reply_to_prefix,
            "FACEPIPE_STACK_NAME": self.stack_name,  # for `facepipe device add|list|remove`
            # The edge daemon's config overrides (edge_client/config.py).
            "FACEPIPE_EDGE__ENDPOINT__URL": self.function_url,
            "FACEPIPE_EDGE__ENDPOINT__AUTH": self.config.auth,
            "FACEPIPE_EDGE__ENDPOINT__REGION": self.region,
            "FACEPIPE_EDGE__RESPONSES__QUEUE_URL": self.response_queue_url,
            "FACEPIPE_EDGE__RESPONSES__ENDPOINT_URL": self.endpoint_url,
        }

    def engine_summary(self) -> str:
        """What runs the networks, from which files: "onnx, models <dir>" or "torch, weights <file>"."""
        if self.config.engine == "onnx":
            return f"onnx, models {self.model_env['FACEPIPE_MODELS_DIR']}"
        return f"torch, weights {self.model_env['FACEPIPE_WEIGHTS_PATH']}"

    def enroll(self, people: dict[str, list[Path]]) -> Any:
        """Enroll photos into this stack's gallery with the handlers' engine and model files, run in this process;
        the recognition workers see the new gallery from their next batch.
        Returns cloud.functions.enrollment's report."""
        from cloud.functions.detection.detector import Detector
        from cloud.functions.enrollment import enroll_photos
        from cloud.functions.recognition.embedder import Embedder
        from cloud.functions.settings import get_settings

        settings = get_settings()  # the functions' FACEPIPE_* values, which start() put in this process too
        if self._enroll_models is None:
            models_dir = Path(settings.models_dir) if settings.models_dir else None
            self._enroll_models = (
                Detector(min_probability=settings.min_face_probability, max_side=settings.detect_max_side,
                         threads=settings.threads, engine=settings.engine, models_dir=models_dir),
                Embedder(settings.weights_path, threads=settings.threads, engine=settings.engine,
                         models_dir=settings.models_dir))
        detector, embedder = self._enroll_models
        return enroll_photos(self.gallery_uri, settings.weights_path, people, detector=detector, embedder=embedder)

    def _set_env(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        _clear_client_caches()


def moto_iam_caller(access_key: str) -> Any:
    """The IAM user or STS session an access key belongs to, read from the moto server this process runs: the keys
    `facepipe device add` created over IAM's API and the device role's sessions, so the local URL accepts their
    signatures, and a removed device's or an expired session's not. Returns a function_url.Caller or None."""
    from cloud.emulator.identities import caller_of

    return caller_of(access_key)


def _clear_client_caches() -> None:
    """Settings and boto3 clients are cached per process; they must follow the environment."""
    from cloud.functions import aws
    from cloud.functions.settings import get_settings

    get_settings.cache_clear()
    aws.client.cache_clear()
