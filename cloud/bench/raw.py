"""The physical limit: the handlers' own models called directly in this process on the same frames, with the
handlers' settings (downscale before MTCNN, probability threshold, face cap, embedding chunks), on the engine the
stack runs, at a given number of intra-op threads. Decode + MTCNN + batched InceptionResnetV1 passes per frame;
no HTTP, no queues."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloud.functions.detection.detector import Detector
    from cloud.functions.recognition.embedder import Embedder, Engine


@dataclass(frozen=True)
class RawResult:
    threads: int
    frames: int
    faces: int
    wall_s: float
    detect_ms: float  # mean per frame: decode + MTCNN + crops
    recognise_ms: float  # mean per frame: one embedding pass over the frame's crops
    cpu_ms: float  # this process's CPU time per frame (all its threads)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s


class RawModels:
    """The detector and embedder as the handlers build them (cloud.functions.settings defaults), on `engine`."""

    def __init__(self, weights: Path, engine: Engine = "onnx", models_dir: Path | None = None) -> None:
        from cloud.functions.settings import Settings

        self.engine, self.weights, self.models_dir = engine, weights, models_dir
        self.settings = Settings(weights_path=str(weights), engine=engine, models_dir=str(models_dir or ""))
        self._models: dict[int, tuple[Detector, Embedder]] = {}
        self.models(1)  # a missing or broken model file fails here, before any stack starts

    def models(self, threads: int) -> tuple[Detector, Embedder]:
        """torch sets its threads per process (one pair of models serves all); ONNX Runtime per session."""
        from cloud.functions.detection.detector import Detector
        from cloud.functions.recognition.embedder import Embedder

        key = 0 if self.engine == "torch" else threads
        if key not in self._models:
            s = self.settings
            self._models[key] = (
                Detector(min_probability=s.min_face_probability, max_side=s.detect_max_side, threads=threads,
                         engine=self.engine, models_dir=self.models_dir),
                Embedder(self.weights, threads=threads, engine=self.engine, models_dir=self.models_dir or ""))
        if self.engine == "torch":
            import torch

            torch.set_num_threads(threads)
        return self._models[key]

    def run(self, frames: list[bytes], threads: int) -> RawResult:
        detector, embedder = self.models(threads)
        self._frame(frames[0], detector, embedder)  # warm: first-call allocations are not the steady state
        detect, recognise, faces = [], [], 0
        started, cpu_started = time.perf_counter(), time.process_time()
        for frame in frames:
            d_ms, r_ms, n = self._frame(frame, detector, embedder)
            detect.append(d_ms)
            recognise.append(r_ms)
            faces += n
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        return RawResult(threads, len(frames), faces, wall, statistics.mean(detect), statistics.mean(recognise),
                         cpu * 1000 / len(frames))

    def _frame(self, frame: bytes, detector: Detector, embedder: Embedder) -> tuple[float, float, int]:
        from cloud.functions.images import open_checked

        s = self.settings
        t0 = time.perf_counter()
        image = open_checked(frame, s.max_body_bytes, s.max_pixels)
        faces = detector.detect_capped(image, s.max_faces).faces
        t1 = time.perf_counter()
        if faces:
            embedder.embed([face.crop for face in faces], chunk_size=s.embed_chunk)
        t2 = time.perf_counter()
        return (t1 - t0) * 1000, (t2 - t1) * 1000, len(faces)
