"""Engine "onnx": InceptionResnetV1 exported to ONNX (cloud/operator/models/resnet_export.py), run by ONNX Runtime.

No torch: the functions' image ships only onnxruntime. The exported graph ends with facenet-pytorch's
F.normalize (ReduceL2, Div), so its output is already L2-normalised.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from cloud.functions.contracts import CROP_SIZE
from cloud.functions.onnx_session import EXPORT_HINT, session
from cloud.functions.recognition.gallery import EMBEDDING_SIZE
from cloud.functions.recognition.network import ONNX_FILE, WeightsInvalid, WeightsMissing


class OnnxNetwork:
    """The tag names the ONNX file by sha256 (`inception_resnet_v1.onnx:<sha16>`)."""

    def __init__(self, path: Path, threads: int) -> None:
        if not path.is_file():
            raise WeightsMissing(f"ONNX model {path} not found: {EXPORT_HINT}")
        try:
            self._session = session(path, threads)
        except Exception as exc:  # onnxruntime raises its own pybind types (InvalidProtobuf, Fail, ...)
            raise WeightsInvalid(f"{path} is not an ONNX model ({type(exc).__name__}: {exc})") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        shapes = [i.shape[1:] for i in inputs], [o.shape[1:] for o in outputs]
        if shapes != ([[3, CROP_SIZE, CROP_SIZE]], [[EMBEDDING_SIZE]]):
            raise WeightsInvalid(f"{path} maps {shapes[0]} to {shapes[1]}, not InceptionResnetV1's one "
                                 f"(n, 3, {CROP_SIZE}, {CROP_SIZE}) input to one (n, {EMBEDDING_SIZE}) output")
        self._input, self._output = inputs[0].name, outputs[0].name
        with path.open("rb") as fh:
            self.tag = f"{ONNX_FILE}:{hashlib.file_digest(fh, 'sha256').hexdigest()[:16]}"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run([self._output], {self._input: batch})[0])
