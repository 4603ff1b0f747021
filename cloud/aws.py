"""boto3 clients, created once per process.

Endpoints come from boto3's standard configuration (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SQS`, ...),
so the local stack only has to set environment variables: there is no local-only code path.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)


@cache
def client(service: str) -> Any:
    """A cached boto3 client for `service` ("sqs", "s3")."""
    return boto3.session.Session().client(service, config=_CONFIG)


def utf8_size(text: str) -> int:
    """SQS counts message size in UTF-8 bytes (moto counts characters, so we check it ourselves)."""
    return len(text.encode("utf-8"))
