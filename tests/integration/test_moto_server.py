"""The local stack's moto server: what it does per request, on a real server over HTTP."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import moto
import pytest

from cloud.local.moto_server import MotoServer


def test_requests_are_routed_without_listing_motos_package_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto 5 lists its package directory on every request to route it; the local stack's server lists it once."""
    server = MotoServer()
    endpoint = server.start()
    package = Path(moto.__file__).parent
    listings: list[str] = []
    real_listdir = os.listdir

    def listdir(path: str = ".") -> list[str]:
        if Path(path).resolve() == package.resolve():
            listings.append(path)
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    try:
        sqs = boto3.session.Session().client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                                             aws_access_key_id="AKIAMOTOSERVERTEST00", aws_secret_access_key="test")
        url = sqs.create_queue(QueueName="routed-once")["QueueUrl"]  # SQS's backend loads on its first request
        listings.clear()
        sqs.send_message(QueueUrl=url, MessageBody="hello")
        assert [m["Body"] for m in sqs.receive_message(QueueUrl=url)["Messages"]] == ["hello"]
    finally:
        server.stop()
    assert listings == []
