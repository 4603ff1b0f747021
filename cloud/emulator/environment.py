"""One local Lambda execution environment: a worker process running awslambdaric against its own Runtime API.

The worker is `python -m cloud.emulator.worker <LogicalId> <handler>` in a process group of its own (so it
is killed with everything it started), with Lambda's environment variables. Like Lambda, the environment
- runs the init phase once (the handler module's imports and model load) before its first `next`;
- runs one invocation at a time, within the function's timeout: past it, the worker is killed
  (`Task timed out after X seconds`) and the environment is gone;
- fails an invocation whose worker dies (`Runtime.ExitError`), and an init that fails or dies
  (`Runtime.InitError`);
- logs a `REPORT RequestId: ...` line per invocation, with `Init Duration` on the first invocation of an
  environment started for it (a cold start).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cloud.emulator.runtime_api import Invocation, RuntimeApiServer

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]  # the worker imports the handlers from here (Lambda's task root)
_POLL_S = 0.05  # how often a waiting invocation checks the worker is still alive


@dataclass(frozen=True)
class FunctionSpec:
    """A function of template.yaml as the local stack runs it."""

    logical_id: str  # DetectionFunction, RecognitionFunction: on each worker's command line
    handler: str  # the image's CMD / ImageConfig.Command, e.g. cloud.functions.detection.handler.handler
    name: str  # the function name (AWS_LAMBDA_FUNCTION_NAME)
    region: str
    timeout_s: float
    memory_mb: int
    environment: dict[str, str] = field(default_factory=dict)  # FACEPIPE_*, AWS_* endpoint and credentials
    init_timeout_s: float = 300.0  # a worker not ready by then is an init failure
    host: str = "127.0.0.1"
    # The function's "log group": its workers' stdout and stderr (JSON logs, EMF metrics) appended here; None:
    # this process's own, as a terminal shows them.
    log_file: Path | None = None

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:123456789012:function:{self.name}:live"  # invoked through the alias


class FunctionError(Exception):
    """An invocation that failed as Lambda reports it: `error_type` is the handler's exception name, or
    Lambda's own (Runtime.InitError, Runtime.ExitError, Sandbox.Timedout)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


def worker_environment(spec: FunctionSpec, runtime_api: str) -> dict[str, str]:
    """What a Lambda function's process sees: our process's own basics (PATH, HOME, ...) without any
    AWS_/FACEPIPE_/Lambda variable of ours, then Lambda's variables and the function's."""
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("AWS_", "FACEPIPE_", "LAMBDA_", "_HANDLER", "_X_AMZN", "POWERTOOLS_"))}
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {
        **inherited,
        "PYTHONPATH": python_path,
        "PYTHONUNBUFFERED": "1",
        **spec.environment,
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
        "AWS_LAMBDA_FUNCTION_VERSION": "1",  # the version the `live` alias points to
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"local/[1]{uuid.uuid4().hex}",
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
        "_HANDLER": spec.handler,
        "LAMBDA_TASK_ROOT": str(REPO),
    }


class ExecutionEnvironment:
    """`start()`, `wait_initialised()`, then `invoke()` one event at a time; `kill()` when done."""

    def __init__(self, spec: FunctionSpec, *, pre_started: bool = False) -> None:
        self.spec = spec
        self.pre_started = pre_started  # provisioned: its init is not reported on an invocation
        self.api = RuntimeApiServer(spec.host)
        self.process: subprocess.Popen[bytes] | None = None
        self.invocations = 0
        self.init_ms = 0.0
        self._spawned = 0.0
        self._lock = threading.Lock()  # start() and kill() may race (the pool stops while one starts)
        self._killed = False
        self._peak_mb = 0

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        with self._lock:
            if self._killed:
                raise FunctionError("Runtime.Stopped", f"{self.spec.logical_id}: environment stopped before it started")
            self.api.start()
            self._spawned = time.perf_counter()
            # The logical ID names the process: `ps` and the reliability tests find a function's workers by it.
            command = [sys.executable, "-m", "cloud.emulator.worker", self.spec.logical_id, self.spec.handler]
            with (open(self.spec.log_file, "ab") if self.spec.log_file else contextlib.nullcontext()) as log_file:
                self.process = subprocess.Popen(command, cwd=REPO, env=worker_environment(self.spec, self.api.address),
                                                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                                start_new_session=True)

    def wait_initialised(self) -> None:
        """Return once the worker asks for its first event; FunctionError(Runtime.InitError) if it reports
        an init error, exits or is not ready within the init timeout (the environment is then killed)."""
        deadline = time.monotonic() + self.spec.init_timeout_s
        while not self.api.initialised.wait(_POLL_S):
            problem = self._init_problem(deadline)
            if problem:
                self.kill()
                log.error("%s: init failed: %s", self.spec.logical_id, problem)
                raise FunctionError("Runtime.InitError", problem)
        self.init_ms = (self.api.initialised_at - self._spawned) * 1000

    def _init_problem(self, deadline: float) -> str | None:
        if self.api.init_error is not None:
            error = self.api.init_error
            return f"{error.get('errorType')}: {error.get('errorMessage')}"
        if not self.alive:
            return f"Runtime exited with error: {self._exit_reason()}"
        if time.monotonic() > deadline:
            return f"init not done within {self.spec.init_timeout_s:.0f} s"
        return None

    def invoke(self, request_id: str, payload: bytes, trace_id: str = "") -> bytes:
        """The worker's response document for `payload`; FunctionError for a handler error, a timeout
        (worker killed) or a worker that exits meanwhile."""
        deadline = time.time() + self.spec.timeout_s
        invocation = Invocation(request_id=request_id, payload=payload, deadline_ms=int(deadline * 1000),
                                function_arn=self.spec.arn, trace_id=trace_id or _trace_id())
        cold = self.invocations == 0 and not self.pre_started
        self.invocations += 1
        submitted = time.perf_counter()
        self.api.submit(invocation)
        status = ""
        try:
            while not invocation.done.wait(_POLL_S):
                if time.time() >= deadline:
                    self._peak_mb = self.max_memory_mb()  # read while the worker still exists
                    self.kill()
                    status = "timeout"
                    message = f"Task timed out after {self.spec.timeout_s:.2f} seconds"
                    log.error("%s %s %s", self.spec.logical_id, request_id, message)
                    raise FunctionError("Sandbox.Timedout", message)
                if not self.alive:
                    status = "error"
                    message = f"RequestId: {request_id} Error: Runtime exited with error: {self._exit_reason()}"
                    log.error("%s %s", self.spec.logical_id, message)
                    raise FunctionError("Runtime.ExitError", message)
            if invocation.error is not None:
                status = "error"
                raise FunctionError(str(invocation.error.get("errorType")), str(invocation.error.get("errorMessage")))
            return invocation.response or b"null"
        finally:
            started = invocation.started or submitted
            self._report(request_id, (time.perf_counter() - started) * 1000, cold, status)

    def _report(self, request_id: str, duration_ms: float, cold: bool, status: str) -> None:
        line = (f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
                f"Billed Duration: {math.ceil(duration_ms)} ms\tMemory Size: {self.spec.memory_mb} MB\t"
                f"Max Memory Used: {self.max_memory_mb() or self._peak_mb} MB")
        if cold:
            line += f"\tInit Duration: {self.init_ms:.2f} ms"
        if status:
            line += f"\tStatus: {status}"
        log.info("%s %s", self.spec.logical_id, line)

    def max_memory_mb(self) -> int:
        """The worker's resident-memory high-water mark (VmHWM), as Lambda's Max Memory Used."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return round(int(line.split()[1]) / 1024)
        except OSError:  # the worker is gone: the figure is lost with it
            pass
        return 0

    def _exit_reason(self) -> str:
        code = self.process.poll() if self.process is not None else None
        if code is not None and code < 0:
            return f"signal: {signal.Signals(-code).name.removeprefix('SIG').lower()}"
        return f"exit status {code}"

    def kill(self) -> None:
        """Kill the worker's whole process group and close its Runtime API; safe to call twice."""
        with self._lock:
            first, self._killed = not self._killed, True
            if self.process is not None and self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                    os.killpg(self.process.pid, signal.SIGKILL)
            if self.process is not None:
                self.process.wait()
        if first:
            self.api.stop()


def _trace_id() -> str:
    now = int(time.time())
    return f"Root=1-{now:08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"
