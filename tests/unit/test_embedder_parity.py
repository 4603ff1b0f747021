"""The ONNX engine against facenet-pytorch's own forward pass (issue 24), on real faces: the export and its
sidecar, embeddings of the same crops, every recognition decision of the shared enrollment/probe split, and
an ONNX process that never loads torch."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from cloud.functions.contracts import UNKNOWN_NAME
from cloud.functions.recognition.embedder import Embedder, onnx_model_path
from cloud.functions.recognition.gallery import Gallery, Match
from cloud.operator.models.onnx_export import OPSET
from cloud.operator.models.resnet_export import export_resnet
from cloud.operator.models.sidecar import is_up_to_date, sidecar_path
from tests.photos import REPO, SHARED, requires_shared, weights_path
from tests.recognition_split import THRESHOLD, decisions, enrollment_photos, stranger_decisions

MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def engines(onnx_models: Path) -> dict[str, Embedder]:
    return {"torch": Embedder(weights_path()), "onnx": Embedder(engine="onnx", models_dir=onnx_models)}


@pytest.fixture(scope="module")
def shared_embeddings(engines: dict[str, Embedder], shared_identity_crops: dict[Path, np.ndarray]
                      ) -> dict[str, np.ndarray]:
    """Each engine's embeddings of the shared identity photos' faces, in shared_identity_crops' order."""
    return {engine: embedder.embed(list(shared_identity_crops.values())) for engine, embedder in engines.items()}


def cosines(torch_vectors: np.ndarray, onnx_vectors: np.ndarray) -> np.ndarray:
    torch_vectors, onnx_vectors = torch_vectors.astype(np.float64), onnx_vectors.astype(np.float64)
    return np.sum(torch_vectors * onnx_vectors, axis=1) / (
        np.linalg.norm(torch_vectors, axis=1) * np.linalg.norm(onnx_vectors, axis=1))


# --- the export ---------------------------------------------------------------------------------------


def test_export_records_its_source_weights_and_parity(onnx_models: Path) -> None:
    out = onnx_model_path(onnx_models)
    record = json.loads(sidecar_path(out).read_text())
    assert is_up_to_date(out) and record["opset"] == OPSET
    assert record["source"]["weights_sha256"] == hashlib.sha256(weights_path().read_bytes()).hexdigest()
    assert record["source"]["model"] == "facenet_pytorch.InceptionResnetV1(classify=False)"
    # measured on the packaged photos' faces as one batch and on the first alone: the batch axis is dynamic
    assert record["parity"]["inputs"] == 2 and record["parity"]["max_abs_difference"] < 1e-5
    [crops] = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).get_inputs()
    assert isinstance(crops.shape[0], str) and crops.shape[1:] == [3, 160, 160]


def test_export_is_skipped_when_up_to_date_and_redone_for_other_weights(
    tmp_path: Path, onnx_models: Path, packaged_face_crops: dict[str, list[np.ndarray]]
) -> None:
    crops = packaged_face_crops["face_recognition/obama.jpg"]
    out = onnx_model_path(tmp_path)
    for path in (onnx_model_path(onnx_models), sidecar_path(onnx_model_path(onnx_models))):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    before = out.stat().st_mtime_ns, sidecar_path(out).read_text()
    # same weights: nothing is exported again
    assert export_resnet(weights_path(), tmp_path, crops) == json.loads(before[1])
    assert (out.stat().st_mtime_ns, sidecar_path(out).read_text()) == before
    # other weights (no sidecar of their own, so hashed): exported again, and the ONNX file's digest changes
    state = torch.load(weights_path(), weights_only=True)
    state["last_bn.bias"] += 0.01
    other = tmp_path / "other.pt"
    torch.save(state, other)
    record = export_resnet(other, tmp_path, crops)
    assert record["source"]["weights_sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()
    assert record["sha256"] != json.loads(before[1])["sha256"] and is_up_to_date(out)


# --- the embeddings -------------------------------------------------------------------------------------


def test_both_engines_tag_their_own_file(engines: dict[str, Embedder], onnx_models: Path) -> None:
    onnx_digest = hashlib.sha256(onnx_model_path(onnx_models).read_bytes()).hexdigest()
    assert engines["onnx"].model_tag == f"inception_resnet_v1.onnx:{onnx_digest[:16]}"
    weights_digest = hashlib.sha256(weights_path().read_bytes()).hexdigest()
    assert engines["torch"].model_tag == f"inception_resnet_v1:{weights_digest[:16]}"


def test_packaged_faces_embed_alike(engines: dict[str, Embedder], packaged_face_crops: dict[str, list[np.ndarray]]
                                    ) -> None:
    named = [(f"{photo}#{i}", crop) for photo, crops in packaged_face_crops.items() for i, crop in enumerate(crops)]
    assert len(named) >= 12
    crops = [crop for _, crop in named]
    found = cosines(engines["torch"].embed(crops), engines["onnx"].embed(crops))
    low = {name: float(c) for (name, _), c in zip(named, found, strict=True) if c < MIN_COSINE}
    assert not low, f"cosine with torch below {MIN_COSINE}: {low}"


@requires_shared
@pytest.mark.shared
def test_shared_faces_embed_alike(shared_embeddings: dict[str, np.ndarray],
                                  shared_identity_crops: dict[Path, np.ndarray]) -> None:
    found = cosines(shared_embeddings["torch"], shared_embeddings["onnx"])
    low = {str(p.relative_to(SHARED)): float(c) for p, c in zip(shared_identity_crops, found, strict=True)
           if c < MIN_COSINE}
    assert not low, f"cosine with torch below {MIN_COSINE}: {low}"


@requires_shared
@pytest.mark.shared
def test_every_recognition_decision_is_the_same_for_both_engines(
    engines: dict[str, Embedder], shared_embeddings: dict[str, np.ndarray],
    shared_identity_crops: dict[Path, np.ndarray]
) -> None:
    made: dict[str, dict[str, Match]] = {}
    for engine, embedder in engines.items():
        probes = dict(zip(shared_identity_crops, shared_embeddings[engine], strict=True))
        gallery = Gallery(embedder.model_tag)
        for person, [photo] in enrollment_photos().items():
            gallery.add(person, probes[photo])
        made[engine] = {**{f"{k} in the gallery": m for k, m in decisions(gallery, probes).items()},
                        **{f"{k} as a stranger": m for k, m in stranger_decisions(gallery, probes).items()}}
    assert made["torch"].keys() == made["onnx"].keys() and len(made["torch"]) >= 80
    distances = {k: (distance(made["torch"][k]), distance(made["onnx"][k])) for k in made["torch"]}
    edge = min(distances, key=lambda k: abs(distances[k][0] - THRESHOLD))
    print(f"{len(distances)} decisions; embeddings differ by at most "
          f"{np.abs(shared_embeddings['torch'] - shared_embeddings['onnx']).max():.1e}; nearest the threshold "
          f"{THRESHOLD}: {edge} at {distances[edge][0]:.5f} (torch), {distances[edge][1]:.5f} (onnx)")
    differ = [f"{k}: torch {made['torch'][k][0]} at {distances[k][0]:.6f}, onnx {made['onnx'][k][0]} at "
              f"{distances[k][1]:.6f}: {why(made['torch'][k], made['onnx'][k])}"
              for k in made["torch"] if made["torch"][k][0] != made["onnx"][k][0]]
    print("\n".join(differ))
    assert not differ, "\n".join(differ)


def distance(match: Match) -> float:
    assert match[1] is not None  # None only from an empty gallery
    return match[1]


def why(torch_match: Match, onnx_match: Match) -> str:
    if UNKNOWN_NAME in (torch_match[0], onnx_match[0]):
        return f"the nearest face lies on either side of the threshold {THRESHOLD}"
    return "another enrolled face is nearest: two faces are near equally far"


# --- no torch in the ONNX engine's process -------------------------------------------------------------


def test_the_onnx_engine_never_imports_torch(onnx_models: Path, tmp_path: Path,
                                             packaged_face_crops: dict[str, list[np.ndarray]]) -> None:
    # The recognition function's own path: its handler module and embedder, built for engine onnx, embedding.
    crop = tmp_path / "crop.npy"
    np.save(crop, packaged_face_crops["face_recognition/biden.jpg"][0])
    script = (
        "import sys, numpy as np\n"
        "from cloud.functions.recognition import handler\n"
        "embedder = handler.get_embedder('', 1, 'onnx', sys.argv[1])\n"
        "[vector] = embedder.embed([np.load(sys.argv[2])])\n"
        "assert abs(float(np.linalg.norm(vector)) - 1) < 1e-5, vector\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'facenet_pytorch'}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script, str(onnx_models), str(crop)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"the ONNX engine loaded {result.stdout.strip()}"
