from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud import aws
from cloud.contracts import MAX_QUEUE_MESSAGE_BYTES
from cloud.settings import Settings, get_settings
from tests.moto_env import moto_server, point_boto3_at
from tests.photos import packaged


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def settings(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Detection settings with a fresh request queue and bucket on the moto server."""
    point_boto3_at(moto_endpoint, monkeypatch.setenv)
    suffix = uuid.uuid4().hex[:12]
    queue = aws.client("sqs").create_queue(
        QueueName=f"requests-{suffix}", Attributes={"MaximumMessageSize": str(MAX_QUEUE_MESSAGE_BYTES)}
    )
    aws.client("s3").create_bucket(Bucket=f"facepipe-{suffix}")
    monkeypatch.setenv("FACEPIPE_REQUEST_QUEUE_URL", queue["QueueUrl"])
    monkeypatch.setenv("FACEPIPE_BUCKET", f"facepipe-{suffix}")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()
    aws.client.cache_clear()


@pytest.fixture(scope="session")
def mtcnn_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pnet/rnet/onet.onnx exported from facenet-pytorch for this session (about a second)."""
    from cloud.models.mtcnn_export import export_mtcnn

    models = tmp_path_factory.mktemp("models")
    export_mtcnn(models, packaged("face_recognition/obama.jpg"))
    return models
