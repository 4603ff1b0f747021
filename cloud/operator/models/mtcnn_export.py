"""facenet-pytorch's MTCNN networks (PNet, RNet, ONet) as ONNX files, for the detection function's ONNX engine.

Build time only: the weights ship inside the facenet-pytorch wheel (`MTCNN()` loads them from the package,
nothing is downloaded). Each file is checked at export against torch on inputs cut from a real photo with the
detector's own resampling (cloud/functions/detection/mtcnn.py): two pyramid levels for PNet, square windows over the
photo at 24 and 48 px for RNet and ONet.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from facenet_pytorch import MTCNN
from PIL import Image

from cloud.functions.detection import mtcnn
from cloud.operator.models import onnx_export
from cloud.operator.models.sidecar import is_up_to_date

INPUT = mtcnn.INPUT_NAME
DEFAULT_PHOTO = Path(".cache/photos/face_recognition/obama.jpg")  # `make photos` fetches it
PARITY_WINDOWS = 32  # crops per RNet/ONet parity input


def export_mtcnn(models_dir: Path, photo: Path = DEFAULT_PHOTO) -> dict[str, dict[str, object]]:
    """Write pnet.onnx (dynamic N, H, W), rnet.onnx (dynamic N, 24x24) and onet.onnx (dynamic N, 48x48) into
    `models_dir` with their sidecars; files already up to date are kept. Returns the sidecars by file name."""
    with Image.open(photo) as opened:
        image = np.asarray(opened.convert("RGB"))
    nets = MTCNN(device=torch.device("cpu"))
    plans = {
        mtcnn.NETWORK_FILES[0]: (nets.pnet, ("regression", "probability"), {0: "n", 2: "height", 3: "width"},
                      _pyramid_inputs(image)),
        mtcnn.NETWORK_FILES[1]: (nets.rnet, ("regression", "probability"), {0: "n"}, [_window_crops(image, 24)]),
        mtcnn.NETWORK_FILES[2]: (nets.onet, ("regression", "landmarks", "probability"), {0: "n"},
                                 [_window_crops(image, 48)]),
    }
    source = {"package": f"facenet-pytorch {version('facenet-pytorch')}", "parity_photo": photo.name}
    records: dict[str, dict[str, object]] = {}
    for name, (module, outputs, axes, parity) in plans.items():
        out = models_dir / name
        if is_up_to_date(out):
            records[name] = onnx_export.read_sidecar(out)
            continue
        records[name] = onnx_export.export(
            module, out, example=torch.from_numpy(parity[0][:1]), input_name=INPUT, output_names=outputs,
            dynamic_axes={INPUT: axes, **{o: {0: "n"} for o in outputs}},
            source={**source, "network": type(module).__name__}, parity_inputs=parity)
    return records


def _pyramid_inputs(image: np.ndarray) -> list[np.ndarray]:
    """The photo's first and fourth pyramid levels, as PNet sees them (two shapes: the axes are dynamic)."""
    height, width = image.shape[:2]
    resampler = mtcnn.AreaResampler(image)
    levels = mtcnn.scales(height, width)
    return [mtcnn.pyramid_level(resampler, height, width, scale) for scale in (levels[0], levels[3])]


def _window_crops(image: np.ndarray, size: int) -> np.ndarray:
    """PARITY_WINDOWS square windows spread over the photo at a few sizes, resampled to size x size, normalized."""
    height, width = image.shape[:2]
    rng = np.random.default_rng(0)
    sides = rng.integers(size, min(height, width) // 2, PARITY_WINDOWS)
    tops = (rng.random(PARITY_WINDOWS) * (height - sides)).astype(np.int64)
    lefts = (rng.random(PARITY_WINDOWS) * (width - sides)).astype(np.int64)
    crops = mtcnn.AreaResampler(image).resize(tops, lefts, sides, sides, size, size)
    return mtcnn.normalize(crops)
