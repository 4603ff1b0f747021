"""`facepipe models export`: the four networks the functions run, as ONNX files in one folder.

Build time only, with torch and facenet-pytorch as the source of truth: facenet-pytorch's MTCNN (pnet, rnet,
onet.onnx: weights from its wheel) and InceptionResnetV1 with the project's recognition weights
(inception_resnet_v1.onnx). Each file's sidecar names its source, opset, sha256 and the parity with torch
measured at export, on faces of real photos. Files already up to date (same bytes, same source weights) are
kept, so `make weights` and the image's export stage redo nothing on a second run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cloud.operator.models.face_photos import VERIFY_CROPS, PrepareError, face_crops, photo_files

MTCNN_PARITY_PHOTO = Path("face_recognition/obama.jpg")  # under the photos folder (`make photos` fetches it)


def export_networks(weights: Path, models_dir: Path, photos: Path) -> dict[str, dict[str, object]]:
    """Export (or keep, when up to date) the four ONNX files into `models_dir`; returns their sidecars by name."""
    from cloud.operator.models.mtcnn_export import export_mtcnn
    from cloud.operator.models.resnet_export import export_resnet

    files = photo_files(photos)
    mtcnn_photo = photos / MTCNN_PARITY_PHOTO
    records = export_mtcnn(models_dir, mtcnn_photo if mtcnn_photo.is_file() else files[0])
    crops, _ = face_crops(files, VERIFY_CROPS)
    records["inception_resnet_v1.onnx"] = export_resnet(weights, models_dir, crops)
    return records


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, required=True, help="the InceptionResnetV1 state_dict to export")
    parser.add_argument("--models-dir", type=Path, required=True, help="folder to write the .onnx files into")
    parser.add_argument("--photos", type=Path, default=Path(".cache/photos"),
                        help="real photos whose faces measure each export's parity (default: .cache/photos)")


def run(args: argparse.Namespace) -> int:
    try:
        records = export_networks(args.weights, args.models_dir, args.photos)
    except (PrepareError, OSError) as exc:
        print(f"facepipe models export: error: {exc}", file=sys.stderr)
        return 1
    for name, record in records.items():
        parity = record.get("parity")
        difference = parity.get("max_abs_difference") if isinstance(parity, dict) else None
        print(f"{args.models_dir / name}: sha256 {str(record['sha256'])[:16]}, max |onnx - torch| {difference}")
    return 0
