""""This is not X" on real photos: a face an operator marked as not X is kept as a negative of X, and a match to X
that is closer to one of X's negatives than to X's own embeddings is not X (cloud/functions/recognition/gallery.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cloud.functions.contracts import UNKNOWN_NAME
from cloud.functions.detection.detector import Detector
from cloud.functions.recognition.embedder import Embedder
from cloud.functions.recognition.gallery import Gallery, from_bytes, to_bytes
from tests.photos import SHARED, requires_shared, weights_path

# Every face matches its nearest enrolled name at this distance: only the negatives can say "not X".
LOOSE = 2.0


@pytest.fixture(scope="module")
def embeddings() -> dict[str, np.ndarray]:
    detector, embedder = Detector(), Embedder(weights_path())
    photos = {f"{who}/{n}": SHARED / "identities" / who / f"{n}.jpg"
              for who in ("barack_obama", "joe_biden") for n in (1, 2)}
    crops = {}
    for label, path in photos.items():
        [face] = detector.detect(Image.open(path).convert("RGB"))
        crops[label] = face.crop
    return dict(zip(crops, embedder.embed(list(crops.values())), strict=True))


@requires_shared
def test_a_face_marked_not_x_stops_its_lookalikes_matching_x(embeddings: dict[str, np.ndarray]) -> None:
    gallery = Gallery("tag")
    gallery.add("barack_obama", embeddings["barack_obama/1"], source="obama-1")
    probes = np.stack([embeddings["joe_biden/2"], embeddings["barack_obama/2"]])
    # GIVEN only Obama enrolled and a loose threshold, Biden's second photo is taken for Obama
    assert [name for name, _ in gallery.match(probes, LOOSE)] == ["barack_obama", "barack_obama"]
    # WHEN the operator marks Biden's first photo "not barack_obama"
    gallery.add_negative("barack_obama", embeddings["joe_biden/1"])
    # THEN Biden's other photo, nearer that negative than Obama's own photo, is no longer Obama; Obama still is
    [(biden_name, biden_distance), (obama_name, _)] = gallery.match(probes, LOOSE)
    assert (biden_name, obama_name) == (UNKNOWN_NAME, "barack_obama")
    assert biden_distance == pytest.approx(float(np.linalg.norm(embeddings["joe_biden/2"] -
                                                                embeddings["barack_obama/1"])), abs=1e-4)


@requires_shared
def test_a_negative_of_x_leaves_other_names_matchable(embeddings: dict[str, np.ndarray]) -> None:
    gallery = Gallery("tag")
    gallery.add("barack_obama", embeddings["barack_obama/1"])
    gallery.add("joe_biden", embeddings["joe_biden/1"])
    gallery.add_negative("barack_obama", embeddings["joe_biden/2"])
    # the negative of Obama is Biden himself: Biden's photo is still Biden, Obama's still Obama
    names = [name for name, _ in gallery.match(np.stack([embeddings["joe_biden/2"], embeddings["barack_obama/2"]]),
                                               LOOSE)]
    assert names == ["joe_biden", "barack_obama"]


@requires_shared
def test_negatives_and_sources_survive_a_save_and_forget_drops_both(embeddings: dict[str, np.ndarray],
                                                                   tmp_path: Path) -> None:
    gallery = Gallery("tag")
    gallery.add("barack_obama", embeddings["barack_obama/1"], source="face-1")
    gallery.add_negative("barack_obama", embeddings["joe_biden/1"])
    stored = from_bytes(to_bytes(gallery))
    assert (stored.sources, stored.negative_names) == (["face-1"], ["barack_obama"])
    np.testing.assert_array_equal(stored.negative_embeddings, gallery.negative_embeddings)
    assert stored.remove_negatives("barack_obama") == 1 and stored.names == ["barack_obama"]
    stored.add_negative("barack_obama", embeddings["joe_biden/1"])
    assert stored.forget("barack_obama") == 2
    assert (stored.names, stored.negative_names, len(stored.negative_embeddings)) == ([], [], 0)
