"""boto3 clients, created once per process.

Endpoints come from boto3's standard configuration (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SQS`, ...),
so the local stack only has to set environment variables: there is no local-only code path. The region is
read as AWS CLI v2 reads it (`session`), which boto3 alone does not: it skips `AWS_REGION`.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)


def session(region: str | None = None) -> boto3.session.Session:
    """A boto3 session in the region AWS CLI v2 would use: `region` (a --region flag), else `AWS_REGION`,
    else `AWS_DEFAULT_REGION`, else the profile's `region`. boto3 reads only the last two itself."""
    return boto3.session.Session(region_name=region or os.environ.get("AWS_REGION") or None)


def add_region_argument(parser: Any) -> None:
    """`--region` for an operator command (argparse parser or group)."""
    parser.add_argument("--region", help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, the profile's region)")


@cache
def client(service: str) -> Any:
    """A cached boto3 client for `service` ("sqs", "s3")."""
    return session().client(service, config=_CONFIG)


def utf8_size(text: str) -> int:
    """SQS counts message size in UTF-8 bytes (moto counts characters, so we check it ourselves)."""
    return len(text.encode("utf-8"))
