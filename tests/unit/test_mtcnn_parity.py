"""The ONNX detector against facenet-pytorch's MTCNN on real photos, at the project's settings (issue 24).

Two questions, kept apart: does the numpy port of MTCNN's stages (cloud/functions/detection/mtcnn.py) compute what
facenet-pytorch computes (run it with facenet-pytorch's own torch networks), and does the whole ONNX engine
find the faces the torch engine finds (every face at IoU >= 0.9, landmarks within 1.5 px, the same crops).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from facenet_pytorch import MTCNN
from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, extract_face, imresample
from PIL import Image
from torchvision.ops import nms as torchvision_nms

from cloud.functions.detection import mtcnn
from cloud.functions.detection.detector import CROP_MARGIN, Detector, Face
from tests.photos import SHARED, packaged, requires_shared

MIN_PROBABILITY = 0.9  # the project's settings (cloud/functions/settings.py), as the functions run the Detector
MAX_SIDE = 1280
MIN_IOU = 0.9
MAX_LANDMARK_PX = 1.5
# An ONNX face facenet-pytorch did not keep is tolerated only on the threshold's edge: both engines' probabilities
# differ by ~1e-6, so a face this close to MIN_PROBABILITY may fall either side.
EXTRA_FACE_MARGIN = 1e-3
# Crops: identical wherever both boxes truncate to the same pixel region (measured: all of them); a region one
# pixel off resamples slightly differently, bounded by this mean absolute difference in grey levels.
MAX_CROP_MEAN_ABS = 2.0
# The port with torch's networks: measured within 1.2e-4 px of facenet-pytorch (float32 rounding of a few
# steps, and the order of equal scores, which torch's unstable sort leaves unspecified).
PORT_MAX_PX = 1e-3

PACKAGED = ["face_recognition/obama.jpg", "face_recognition/obama2.jpg", "face_recognition/biden.jpg",
            "insightface/t1.jpg", "matplotlib/grace_hopper.jpg", "skimage/astronaut.png"]
VIDEO = "video/short_hamilton_clip.mp4"
SHARED_IMAGES = ["group/fn_multiface.jpg", "group/fr_kit_with_rose.jpg", "group/fr_two_people.jpg",
                 "group/voc_2007_007763.jpg", "group/voc_2008_001322.jpg", "identities/john_lennon/1.jpg",
                 "identities/amy_adams/1.jpg", f"{VIDEO}#40", f"{VIDEO}#140", f"{VIDEO}#240"]
ALL = [pytest.param(name, id=name) for name in PACKAGED] + [
    pytest.param(name, id=name, marks=[pytest.mark.shared, requires_shared]) for name in SHARED_IMAGES]


def _image(name: str) -> Image.Image:
    if name in PACKAGED:
        with Image.open(packaged(name)) as image:
            return image.convert("RGB")
    if "#" in name:  # a frame of the shared video
        path, frame = name.split("#")
        capture = cv2.VideoCapture(str(SHARED / path))
        capture.set(cv2.CAP_PROP_POS_FRAMES, int(frame))
        ok, bgr = capture.read()
        capture.release()
        assert ok, f"cannot read frame {frame} of {path}"
        return Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    with Image.open(SHARED / name) as image:
        return image.convert("RGB")


def _downscaled(image: Image.Image) -> Image.Image:
    """The frame MTCNN sees in the Detector at MAX_SIDE."""
    if max(image.size) <= MAX_SIDE:
        return image
    scale = MAX_SIDE / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)


@pytest.fixture(scope="module")
def facenet() -> MTCNN:
    return MTCNN(keep_all=True, post_process=False, margin=CROP_MARGIN, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def engines(onnx_models: Path) -> tuple[Detector, Detector]:
    return (Detector(MIN_PROBABILITY, MAX_SIDE, engine="torch"),
            Detector(MIN_PROBABILITY, MAX_SIDE, engine="onnx", models_dir=onnx_models))


def _torch_network(module: torch.nn.Module) -> mtcnn.Network:
    def run(data: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.inference_mode():
            return tuple(out.numpy() for out in module(torch.from_numpy(data)))

    return run


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _compare(reference: list[Face], onnx: list[Face], size: tuple[int, int]) -> tuple[list[str], list[str]]:
    """Problems (a missed face, landmarks or a crop too far off, an extra face) and a note per face."""
    problems, notes, matched = [], [], set()
    for ref in reference:
        where = f"face at {tuple(round(v) for v in ref.box)} p={ref.probability:.6f}"
        if not onnx:
            problems.append(f"{where}: missed, the ONNX engine found no face")
            continue
        index = max(range(len(onnx)), key=lambda k: _iou(ref.box, onnx[k].box))
        got, iou = onnx[index], _iou(ref.box, onnx[index].box)
        matched.add(index)
        if iou < MIN_IOU:
            problems.append(f"{where}: missed, nearest ONNX box {tuple(round(v) for v in got.box)} has IoU {iou:.3f}")
            continue
        landmarks = float(np.abs(np.subtract(ref.landmarks, got.landmarks)).max())
        if landmarks > MAX_LANDMARK_PX:
            problems.append(f"{where}: landmarks {landmarks:.2f} px off")
        regions = [mtcnn.crop_region(np.asarray(f.box), size, 160, CROP_MARGIN) for f in (ref, got)]
        crop_diff = float(np.abs(ref.crop.astype(np.int16) - got.crop.astype(np.int16)).mean())
        if regions[0] == regions[1] and crop_diff != 0:
            problems.append(f"{where}: same crop region {regions[0]}, crops differ by {crop_diff:.3f} on average")
        elif crop_diff > MAX_CROP_MEAN_ABS:
            problems.append(f"{where}: crop regions {regions[0]} and {regions[1]} differ by {crop_diff:.2f} on average")
        box = float(np.abs(np.subtract(ref.box, got.box)).max())
        notes.append(f"{where}: IoU {iou:.6f}, box {box:.2e} px, landmarks {landmarks:.2e} px, "
                     f"p diff {abs(ref.probability - got.probability):.1e}, crop mean abs {crop_diff:.3f}")
    for index, extra in enumerate(onnx):
        if index not in matched and extra.probability >= MIN_PROBABILITY + EXTRA_FACE_MARGIN:
            problems.append(f"extra ONNX face at {tuple(round(v) for v in extra.box)} p={extra.probability:.6f}, "
                            "none of facenet-pytorch's overlaps it")
    return problems, notes


@pytest.mark.parametrize("name", ALL)
def test_onnx_engine_finds_every_face_facenet_finds(engines: tuple[Detector, Detector], name: str) -> None:
    image = _image(name)
    reference, onnx = (engine.detect(image) for engine in engines)
    problems, notes = _compare(reference, onnx, image.size)
    print(f"{name}: facenet-pytorch {len(reference)} faces, ONNX {len(onnx)}", *notes, sep="\n  ")
    assert reference, f"{name}: the reference found no face: the comparison would prove nothing"
    assert not problems, f"{name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", ALL)
def test_numpy_port_with_torch_networks_is_facenet_detect(facenet: MTCNN, name: str) -> None:
    image = _downscaled(_image(name))
    boxes, probs, points = facenet.detect(image, landmarks=True)
    networks = mtcnn.Networks(*(_torch_network(net) for net in (facenet.pnet, facenet.rnet, facenet.onet)))
    found = mtcnn.detect_faces(np.asarray(image), networks)
    assert boxes is not None, f"{name}: facenet-pytorch found nothing at all"
    assert len(found.boxes) == len(boxes), f"{name}: the port found {len(found.boxes)} boxes, facenet {len(boxes)}"
    box_px = float(np.abs(found.boxes - boxes).max())
    points_px = float(np.abs(found.landmarks - points).max())
    prob = float(np.abs(found.probabilities - probs.astype(np.float32)).max())
    print(f"{name}: {len(boxes)} boxes (all probabilities), box {box_px:.2e} px, landmarks {points_px:.2e} px, "
          f"probability {prob:.1e}")
    assert box_px <= PORT_MAX_PX and points_px <= PORT_MAX_PX and prob <= 1e-6, (
        f"{name}: the port differs from facenet-pytorch by {box_px} px (boxes), {points_px} px (landmarks), "
        f"{prob} (probability)")


def test_area_resampling_is_torchs_interpolate_area() -> None:
    # The whole image (pyramid levels) and regions of it (RNet/ONet crops), at non-integer ratios both ways.
    image = np.asarray(_image("insightface/t1.jpg"))
    tensor = torch.as_tensor(image[None].copy()).permute(0, 3, 1, 2).float()
    resampler = mtcnn.AreaResampler(image)
    rng = np.random.default_rng(0)
    for _ in range(40):
        top, left = (int(v) for v in rng.integers(0, 400, 2))
        height, width = (int(v) for v in rng.integers(1, 480, 2))
        out_h, out_w = (int(v) for v in rng.integers(1, 200, 2))
        want = imresample(tensor[:, :, top:top + height, left:left + width], (out_h, out_w)).numpy()
        got = resampler.resize(np.array([top]), np.array([left]), np.array([height]), np.array([width]), out_h, out_w)
        np.testing.assert_array_equal(got, want, err_msg=f"region {top, left, height, width} -> {out_h}x{out_w}")


def _random_boxes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    corner = rng.uniform(0, 300, (n, 2))
    side = rng.uniform(5, 80, (n, 2))
    boxes = np.concatenate([corner, corner + side], axis=1).astype(np.float32)
    scores = rng.permutation(n).astype(np.float32) / n  # distinct: equal scores are ordered differently by torch
    return boxes, scores


def test_nms_is_torchvision_nms() -> None:
    rng = np.random.default_rng(1)
    for threshold in (0.5, 0.7):
        boxes, scores = _random_boxes(rng, 2000)
        want = torchvision_nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold).numpy()
        np.testing.assert_array_equal(mtcnn.nms(boxes, scores, threshold), want)


def test_nms_min_is_facenets_nms_numpy() -> None:
    boxes, scores = _random_boxes(np.random.default_rng(2), 500)
    want = batched_nms_numpy(torch.from_numpy(boxes), torch.from_numpy(scores), torch.zeros(500), 0.7, "Min")
    np.testing.assert_array_equal(mtcnn.nms_min(boxes, scores, 0.7), want.numpy())


def test_extract_face_is_facenets_bit_for_bit() -> None:
    image = _image("insightface/t1.jpg")
    boxes, _ = _random_boxes(np.random.default_rng(3), 50)
    boxes = boxes.astype(np.float64) * 2 - 20  # some reach past the image's top and left edges
    for box in boxes:
        want = extract_face(image, box, image_size=160, margin=CROP_MARGIN).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(mtcnn.extract_face(image, box, 160, CROP_MARGIN), want.astype(np.uint8))
