"""Passages for the track-decision benchmark: one person of the shared photos walking across the shared real video
(tests/edge/clips.py's small_face_clip: motion-blurred, slightly out of focus, the face growing as they come
closer), every frame detected (MTCNN) and embedded (InceptionResnetV1) in this process on the ONNX engine, as the
functions do. The video's own faces (a stage performer and the audience) are in the frames too.

Detection and embedding are the slow part (~1 s a frame on one thread): each passage's faces, quality records and
embeddings are cached under .cache/bench/passages/, keyed by the model and the clip's parameters, so a second run
only matches and replays.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cloud.functions.contracts import FaceQuality

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "testdata" / "faces"
VIDEO = SHARED / "video" / "short_hamilton_clip.mp4"
CACHE = REPO / ".cache" / "bench" / "passages"
FPS = 3.0  # frames answered a second (the demo sends 3; the daemon's default throttle.max_fps is 2)
SECONDS = 10.0  # the whole shared video
BLUR_SIGMA, BLUR_PX = 1.0, 5  # focus and motion blur, as tests/edge/clips.small_face_clip
# 40-64 and 56-96 px: the sizes most cameras see, where a flat support ramp named strangers (docs/bench.md)
SIZES = {"20-32 px": (20, 32), "28-44 px": (28, 44), "32-48 px": (32, 48), "40-64 px": (40, 64), "56-96 px": (56, 96)}
CLIP_VERSION = 1  # bump when the clip's making changes: the cache key holds it


@dataclass(frozen=True)
class Seen:
    """One face of one frame, as detection and the embedder saw it."""

    box: tuple[float, float, float, float]
    quality: FaceQuality
    walker: bool  # the pasted person's face (by its known position), not one of the video's own
    embedding: np.ndarray


@dataclass(frozen=True)
class Passage:
    person: str
    photo: Path
    sizes: str  # a SIZES key
    frames: list[tuple[float, list[Seen]]]  # capture time (s from the clip's start), faces


class Models:
    """The ONNX engine's detector and embedder, one thread each (the machine is shared), built on first use."""

    def __init__(self, models_dir: Path) -> None:
        from cloud.functions.detection.detector import Detector
        from cloud.functions.recognition.embedder import Embedder

        self.detector = Detector(min_probability=0.9, max_side=1280, threads=1, engine="onnx", models_dir=models_dir)
        self.embedder = Embedder(threads=1, engine="onnx", models_dir=models_dir)

    @property
    def tag(self) -> str:
        return self.embedder.model_tag


def walkers(photos: Path = SHARED) -> list[tuple[str, Path]]:
    """Who walks: people with two photos walk with their 2.jpg (1.jpg is what gets enrolled), the others with 1.jpg."""
    people = sorted(p for p in (photos / "identities").iterdir() if p.is_dir())
    return [(p.name, p / "2.jpg" if (p / "2.jpg").is_file() else p / "1.jpg") for p in people]


def enrollment_photos(photos: Path = SHARED) -> dict[str, Path]:
    """The people with two photos, by their 1.jpg: the gallery. The people with one photo are strangers."""
    return {p.name: p / "1.jpg" for p in sorted((photos / "identities").iterdir()) if (p / "2.jpg").is_file()}


def gallery_embeddings(models: Models, photos: Path = SHARED, cache: Path = CACHE) -> dict[str, np.ndarray]:
    """{name: embedding of its enrollment photo's one face}, cached."""
    enroll = enrollment_photos(photos)
    path = cache / f"gallery-{_key(models.tag, sorted(enroll))}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return {name: stored[name] for name in stored.files}
    embeddings = {}
    for name, photo in enroll.items():
        faces = models.detector.detect(Image.open(photo).convert("RGB"))
        if len(faces) != 1:
            raise RuntimeError(f"{photo}: {len(faces)} faces, expected one")
        embeddings[name] = models.embedder.embed([faces[0].crop])[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **embeddings)
    return embeddings


def passages(models: Models, photos: Path = SHARED) -> Iterator[Passage]:
    """Every walker at every size, detected and embedded (from the cache when it is there)."""
    for sizes in SIZES:
        for person, photo in walkers(photos):
            yield passage(models, person, photo, sizes)


def passage(models: Models, person: str, photo: Path, sizes: str, cache: Path = CACHE) -> Passage:
    """One person's walk at `sizes`, measured (or read from `cache`)."""
    path = cache / f"{person}-{sizes.replace(' ', '')}-{_key(models.tag, str(photo), sizes)}.npz"
    if not path.is_file():
        _measure(models, photo, sizes, path)
    with np.load(path) as stored:
        meta = json.loads(str(stored["meta"]))
        embeddings = stored["embeddings"]
    frames: dict[int, list[Seen]] = {i: [] for i in range(meta["frames"])}
    for row, face in enumerate(meta["faces"]):
        quality = FaceQuality.model_validate(face["quality"])
        frames[face["frame"]].append(Seen(tuple(face["box"]), quality, face["walker"], embeddings[row]))
    return Passage(person, photo, sizes, [(i / FPS, faces) for i, faces in frames.items()])


def _measure(models: Models, photo: Path, sizes: str, path: Path) -> None:
    from tests.edge.clips import small_face_clip

    low, high = SIZES[sizes]
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.avi"
        small_face_clip(photo, VIDEO, clip, fps=FPS, seconds=SECONDS, face_width=(low, high),
                        blur_sigma=BLUR_SIGMA, blur_px=BLUR_PX)
        capture = cv2.VideoCapture(str(clip))
        faces, crops, index = [], [], 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            image = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            for face in models.detector.detect(image):
                faces.append({"frame": index, "box": list(face.box), "walker": _is_walker(face.box, index / FPS, high),
                              "quality": face.quality.model_dump() if face.quality else None})
                crops.append(face.crop)
            index += 1
        capture.release()
    embeddings = models.embedder.embed(crops) if crops else np.zeros((0, 512), np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, meta=np.array(json.dumps({"frames": index, "faces": faces})), embeddings=embeddings)


def _is_walker(box: tuple[float, float, float, float], t: float, face_px: int) -> bool:
    """Whether the box is the pasted head's face: small_face_clip moves its centre from x 120 to 520 at y 250."""
    x, y = 120 + (520 - 120) * t / SECONDS, 250
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    return abs(centre[0] - x) <= face_px and abs(centre[1] - y) <= face_px


def _key(*parts: object) -> str:
    text = json.dumps([CLIP_VERSION, FPS, SECONDS, BLUR_SIGMA, BLUR_PX, *parts], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
