"""Stand-in Lambda handlers for the local runtime's tests (tests/integration/test_runtime.py): run by real
worker processes (awslambdaric) through the local Runtime API, so they live in an importable module."""

from __future__ import annotations

import json
import os
import time
from typing import Any

INITIALISED_AT = time.time()  # once per execution environment: the init phase


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """What the worker saw: the event, its context and its environment; sleeps `sleep_s` first (a key of
    the event, or of its JSON body when it comes through the Function URL)."""
    arguments = json.loads(event["body"]) if "body" in event else event
    time.sleep(float(arguments.get("sleep_s", 0)))
    return {
        "event": event,
        "pid": os.getpid(),
        "initialised_at": INITIALISED_AT,
        "request_id": context.aws_request_id,
        "function_arn": context.invoked_function_arn,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "function_name": context.function_name,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "trace_id": os.environ.get("_X_AMZN_TRACE_ID"),
        "environ": dict(os.environ),
    }


def fail(event: dict[str, Any], context: Any) -> None:
    raise ValueError("stand-in handler error")


def exit_now(event: dict[str, Any], context: Any) -> None:
    os._exit(3)
