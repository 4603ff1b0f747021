from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cloud.functions import aws
from cloud.functions.contracts import MAX_QUEUE_MESSAGE_BYTES
from cloud.functions.settings import Settings, get_settings
from tests.moto_env import moto_server, point_boto3_at
from tests.photos import PACKAGED, SHARED, packaged, weights_path


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def settings(moto_endpoint: str, onnx_models: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Detection settings with a fresh request queue and bucket on the moto server, on the default engine (onnx)
    with the session's exported networks."""
    point_boto3_at(moto_endpoint, monkeypatch.setenv)
    monkeypatch.setenv("FACEPIPE_MODELS_DIR", str(onnx_models))
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


# --- the ONNX engine (issue 24) -----------------------------------------------------------------------

# Packaged photos whose faces measure the export's parity and the engines' agreement: one-face portraits,
# a group photo (six faces) and two strangers.
PARITY_PHOTOS = ["face_recognition/obama.jpg", "face_recognition/obama2.jpg", "face_recognition/obama3.jpg",
                 "face_recognition/biden.jpg", "insightface/t1.jpg", "matplotlib/grace_hopper.jpg",
                 "skimage/astronaut.png"]


@pytest.fixture(scope="session")
def packaged_face_crops() -> dict[str, list[np.ndarray]]:
    """Every face the project's Detector finds in each PARITY_PHOTOS photo: the crops the functions embed."""
    from cloud.functions.detection.detector import Detector

    detector = Detector()
    crops = {}
    for name in PARITY_PHOTOS:
        with Image.open(packaged(name)) as image:
            crops[name] = [face.crop for face in detector.detect(image.convert("RGB"))]
    return crops


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir as `facepipe models export` writes it (pnet, rnet, onet and inception_resnet_v1.onnx, about
    5 s), exported from facenet-pytorch and the test weights for this session, parity measured on the packaged
    photos' faces."""
    from cloud.operator.models.export import export_networks

    models_dir = tmp_path_factory.mktemp("models")
    export_networks(weights_path(), models_dir, PACKAGED)
    return models_dir


@pytest.fixture(scope="session")
def shared_identity_crops() -> dict[Path, np.ndarray]:
    """The one face of every ../shared identities/*/*.jpg photo, detected once per session."""
    from cloud.functions.detection.detector import Detector

    detector = Detector()
    crops = {}
    for photo in sorted((SHARED / "identities").glob("*/*.jpg")):
        with Image.open(photo) as image:
            faces = detector.detect(image.convert("RGB"))
        assert len(faces) == 1, f"{photo}: {len(faces)} faces"
        crops[photo] = faces[0].crop
    return crops
