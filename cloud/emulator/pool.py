"""A function's execution environments: started on demand up to its concurrency limit, reused while warm.

`invoke(event, context)` has a handler's signature, so the local Function URL and SQS trigger call a
pool as they would call a handler, and see what Lambda's callers see: the function's result, or an
exception (FunctionError: the invocation failed; Throttled: no environment free within the wait).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

from cloud.emulator.environment import ExecutionEnvironment, FunctionError, FunctionSpec

log = logging.getLogger(__name__)


class Throttled(Exception):
    """Every environment the function may have is busy (Lambda's TooManyRequestsException)."""


class FunctionPool:
    """Up to `concurrency` environments of one function; `wait_s` is how long an invocation may queue
    for a busy one (None: as long as it takes, as the SQS poller does) before Throttled."""

    def __init__(self, spec: FunctionSpec, concurrency: int, wait_s: float | None = None) -> None:
        if concurrency < 0:
            raise ValueError("concurrency must be >= 0")
        self.spec, self.concurrency, self.wait_s = spec, concurrency, wait_s
        self._idle: list[ExecutionEnvironment] = []  # warm, last used at the end (reused first)
        self._all: set[ExecutionEnvironment] = set()  # idle, busy and starting
        self._slots = 0  # environments counted against the limit: started or starting
        self._changed = threading.Condition()
        self._stopped = False

    @property
    def environments(self) -> list[ExecutionEnvironment]:
        with self._changed:
            return list(self._all)

    def prestart(self) -> ExecutionEnvironment:
        """Start and initialise one environment now (like provisioned concurrency): no cold start for
        the first invocation. Raises FunctionError(Runtime.InitError) if it cannot init."""
        with self._changed:
            if self._slots >= self.concurrency:
                raise ValueError(f"{self.spec.logical_id}: no concurrency left to pre-start an environment")
            self._slots += 1
        environment = self._start(pre_started=True)
        log.info("%s: execution environment pid %d pre-started, init %.0f ms", self.spec.logical_id,
                 environment.pid, environment.init_ms)
        self._release(environment)
        return environment

    def invoke(self, event: Any, context: Any = None) -> Any:
        """Run `event` in a free (or new) environment, waiting at most the pool's `wait_s` for one; the
        handler's result, decoded."""
        return self._invoke(event, context, self.wait_s)

    def invoke_when_free(self, event: Any, context: Any = None) -> Any:
        """`invoke`, waiting as long as it takes for an environment: an SQS poller sharing the function
        with its Function URL holds its batch rather than failing it."""
        return self._invoke(event, context, None)

    def _invoke(self, event: Any, context: Any, wait_s: float | None) -> Any:
        request_id = getattr(context, "aws_request_id", None) or str(uuid.uuid4())
        environment = self._acquire(wait_s)
        try:
            return json.loads(environment.invoke(request_id, json.dumps(event).encode("utf-8")))
        finally:
            self._release(environment)

    def reclaim_idle(self) -> int:
        """Shut down every idle environment, as Lambda reclaims the ones left idle: the next invocation starts a
        new one and pays its cold start. Busy ones finish their invocation and stay. How many were shut down."""
        with self._changed:
            idle, self._idle = self._idle, []
        for environment in idle:
            environment.kill()
            self._forget(environment)
        return len(idle)

    def stop(self) -> None:
        """Kill every environment (in-flight invocations fail) and refuse new invocations."""
        with self._changed:
            self._stopped = True
            environments = list(self._all)
            self._changed.notify_all()
        for environment in environments:
            environment.kill()

    def _acquire(self, wait_s: float | None) -> ExecutionEnvironment:
        deadline = None if wait_s is None else time.monotonic() + wait_s
        dead: list[ExecutionEnvironment] = []  # idle ones that died meanwhile: replaced, never invoked
        try:
            with self._changed:
                while True:
                    if self._stopped:
                        raise FunctionError("Runtime.Stopped", f"{self.spec.logical_id} is stopping")
                    while self._idle:
                        environment = self._idle.pop()
                        if environment.alive:
                            return environment
                        dead.append(environment)
                        self._all.discard(environment)
                        self._slots -= 1
                    if self._slots < self.concurrency:
                        self._slots += 1
                        break
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise Throttled(f"{self.spec.logical_id}: all {self.concurrency} environments busy")
                    self._changed.wait(remaining)
        finally:
            for environment in dead:
                environment.kill()
        return self._start(pre_started=False)  # a cold start, paid by this invocation

    def _start(self, *, pre_started: bool) -> ExecutionEnvironment:
        """A new initialised environment in a slot already taken; the slot is freed if init fails."""
        environment = ExecutionEnvironment(self.spec, pre_started=pre_started)
        with self._changed:
            self._all.add(environment)
        try:
            environment.start()
            environment.wait_initialised()
        except BaseException:
            environment.kill()
            self._forget(environment)
            raise
        return environment

    def _release(self, environment: ExecutionEnvironment) -> None:
        with self._changed:
            if environment.alive and not self._stopped:
                self._idle.append(environment)
                self._changed.notify()
                return
        environment.kill()  # timed out, crashed or killed: a fresh one replaces it on demand
        self._forget(environment)

    def _forget(self, environment: ExecutionEnvironment) -> None:
        with self._changed:
            self._all.discard(environment)
            self._slots -= 1
            self._changed.notify()
