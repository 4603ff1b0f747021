"""A real moto server over HTTP for tests that need SQS/S3 but not the whole local stack."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from moto.server import ThreadedMotoServer

from cloud import aws

REGION = "us-east-1"


@contextmanager
def moto_server() -> Iterator[str]:
    """Start moto on a free loopback port; yields its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def point_boto3_at(endpoint: str, setenv: Callable[[str, str], None], region: str = REGION) -> None:
    """Make cloud.aws's clients (and so the handlers) reach `endpoint`, as the local stack does."""
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region, "AWS_REGION": region,
    }.items():
        setenv(name, value)
    aws.client.cache_clear()
