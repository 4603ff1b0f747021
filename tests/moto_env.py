"""A real moto server over HTTP for tests that need SQS/S3 but not the whole local stack."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3

from cloud.emulator.moto_server import MotoServer
from cloud.functions import aws

REGION = "us-east-1"


@contextmanager
def moto_server() -> Iterator[str]:
    """Start moto on a free loopback port, as the local stack does; yields its endpoint URL."""
    server = MotoServer()
    endpoint = server.start()
    try:
        yield endpoint
    finally:
        server.stop()


@contextmanager
def moto_sqs() -> Iterator[Any]:
    """An SQS client of a moto server of its own, started as the local stack starts its server."""
    with moto_server() as endpoint:
        yield boto3.session.Session().client("sqs", endpoint_url=endpoint, region_name=REGION,
                                             aws_access_key_id="AKIAMOTOSERVERTEST00", aws_secret_access_key="test")


def point_boto3_at(endpoint: str, setenv: Callable[[str, str], None], region: str = REGION) -> None:
    """Make cloud.functions.aws's clients (and so the handlers) reach `endpoint`, as the local stack does."""
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region, "AWS_REGION": region,
    }.items():
        setenv(name, value)
    aws.client.cache_clear()
