"""Enrollment: real photos, real MTCNN and real weights into a file gallery; the `facepipe enroll`
and `facepipe gallery list/remove` commands end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloud.functions.detection.detector import Detector
from cloud.functions.enrollment import enroll_photos, people_from_dir
from cloud.functions.recognition.embedder import Embedder
from cloud.functions.recognition.gallery import Gallery, GalleryModelMismatch, load_gallery, save_gallery
from cloud.functions.settings import get_settings
from cloud.operator.cli import main as facepipe
from tests.photos import SHARED, packaged, requires_shared, weights_path


@pytest.fixture(scope="module")
def models() -> tuple[Detector, Embedder]:
    return Detector(), Embedder(weights_path())


def enroll(uri: str, people: dict[str, list[Path]], models: tuple[Detector, Embedder], **kwargs: bool):
    detector, embedder = models
    return enroll_photos(uri, weights_path(), people, detector=detector, embedder=embedder, **kwargs)


def test_enroll_adds_one_embedding_per_single_face_photo(tmp_path: Path, models: tuple[Detector, Embedder]) -> None:
    # GIVEN two photos of one person, one of another, and a group photo (six faces)
    uri = str(tmp_path / "gallery.npz")
    people = {
        "barack_obama": [packaged("face_recognition/obama.jpg"), packaged("face_recognition/obama2.jpg")],
        "joe_biden": [packaged("face_recognition/biden.jpg")],
        "crowd": [packaged("insightface/t1.jpg")],
    }
    # WHEN enrolling them
    report = enroll(uri, people, models)
    # THEN the single-face photos are in the saved gallery, the group photo is reported and skipped
    assert report.enrolled == {"barack_obama": 2, "joe_biden": 1}
    assert [(s.path.name, s.reason) for s in report.skipped] == [
        ("t1.jpg", "6 faces found; an enrollment photo must show exactly one face")
    ]
    gallery = load_gallery(uri)
    assert gallery.counts() == {"barack_obama": 2, "joe_biden": 1}
    assert gallery.model_tag == models[1].model_tag == report.model_tag
    assert gallery.version == report.version
    np.testing.assert_allclose(np.linalg.norm(gallery.embeddings, axis=1), 1.0, atol=1e-5)
    # ... and Obama's two photos are nearer to each other than to Biden's
    obama_a, obama_b, biden = gallery.embeddings
    assert np.linalg.norm(obama_a - obama_b) < np.linalg.norm(obama_a - biden)


def test_enroll_appends_and_replace_starts_over(tmp_path: Path, models: tuple[Detector, Embedder]) -> None:
    uri = str(tmp_path / "gallery.npz")
    enroll(uri, {"barack_obama": [packaged("face_recognition/obama.jpg")]}, models)
    enroll(uri, {"barack_obama": [packaged("face_recognition/obama2.jpg")]}, models)
    assert load_gallery(uri).counts() == {"barack_obama": 2}
    enroll(uri, {"barack_obama": [packaged("face_recognition/obama3.jpg")]}, models, replace=True)
    assert load_gallery(uri).counts() == {"barack_obama": 1}


def test_gallery_built_with_other_weights_is_refused_and_left_alone(
    tmp_path: Path, models: tuple[Detector, Embedder]
) -> None:
    uri = str(tmp_path / "gallery.npz")
    save_gallery(Gallery("inception_resnet_v1:ffffffffffffffff"), uri)
    before = Path(uri).read_bytes()
    with pytest.raises(GalleryModelMismatch, match="ffffffffffffffff"):
        enroll(uri, {"joe_biden": [packaged("face_recognition/biden.jpg")]}, models)
    assert Path(uri).read_bytes() == before


@requires_shared
def test_photos_without_a_face_are_skipped(tmp_path: Path, models: tuple[Detector, Embedder]) -> None:
    uri = str(tmp_path / "gallery.npz")
    noface = sorted((SHARED / "noface").glob("*.jpg"))
    report = enroll(uri, {"nobody": noface}, models)
    assert report.enrolled == {} and report.version is None
    assert [s.path for s in report.skipped] == noface
    assert all(s.reason.startswith("no face found") for s in report.skipped)
    assert not Path(uri).exists()


def test_commands_enroll_list_remove(tmp_path: Path, onnx_models: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACEPIPE_ENGINE", raising=False)  # the default engine, as the functions run it: onnx
    get_settings.cache_clear()
    # GIVEN a people/ folder, one sub-folder per person (links to the packaged photos)
    people = tmp_path / "people"
    for name, photo in (("barack_obama", "obama.jpg"), ("barack_obama", "obama3.jpg"), ("joe_biden", "biden.jpg")):
        (people / name).mkdir(parents=True, exist_ok=True)
        (people / name / photo).symlink_to(packaged(f"face_recognition/{photo}"))
    (people / "crowd").mkdir()
    (people / "crowd" / "t1.jpg").symlink_to(packaged("insightface/t1.jpg"))
    assert list(people_from_dir(people)) == ["barack_obama", "crowd", "joe_biden"]
    uri = str(tmp_path / "gallery.npz")
    models_dir = str(onnx_models)

    # WHEN enrolling the folder, THEN the output names what was enrolled and what was skipped
    assert facepipe(["enroll", "--dir", str(people), "--gallery", uri, "--models-dir", models_dir]) == 0
    out = capsys.readouterr().out
    assert "enrolled barack_obama: 2 photo(s)" in out and "enrolled joe_biden: 1 photo(s)" in out
    assert "t1.jpg: 6 faces found" in out

    # list shows names, counts and the model tag
    assert facepipe(["gallery", "list", "--gallery", uri]) == 0
    out = capsys.readouterr().out
    assert load_gallery(uri).model_tag in out
    assert load_gallery(uri).model_tag.startswith("inception_resnet_v1.onnx:")  # embedded by the onnx engine
    assert "    2  barack_obama" in out and "    1  joe_biden" in out

    # remove drops every embedding of a name; removing an absent name fails
    assert facepipe(["gallery", "remove", "barack_obama", "--gallery", uri]) == 0
    assert load_gallery(uri).counts() == {"joe_biden": 1}
    assert facepipe(["gallery", "remove", "barack_obama", "--gallery", uri]) == 1
    assert "not in" in capsys.readouterr().err

    # nothing enrollable -> non-zero exit, gallery untouched
    before = Path(uri).read_bytes()
    crowd = str(people / "crowd" / "t1.jpg")
    assert facepipe(["enroll", "--name", "crowd", crowd, "--gallery", uri, "--models-dir", models_dir]) == 1
    assert Path(uri).read_bytes() == before

    # missing model files -> a clear error naming the path, exit 2 (engine onnx: the exported networks; torch:
    # the weights)
    missing = str(tmp_path / "absent")
    assert facepipe(["enroll", "--name", "x", crowd, "--gallery", uri, "--models-dir", missing]) == 2
    assert missing in capsys.readouterr().err
    missing = str(tmp_path / "absent.pt")
    assert facepipe(["enroll", "--name", "x", crowd, "--gallery", uri, "--engine", "torch", "--weights", missing]) == 2
    assert missing in capsys.readouterr().err


class _RemovingWhileEmbedding:
    """The real embedder, with a `facepipe gallery remove` run while it embeds: an erasure request
    made during an enrollment's slow part."""

    def __init__(self, embedder: Embedder, uri: str, name: str) -> None:
        self._embedder, self._uri, self._name = embedder, uri, name
        self.model_tag = embedder.model_tag

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        assert facepipe(["gallery", "remove", self._name, "--gallery", self._uri]) == 0
        return self._embedder.embed(crops)


def test_a_removal_during_enrollment_is_not_undone(tmp_path: Path, models: tuple[Detector, Embedder]) -> None:
    # GIVEN a gallery with Biden, and an enrollment of Obama during which Biden is removed
    uri = str(tmp_path / "gallery.npz")
    enroll(uri, {"joe_biden": [packaged("face_recognition/biden.jpg")]}, models)
    detector, embedder = models
    removing = _RemovingWhileEmbedding(embedder, uri, "joe_biden")
    report = enroll_photos(uri, weights_path(), {"barack_obama": [packaged("face_recognition/obama.jpg")]},
                           detector=detector, embedder=removing)  # type: ignore[arg-type]
    # THEN the enrollment merged into the gallery as it was after the removal: Biden stays removed
    assert report.enrolled == {"barack_obama": 1}
    assert load_gallery(uri).counts() == {"barack_obama": 1}


def test_a_name_that_would_break_outputs_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a person named with a '/', and model files that do not exist (so no model could be loaded)
    uri = str(tmp_path / "gallery.npz")
    people = {"ann/../bob": [packaged("face_recognition/obama.jpg")], "李": [packaged("face_recognition/biden.jpg")]}
    # WHEN enrolling, THEN the person is refused with the reason, before any model or photo is touched
    with pytest.raises(ValueError, match=r"'ann/\.\./bob' holds '/'"):
        enroll_photos(uri, tmp_path / "no-weights.pt", people)
    # and the command says so and exits 2, with no gallery written
    photo = str(packaged("face_recognition/obama.jpg"))
    code = facepipe(["enroll", "--name", "ann,bob", photo, "--gallery", uri, "--models-dir", str(tmp_path / "no")])
    assert code == 2
    assert "'ann,bob' holds ','" in capsys.readouterr().err
    assert not Path(uri).exists()
