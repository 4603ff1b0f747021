"""The local stack's Lambda runtime: real worker processes (awslambdaric) serving stand-in handlers
(tests/runtime_functions.py) through the local Runtime API, and the Function URL in front of them.
No models here: each worker starts in a fraction of a second."""

from __future__ import annotations

import dataclasses
import http.client
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cloud.emulator.environment import FunctionError, FunctionSpec
from cloud.emulator.function_url import FunctionUrlServer
from cloud.emulator.pool import FunctionPool, Throttled
from cloud.emulator.runtime_api import Invocation, RuntimeApiServer
from tests.photos import REPO
from tests.processes import alive, worker_pids

ECHO = "tests.runtime_functions.echo"
REPORT = re.compile(r"REPORT RequestId: (?P<id>\S+)\tDuration: [\d.]+ ms\tBilled Duration: \d+ ms\t"
                    r"Memory Size: (?P<memory>\d+) MB\tMax Memory Used: (?P<used>\d+) MB"
                    r"(\tInit Duration: (?P<init>[\d.]+) ms)?")


def spec(handler: str = ECHO, *, timeout_s: float = 5, logical_id: str = "EchoFunction") -> FunctionSpec:
    return FunctionSpec(logical_id=logical_id, handler=handler, name=f"test-{logical_id}", region="eu-west-1",
                        timeout_s=timeout_s, memory_mb=512, environment={"FACEPIPE_STANDIN": "yes"})


@pytest.fixture
def pools() -> Iterator[Callable[..., FunctionPool]]:
    """Make pools; every worker they started is killed at the end of the test."""
    made: list[FunctionPool] = []

    def make(function: FunctionSpec, concurrency: int = 1, wait_s: float | None = None) -> FunctionPool:
        made.append(FunctionPool(function, concurrency, wait_s))
        return made[-1]

    yield make
    for pool in made:
        pool.stop()


@pytest.fixture
def url() -> Iterator[Callable[[FunctionPool], str]]:
    servers: list[FunctionUrlServer] = []

    def serve(pool: FunctionPool) -> str:
        servers.append(FunctionUrlServer(pool.invoke, auth="none", function_name=pool.spec.name))
        return servers[-1].start()

    yield serve
    for server in servers:
        server.stop()


def reports(caplog: pytest.LogCaptureFixture) -> list[dict[str, str | None]]:
    return [match.groupdict() for record in caplog.records if (match := REPORT.search(record.getMessage()))]


def test_runtime_api_serves_next_with_lambdas_headers_and_takes_the_response() -> None:
    server = RuntimeApiServer()
    server.start()
    try:
        invocation = Invocation(request_id="req-1", payload=b'{"a": 1}', deadline_ms=1_900_000_000_000,
                                function_arn="arn:aws:lambda:eu-west-1:123456789012:function:f:live",
                                trace_id="Root=1-00000000-000000000000000000000000")
        server.submit(invocation)
        connection = http.client.HTTPConnection(server.address, timeout=5)
        connection.request("GET", "/2018-06-01/runtime/invocation/next")
        reply = connection.getresponse()
        assert reply.status == 200 and reply.read() == b'{"a": 1}'
        assert reply.getheader("Content-Type") == "application/json"
        assert reply.getheader("Lambda-Runtime-Aws-Request-Id") == "req-1"
        assert reply.getheader("Lambda-Runtime-Deadline-Ms") == "1900000000000"
        assert reply.getheader("Lambda-Runtime-Invoked-Function-Arn") == invocation.function_arn
        assert reply.getheader("Lambda-Runtime-Trace-Id") == invocation.trace_id
        assert server.initialised.is_set()
        connection.request("POST", "/2018-06-01/runtime/invocation/other-id/response", body=b"{}")
        wrong = connection.getresponse()
        assert wrong.status == 400 and b"InvalidRequestID" in wrong.read()
        connection.request("POST", "/2018-06-01/runtime/invocation/req-1/response", body=b'{"ok": true}')
        accepted = connection.getresponse()
        assert accepted.status == 202 and accepted.read()
        assert invocation.done.is_set() and invocation.response == b'{"ok": true}'
    finally:
        server.stop()


def test_a_worker_sees_lambdas_context_and_environment_and_names_its_function(
        pools: Callable[..., FunctionPool]) -> None:
    pool = pools(spec(timeout_s=7))
    os.environ["FACEPIPE_NOT_FOR_WORKERS"] = "leak"  # this process's own settings stay out of the worker
    try:
        seen = pool.invoke({"hello": "worker"})
    finally:
        del os.environ["FACEPIPE_NOT_FOR_WORKERS"]
    assert seen["event"] == {"hello": "worker"}
    assert seen["function_arn"] == "arn:aws:lambda:eu-west-1:123456789012:function:test-EchoFunction:live"
    assert seen["function_name"] == "test-EchoFunction"
    assert seen["memory_limit_in_mb"] == "512"  # a string, as in Lambda
    assert 5_000 < seen["remaining_ms"] <= 7_000  # from Lambda-Runtime-Deadline-Ms
    assert seen["trace_id"].startswith("Root=1-")  # from Lambda-Runtime-Trace-Id
    env = seen["environ"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "test-EchoFunction"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "1"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/test-EchoFunction"
    assert env["_HANDLER"] == ECHO
    assert env["FACEPIPE_STANDIN"] == "yes" and "FACEPIPE_NOT_FOR_WORKERS" not in env
    (environment,) = pool.environments
    assert env["AWS_LAMBDA_RUNTIME_API"] == environment.api.address
    assert seen["pid"] == environment.pid and worker_pids("EchoFunction") == {environment.pid}


def test_warm_workers_are_reused_and_only_cold_starts_report_init_duration(
        pools: Callable[..., FunctionPool], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cloud.emulator.environment")
    pool = pools(spec())
    first, second, third = (pool.invoke({"n": n}) for n in range(3))
    # One execution environment: one process, one init phase, three invocations.
    assert first["pid"] == second["pid"] == third["pid"]
    assert first["initialised_at"] == second["initialised_at"] == third["initialised_at"]
    lines = reports(caplog)
    assert [line["id"] for line in lines] == [first["request_id"], second["request_id"], third["request_id"]]
    assert lines[0]["init"] is not None and float(lines[0]["init"]) > 0
    assert lines[1]["init"] is None and lines[2]["init"] is None
    assert all(line["memory"] == "512" and int(line["used"] or 0) > 10 for line in lines)  # VmHWM of a python


def test_a_pre_started_worker_serves_without_a_cold_start(
        pools: Callable[..., FunctionPool], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cloud.emulator.environment")
    pool = pools(spec())
    environment = pool.prestart()
    assert environment.init_ms > 0
    assert pool.invoke({})["pid"] == environment.pid
    assert reports(caplog)[0]["init"] is None  # its init was paid before any invocation


def test_n_workers_serve_n_requests_at_once_and_one_more_is_throttled_429(
        pools: Callable[..., FunctionPool], url: Callable[[FunctionPool], str]) -> None:
    pool = pools(spec(), concurrency=2, wait_s=0.5)
    for _ in range(2):  # two warm workers, so that timing shows parallel work, not init
        pool.prestart()
    endpoint = url(pool)
    replies: list[requests.Response] = []

    def post(sleep_s: float) -> None:
        replies.append(requests.post(endpoint, json={"sleep_s": sleep_s}, timeout=30))

    started = time.monotonic()
    busy = [threading.Thread(target=post, args=(2.0,)) for _ in range(2)]
    for thread in busy:
        thread.start()
    time.sleep(0.5)  # both are running now
    throttled = requests.post(endpoint, json={"sleep_s": 0}, timeout=30)
    for thread in busy:
        thread.join()
    elapsed = time.monotonic() - started
    assert throttled.status_code == 429
    assert throttled.headers["x-amzn-ErrorType"] == "TooManyRequestsException"
    assert throttled.json() == {"Message": "Rate Exceeded."}
    assert [reply.status_code for reply in replies] == [200, 200]
    assert len({reply.json()["pid"] for reply in replies}) == 2  # one worker each
    assert elapsed < 3.5, f"2 x 2 s in parallel took {elapsed:.1f} s"
    # A request that arrives when a worker is free again is served.
    assert requests.post(endpoint, json={}, timeout=30).status_code == 200


def test_a_throttled_invocation_waits_up_to_the_bound_for_a_free_worker(
        pools: Callable[..., FunctionPool]) -> None:
    pool = pools(spec(), concurrency=1, wait_s=3.0)
    pool.prestart()
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(pool.invoke({"sleep_s": 1.0})))
    worker.start()
    time.sleep(0.3)
    queued = pool.invoke({})  # waits about 0.7 s, within the 3 s bound
    worker.join()
    assert queued["pid"] == results[0]["pid"]
    with pytest.raises(Throttled):
        FunctionPool(spec(), concurrency=0, wait_s=0).invoke({})  # reserved concurrency 0: always throttled


def test_a_timed_out_invocation_is_a_502_and_its_worker_is_replaced(
        pools: Callable[..., FunctionPool], url: Callable[[FunctionPool], str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cloud.emulator.environment")
    pool = pools(spec(timeout_s=1))
    endpoint = url(pool)
    pid = requests.post(endpoint, json={}, timeout=30).json()["pid"]
    started = time.monotonic()
    timed_out = requests.post(endpoint, json={"sleep_s": 5}, timeout=30)
    assert timed_out.status_code == 502 and time.monotonic() - started < 3
    assert "Task timed out after 1.00 seconds" in caplog.text
    assert not alive(pid)  # killed with its invocation
    fresh = requests.post(endpoint, json={}, timeout=30)
    assert fresh.status_code == 200 and fresh.json()["pid"] != pid
    assert reports(caplog)[-1]["init"] is not None  # the replacement was a cold start


def test_a_handler_error_fails_the_invocation_but_keeps_the_worker(pools: Callable[..., FunctionPool]) -> None:
    pool = pools(spec("tests.runtime_functions.fail"))
    with pytest.raises(FunctionError) as failed:
        pool.invoke({})
    assert failed.value.error_type == "ValueError" and "stand-in handler error" in failed.value.message
    (environment,) = pool.environments
    assert environment.alive


def test_a_functions_log_file_gets_its_workers_output(pools: Callable[..., FunctionPool], tmp_path: Path,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    """Like a log group: what the handler's runtime writes (here awslambdaric's error record) lands in the file,
    appended across workers, and not on this process's stdout or stderr."""
    log_file = tmp_path / "functions.log"
    log_file.write_text("an earlier line\n")
    pool = pools(dataclasses.replace(spec("tests.runtime_functions.fail"), log_file=log_file), concurrency=2)
    for _ in range(2):
        with pytest.raises(FunctionError):
            pool.invoke({})
    pool.stop()  # the workers have written all they will
    text = log_file.read_text()
    assert text.startswith("an earlier line\n") and text.count("stand-in handler error") >= 2
    out, err = capfd.readouterr()
    assert "stand-in handler error" not in out + err


def test_a_worker_that_exits_mid_invocation_is_runtime_exit_error(pools: Callable[..., FunctionPool]) -> None:
    pool = pools(spec("tests.runtime_functions.exit_now"))
    with pytest.raises(FunctionError) as crashed:
        pool.invoke({})
    assert crashed.value.error_type == "Runtime.ExitError" and "exit status 3" in crashed.value.message
    assert pool.environments == []  # gone; the next invocation starts a fresh one


def test_an_init_error_fails_the_invocation_with_runtime_init_error_and_a_502(
        pools: Callable[..., FunctionPool], url: Callable[[FunctionPool], str]) -> None:
    pool = pools(spec("tests.no_such_module.handler"))
    with pytest.raises(FunctionError) as failed:
        pool.invoke({})
    assert failed.value.error_type == "Runtime.InitError"
    assert "Runtime.ImportModuleError" in failed.value.message  # what the worker posted to /init/error
    assert pool.environments == []
    # Every invocation fails the same way until a worker manages to init: each one tries a new worker.
    assert requests.post(url(pool), json={}, timeout=30).status_code == 502


def test_stop_leaves_no_worker_behind(pools: Callable[..., FunctionPool]) -> None:
    pool = pools(spec(), concurrency=2)
    pool.prestart()
    busy = threading.Thread(target=lambda: pytest.raises(FunctionError, pool.invoke, {"sleep_s": 30}))
    busy.start()
    time.sleep(0.5)  # it holds the pre-started worker: the next invocation starts a second one
    pool.invoke({})
    pids = {environment.pid for environment in pool.environments}
    assert len(pids) == 2 and pids == worker_pids("EchoFunction")
    pool.stop()
    busy.join(timeout=5)
    assert not busy.is_alive()  # the in-flight invocation failed when its worker was killed
    assert not any(alive(pid) for pid in pids) and worker_pids("EchoFunction") == set()


def test_an_idle_worker_that_died_is_replaced_without_failing_an_invocation(
        pools: Callable[..., FunctionPool]) -> None:
    pool = pools(spec())
    pid = pool.prestart().pid
    os.kill(pid, signal.SIGKILL)
    while alive(pid):
        time.sleep(0.01)
    served = pool.invoke({})
    assert served["pid"] != pid and [e.pid for e in pool.environments] == [served["pid"]]


def test_reclaimed_idle_workers_exit_busy_ones_finish_and_the_next_invocation_is_a_cold_start(
        pools: Callable[..., FunctionPool], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cloud.emulator.environment")
    pool = pools(spec(), concurrency=2)
    started = {pool.prestart().pid, pool.prestart().pid}
    served: dict[str, Any] = {}
    busy = threading.Thread(target=lambda: served.update(pool.invoke({"sleep_s": 1})))
    busy.start()
    time.sleep(0.3)  # it holds one of the two workers
    assert pool.reclaim_idle() == 1
    busy.join(timeout=10)
    (reclaimed,) = started - {served["pid"]}
    assert served["pid"] in started and alive(served["pid"]) and not alive(reclaimed)
    assert [environment.pid for environment in pool.environments] == [served["pid"]]  # the busy one stayed warm
    assert pool.reclaim_idle() == 1 and pool.environments == [] and not alive(served["pid"])
    fresh = pool.invoke({})
    assert fresh["pid"] not in started
    assert reports(caplog)[-1]["init"] is not None  # a new worker: a cold start


def test_a_worker_whose_stack_process_died_exits_by_itself(tmp_path: Path) -> None:
    # A process that starts a worker and dies without stop() (as on SIGKILL): the worker's `next` loses its
    # Runtime API, and awslambdaric exits.
    pid_file = tmp_path / "pid"
    script = ("import os, sys; from pathlib import Path; from tests.integration.test_runtime import spec; "
              "from cloud.emulator.pool import FunctionPool; "
              "Path(sys.argv[1]).write_text(str(FunctionPool(spec(logical_id='OrphanFunction'), 1).prestart().pid)); "
              "os._exit(0)")
    subprocess.run([sys.executable, "-c", script, str(pid_file)], cwd=REPO, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60, check=True)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid) and worker_pids("OrphanFunction") == set()
