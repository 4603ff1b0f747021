"""Recognition accuracy at the published default threshold, through the real pipeline: enrollment
(MTCNN + InceptionResnetV1 into a gallery file), then detect, embed and match probe photos.

The shared set is the main test; the packaged photos make a self-contained version for machines
without ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cloud.functions.contracts import UNKNOWN_NAME
from cloud.functions.detection.detector import Detector
from cloud.functions.enrollment import enroll_photos
from cloud.functions.recognition.embedder import Embedder
from cloud.functions.recognition.gallery import Gallery, load_gallery
from tests.photos import packaged, requires_shared, weights_path
from tests.recognition_split import THRESHOLD, decisions, enrollment_photos, recognise, stranger_decisions


@pytest.fixture(scope="module")
def models() -> tuple[Detector, Embedder]:
    return Detector(), Embedder(weights_path())


def embed_photo(photo: Path, models: tuple[Detector, Embedder]) -> np.ndarray:
    detector, embedder = models
    faces = detector.detect(Image.open(photo).convert("RGB"))
    assert len(faces) == 1, f"{photo}: {len(faces)} faces"
    return embedder.embed([faces[0].crop])


def enrolled_gallery(tmp_path: Path, people: dict[str, list[Path]], models: tuple[Detector, Embedder]) -> Gallery:
    uri = str(tmp_path / "gallery.npz")
    report = enroll_photos(uri, weights_path(), people, detector=models[0], embedder=models[1])
    assert report.skipped == [] and report.enrolled == {name: len(p) for name, p in people.items()}
    return load_gallery(uri)


# --- shared photos -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_gallery(tmp_path_factory: pytest.TempPathFactory, models: tuple[Detector, Embedder]) -> Gallery:
    """Every identity's 1.jpg enrolled."""
    return enrolled_gallery(tmp_path_factory.mktemp("shared"), enrollment_photos(), models)


@pytest.fixture(scope="module")
def shared_probes(models: tuple[Detector, Embedder], shared_identity_crops: dict[Path, np.ndarray]
                  ) -> dict[Path, np.ndarray]:
    """The embedding of every identities/ photo, each detected once."""
    return dict(zip(shared_identity_crops, models[1].embed(list(shared_identity_crops.values())), strict=True))


@requires_shared
def test_every_second_photo_is_recognised_with_the_right_name(
    shared_gallery: Gallery, shared_probes: dict[Path, np.ndarray]
) -> None:
    results = {key: match for key, match in decisions(shared_gallery, shared_probes).items() if key.endswith("/2.jpg")}
    assert len(results) >= 20
    wrong = {key: match for key, match in results.items() if match[0] != key.split("/")[0]}
    assert not wrong, f"at threshold {THRESHOLD}: {wrong}"


@requires_shared
def test_people_who_are_not_enrolled_come_back_unknown(
    shared_gallery: Gallery, shared_probes: dict[Path, np.ndarray]
) -> None:
    # Leave one out: each person in turn is taken out of the gallery and probed with every photo.
    named = {key: match for key, match in stranger_decisions(shared_gallery, shared_probes).items()
             if match[0] != UNKNOWN_NAME}
    assert not named, f"strangers given a name at threshold {THRESHOLD}: {named}"


@requires_shared
def test_top_candidates_are_the_nearest_distinct_names_whatever_the_threshold(
    shared_gallery: Gallery, shared_probes: dict[Path, np.ndarray]
) -> None:
    probes = {path: e for path, e in shared_probes.items() if path.name == "2.jpg"}
    embeddings = np.stack(list(probes.values()))
    ranked = shared_gallery.candidates(embeddings, 3)
    matches = shared_gallery.match(embeddings, THRESHOLD)
    for path, candidates, (name, distance) in zip(probes, ranked, matches, strict=True):
        names = [n for n, _ in candidates]
        distances = [d for _, d in candidates]
        assert len(set(names)) == 3 and distances == sorted(distances)
        assert names[0] == path.parent.name == name and distances[0] == distance  # the nearest is the match
        for other, d in candidates[1:]:  # each name's distance is its nearest enrolled embedding's
            rows = shared_gallery.embeddings[[i for i, n in enumerate(shared_gallery.names) if n == other]]
            assert d == pytest.approx(float(np.linalg.norm(rows - probes[path], axis=1).min()), abs=1e-4)
            assert d > THRESHOLD  # a stranger to this face, kept as evidence all the same
    # a gallery with two people gives two candidates; an empty one none
    two = Gallery(shared_gallery.model_tag, ["a", "a", "b"], shared_gallery.embeddings[:3])
    assert [len(c) for c in two.candidates(embeddings[:2], 3)] == [2, 2]
    assert Gallery(shared_gallery.model_tag).candidates(embeddings[:2], 3) == [[], []]


# --- packaged photos (self-contained) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def packaged_gallery(tmp_path_factory: pytest.TempPathFactory, models: tuple[Detector, Embedder]) -> Gallery:
    people = {"barack_obama": [packaged("face_recognition/obama.jpg")],
              "joe_biden": [packaged("face_recognition/biden.jpg")]}
    return enrolled_gallery(tmp_path_factory.mktemp("packaged"), people, models)


@pytest.mark.parametrize("photo", ["face_recognition/obama2.jpg", "face_recognition/obama3.jpg"])
def test_packaged_obama_photos_are_recognised(
    photo: str, packaged_gallery: Gallery, models: tuple[Detector, Embedder]
) -> None:
    name, distance = recognise(embed_photo(packaged(photo), models), packaged_gallery)
    assert name == "barack_obama", distance


@pytest.mark.parametrize("photo", ["matplotlib/grace_hopper.jpg", "skimage/astronaut.png"])
def test_packaged_strangers_are_unknown(
    photo: str, packaged_gallery: Gallery, models: tuple[Detector, Embedder]
) -> None:
    name, distance = recognise(embed_photo(packaged(photo), models), packaged_gallery)
    assert name == UNKNOWN_NAME
    assert distance is not None and distance > THRESHOLD
