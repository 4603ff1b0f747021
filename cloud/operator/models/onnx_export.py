"""Export a torch network to ONNX with a sidecar that records where it came from and how close it runs.

Build time only (torch is the source of truth): `facepipe models prepare` and the image's export stage call
it; the functions only read the .onnx files. The sidecar (`<file>.json`) names the source, the opset, the
file's sha256 and the largest absolute difference between torch's and ONNX Runtime's outputs on the parity
inputs, measured here at export.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from cloud.operator.models.sidecar import file_sha256, sidecar_path, write_sidecar

OPSET = 17


def export(
    module: torch.nn.Module,
    out: Path,
    *,
    example: torch.Tensor,
    input_name: str,
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    source: Mapping[str, object],
    parity_inputs: Sequence[np.ndarray],
) -> dict[str, object]:
    """Write `module` (eval mode) to `out` as ONNX, check it on `parity_inputs` against torch, write the sidecar.

    Returns the sidecar's content. The .onnx file is replaced atomically, then the sidecar: a crash between
    the two leaves a sha256 mismatch, which `is_up_to_date` (shared with the weights file's) reports as stale."""
    module = module.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(module, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=[input_name], output_names=list(output_names),
                              dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()})
        os.chmod(tmp, 0o644)
        max_abs = _max_abs_difference(module, tmp, input_name, parity_inputs)
        record: dict[str, object] = {
            "source": dict(source),
            "opset": OPSET,
            "sha256": file_sha256(tmp),
            "size_bytes": tmp.stat().st_size,
            "parity": {"inputs": len(parity_inputs), "max_abs_difference": max_abs,
                       "reference": f"torch {torch.__version__}", "runtime": f"onnxruntime {ort.__version__}"},
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    write_sidecar(out, record)
    return record


def _max_abs_difference(module: torch.nn.Module, path: Path, input_name: str,
                        inputs: Sequence[np.ndarray]) -> float:
    if not inputs:
        raise ValueError("parity needs at least one input")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for array in inputs:
        with torch.inference_mode():
            expected = module(torch.from_numpy(array))
        expected_list = list(expected) if isinstance(expected, tuple | list) else [expected]
        got = session.run(None, {input_name: array})
        for want, have in zip(expected_list, got, strict=True):
            worst = max(worst, float(np.max(np.abs(want.numpy() - have))))
    return worst


def read_sidecar(out: Path) -> dict[str, object]:
    record: dict[str, object] = json.loads(sidecar_path(out).read_text())
    return record
