"""MTCNN's stages around its three networks, in numpy: facenet-pytorch 2.5.3's `detect_face`, `MTCNN.detect`
and `extract_face`, ported step by step without torch.

The networks are callables (NCHW float32 in, outputs in the order facenet-pytorch's PNet/RNet/ONet return
them), so the same code runs with ONNX Runtime sessions (the functions) or with the torch modules (a check of
this port alone). Each step keeps torch's float32 arithmetic, so with the torch modules the output equals
facenet-pytorch's, with one known exception: torch's sort of equal scores (NMS order) is unstable and not
reproducible here; ties are broken by index, which can keep a different one of two equal-score boxes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

Network = Callable[[np.ndarray], tuple[np.ndarray, ...]]

MIN_FACE_SIZE = 20
FACTOR = 0.709
THRESHOLDS = (0.6, 0.7, 0.7)
# The exported networks (cloud/operator/models/mtcnn_export.py) in Networks' order, and their input's name.
NETWORK_FILES = ("pnet.onnx", "rnet.onnx", "onet.onnx")
INPUT_NAME = "input"
NETWORK_BATCH = 512  # facenet-pytorch's fixed_batch_process: RNet/ONet inputs in chunks of this many


@dataclass(frozen=True)
class Networks:
    pnet: Network  # (N,3,H,W) -> regression (N,4,h,w), probability (N,2,h,w)
    rnet: Network  # (N,3,24,24) -> regression (N,4), probability (N,2)
    onet: Network  # (N,3,48,48) -> regression (N,4), landmarks (N,10), probability (N,2)


@dataclass(frozen=True)
class Found:
    """MTCNN.detect's output for one image, largest box first; empty arrays when there is no face."""

    boxes: np.ndarray  # (N,4) float32 x1, y1, x2, y2
    probabilities: np.ndarray  # (N,) float32
    landmarks: np.ndarray  # (N,5,2) float32 eyes, nose, mouth corners as (x, y)


class AreaResampler:
    """torch's `interpolate(mode="area")` (adaptive average pooling) of regions of one uint8 RGB image.

    Each output pixel is the mean over the input window [floor(i*in/out), ceil((i+1)*in/out)): a sum of
    integers, exact here through an integral image and exact in torch's float32 accumulation, then divided
    by the window's height and then its width in float32, as torch does. cv2.INTER_AREA weighs partial
    pixels instead, which differs for non-integer ratios."""

    def __init__(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        dtype = np.int32 if 255 * height * width < 2**31 else np.int64
        integral = np.zeros((height + 1, width + 1, 3), dtype=dtype)
        np.cumsum(image, axis=0, dtype=dtype, out=integral[1:, 1:])
        np.cumsum(integral[1:, 1:], axis=1, out=integral[1:, 1:])
        self._integral = integral

    def resize(self, top: np.ndarray, left: np.ndarray, height: np.ndarray, width: np.ndarray,
               out_h: int, out_w: int) -> np.ndarray:
        """Regions (K,) of the image, each resampled to out_h x out_w: (K,3,out_h,out_w) float32."""
        h0, h1 = _windows(top, height, out_h)  # (K,out_h)
        w0, w1 = _windows(left, width, out_w)  # (K,out_w)
        s = self._integral
        r0, r1, c0, c1 = h0[:, :, None], h1[:, :, None], w0[:, None, :], w1[:, None, :]
        sums = s[r1, c1] - s[r0, c1] - s[r1, c0] + s[r0, c0]  # (K,out_h,out_w,3)
        kh = (h1 - h0).astype(np.float32)[:, :, None, None]
        kw = (w1 - w0).astype(np.float32)[:, None, :, None]
        mean = sums.astype(np.float32) / kh / kw
        return np.ascontiguousarray(mean.transpose(0, 3, 1, 2))


def _windows(start: np.ndarray, length: np.ndarray, out: int) -> tuple[np.ndarray, np.ndarray]:
    """ATen's start_index/end_index of adaptive pooling, offset by each region's start."""
    i = np.arange(out, dtype=np.int64)[None, :]
    n = np.asarray(length, dtype=np.int64)[:, None]
    first = (i * n) // out
    last = -((-(i + 1) * n) // out)
    offset = np.asarray(start, dtype=np.int64)[:, None]
    return offset + first, offset + last


def normalize(data: np.ndarray) -> np.ndarray:
    """MTCNN's input scaling of 0..255 pixels, (x - 127.5) / 128."""
    return (data - np.float32(127.5)) * np.float32(0.0078125)


def scales(height: int, width: int, min_face_size: int = MIN_FACE_SIZE, factor: float = FACTOR) -> list[float]:
    """The scale pyramid: the first level maps min_face_size to PNet's 12 px, the last is >= 12 px on the short side."""
    m = 12.0 / min_face_size
    minl = min(height, width) * m
    found = []
    scale = m
    while minl >= 12:
        found.append(scale)
        scale = scale * factor
        minl = minl * factor
    return found


def pyramid_level(resampler: AreaResampler, height: int, width: int, scale: float) -> np.ndarray:
    """The whole image at `scale`, normalized for PNet: (1,3,h,w) float32."""
    size = (int(height * scale + 1), int(width * scale + 1))
    one = np.zeros(1, dtype=np.int64)
    level = resampler.resize(one, one, np.array([height]), np.array([width]), *size)
    return normalize(level)


def _generate_bounding_box(reg: np.ndarray, probs: np.ndarray, scale: float, thresh: float) -> np.ndarray:
    """PNet's cells above `thresh` as boxes in image pixels: (K,9) x1, y1, x2, y2, score, 4 regressions."""
    stride, cellsize = 2, 12
    mask = probs >= np.float32(thresh)
    image, y, x = np.nonzero(mask)
    score = probs[mask]
    regression = reg[image, :, y, x]  # (K,4), in the mask's row-major order as torch's reg[:, mask]
    bb = np.stack([x, y], axis=1).astype(np.float32)
    q1 = np.floor((stride * bb + 1) / np.float32(scale))
    q2 = np.floor((stride * bb + cellsize - 1 + 1) / np.float32(scale))
    return np.concatenate([q1, q2, score[:, None], regression], axis=1).astype(np.float32, copy=False)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """torchvision.ops.nms on CPU: IoU inter / (areaA + areaB - inter), no +1; keeps IoU <= threshold.

    Indices by decreasing score; equal scores by index (torch's own sort leaves their order unspecified)."""
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, k]) for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    zero = np.float32(0)
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(zero, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(zero, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[overlap.astype(np.float64) <= threshold]  # torchvision compares in double
    return np.asarray(keep, dtype=np.int64)


def nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """facenet-pytorch's own nms_numpy with method 'Min' (the last stage): +1 areas, inter / min(area)."""
    x1, y1, x2, y2 = (boxes[:, k].copy() for k in range(4))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)  # the same call as facenet-pytorch's, so equal scores fall the same way
    keep = []
    while order.size > 0:
        i = order[-1]
        keep.append(i)
        rest = order[0:-1]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        overlap = inter / np.minimum(area[i], area[rest])
        order = rest[np.where(overlap <= threshold)]
    return np.asarray(keep, dtype=np.int64)


def _rerec(boxes: np.ndarray) -> np.ndarray:
    """Squares each box around its centre (side: the longer side)."""
    boxes = boxes.copy()
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = np.maximum(w, h)
    half = np.float32(0.5)
    boxes[:, 0] = boxes[:, 0] + w * half - side * half
    boxes[:, 1] = boxes[:, 1] + h * half - side * half
    boxes[:, 2] = boxes[:, 0] + side
    boxes[:, 3] = boxes[:, 1] + side
    return boxes


def _bbreg(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    boxes = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, :4] = np.stack([boxes[:, 0] + reg[:, 0] * w, boxes[:, 1] + reg[:, 1] * h,
                             boxes[:, 2] + reg[:, 2] * w, boxes[:, 3] + reg[:, 3] * h], axis=1)
    return boxes


def _pad(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Truncated integer boxes clipped to the image, 1-based starts as in facenet-pytorch: y, ey, x, ex."""
    b = np.trunc(boxes[:, :4]).astype(np.int32)
    x, y = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    ex, ey = np.minimum(b[:, 2], width), np.minimum(b[:, 3], height)
    return y, ey, x, ex


def _crops(resampler: AreaResampler, boxes: np.ndarray, width: int, height: int,
           size: int) -> tuple[np.ndarray, np.ndarray]:
    """Each box's image region resampled to size x size and normalized, and which boxes had a region.

    facenet-pytorch skips empty regions but not their boxes (its masks then fail on a length mismatch);
    here those boxes are dropped with them."""
    y, ey, x, ex = _pad(boxes, width, height)
    valid = (ey > y - 1) & (ex > x - 1)
    top, left = y[valid] - 1, x[valid] - 1
    data = resampler.resize(top, left, ey[valid] - top, ex[valid] - left, size, size)
    return normalize(data), valid


def _run(network: Network, data: np.ndarray) -> tuple[np.ndarray, ...]:
    outputs = [network(data[i:i + NETWORK_BATCH]) for i in range(0, len(data), NETWORK_BATCH)]
    return tuple(np.concatenate(parts, axis=0) for parts in zip(*outputs, strict=True))


def detect_faces(image: np.ndarray, networks: Networks, min_face_size: int = MIN_FACE_SIZE,
                 thresholds: tuple[float, float, float] = THRESHOLDS, factor: float = FACTOR) -> Found:
    """Faces in one HxWx3 uint8 RGB image, as facenet-pytorch's MTCNN(select_largest=True).detect."""
    height, width = image.shape[:2]
    resampler = AreaResampler(image)

    # First stage: PNet over the pyramid, NMS 0.5 within each scale, 0.7 across scales.
    per_scale = []
    for scale in scales(height, width, min_face_size, factor):
        reg, probs = networks.pnet(pyramid_level(resampler, height, width, scale))[:2]
        boxes = _generate_bounding_box(reg, probs[:, 1], scale, thresholds[0])
        per_scale.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
    boxes = np.concatenate(per_scale, axis=0) if per_scale else np.zeros((0, 9), np.float32)
    boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
    regw = boxes[:, 2] - boxes[:, 0]
    regh = boxes[:, 3] - boxes[:, 1]
    boxes = np.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                      boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh, boxes[:, 4]], axis=1)
    boxes = _rerec(boxes)

    # Second stage: RNet on 24x24 crops, threshold, NMS 0.7, regression, squaring.
    if len(boxes):
        data, valid = _crops(resampler, boxes, width, height, 24)
        boxes = boxes[valid]
        reg, probs = _run(networks.rnet, data)[:2]
        score = probs[:, 1]
        passed = score > np.float32(thresholds[1])
        boxes = np.concatenate([boxes[passed, :4], score[passed, None]], axis=1)
        reg = reg[passed]
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes = _rerec(_bbreg(boxes[pick], reg[pick]))

    # Third stage: ONet on 48x48 crops: threshold, landmarks, regression, NMS 'Min' 0.7.
    points = np.zeros((0, 5, 2), dtype=np.float32)
    if len(boxes):
        data, valid = _crops(resampler, boxes, width, height, 48)
        boxes = boxes[valid]
        reg, marks, probs = _run(networks.onet, data)[:3]
        score = probs[:, 1]
        passed = score > np.float32(thresholds[2])
        marks = marks[passed]
        boxes = np.concatenate([boxes[passed, :4], score[passed, None]], axis=1)
        reg = reg[passed]
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        points_x = w * marks[:, :5] + boxes[:, 0:1] - 1
        points_y = h * marks[:, 5:10] + boxes[:, 1:2] - 1
        points = np.stack([points_x, points_y], axis=2)
        boxes = _bbreg(boxes, reg)
        if len(boxes):
            pick = nms_min(boxes[:, :4], boxes[:, 4], 0.7)
            boxes, points = boxes[pick], points[pick]

    order = np.argsort((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[::-1]  # select_largest
    boxes, points = boxes[order], points[order]
    return Found(boxes=boxes[:, :4].astype(np.float32), probabilities=boxes[:, 4].astype(np.float32),
                 landmarks=points.astype(np.float32).reshape(-1, 5, 2))


def extract_face(image: Image.Image, box: np.ndarray, image_size: int = 160, margin: int = 0) -> np.ndarray:
    """facenet-pytorch's extract_face for a PIL image as uint8 HxWx3: the box widened by `margin` pixels of the
    output (scaled by the box's size), clipped to the image, truncated to integers, cropped, bilinear-resized."""
    region = crop_region(box, image.size, image_size, margin)
    face = image.crop(region).resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(face, dtype=np.uint8)


def crop_region(box: np.ndarray, size: tuple[int, int], image_size: int = 160,
                margin: int = 0) -> tuple[int, int, int, int]:
    """The pixels extract_face crops for `box` in an image of `size` (width, height): left, top, right, bottom."""
    mx = margin * (box[2] - box[0]) / (image_size - margin)
    my = margin * (box[3] - box[1]) / (image_size - margin)
    return (int(max(box[0] - mx / 2, 0)), int(max(box[1] - my / 2, 0)),
            int(min(box[2] + mx / 2, size[0])), int(min(box[3] + my / 2, size[1])))
