"""The physical limit: the handlers' own models called directly in this process on the same frames, with the
handlers' settings (downscale before MTCNN, probability threshold, face cap, embedding chunks), at a given
number of torch threads. Decode + MTCNN + one batched InceptionResnetV1 pass per frame; no HTTP, no queues."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path


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
    """The detector and embedder as the handlers build them (cloud.settings defaults)."""

    def __init__(self, weights: Path) -> None:
        from cloud.detection.detector import Detector
        from cloud.recognition.embedder import Embedder
        from cloud.settings import Settings

        self.settings = Settings(weights_path=str(weights))
        self.detector = Detector(min_probability=self.settings.min_face_probability,
                                 max_side=self.settings.detect_max_side)
        self.embedder = Embedder(weights)

    def run(self, frames: list[bytes], threads: int) -> RawResult:
        import torch

        torch.set_num_threads(threads)
        self._frame(frames[0])  # warm: first-call allocations are not the steady state
        detect, recognise, faces = [], [], 0
        started, cpu_started = time.perf_counter(), time.process_time()
        for frame in frames:
            d_ms, r_ms, n = self._frame(frame)
            detect.append(d_ms)
            recognise.append(r_ms)
            faces += n
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        return RawResult(threads, len(frames), faces, wall, statistics.mean(detect), statistics.mean(recognise),
                         cpu * 1000 / len(frames))

    def _frame(self, frame: bytes) -> tuple[float, float, int]:
        from cloud.images import open_checked

        s = self.settings
        t0 = time.perf_counter()
        image = open_checked(frame, s.max_body_bytes, s.max_pixels)
        faces = self.detector.detect_capped(image, s.max_faces).faces
        t1 = time.perf_counter()
        if faces:
            self.embedder.embed([face.crop for face in faces], chunk_size=s.embed_chunk)
        t2 = time.perf_counter()
        return (t1 - t0) * 1000, (t2 - t1) * 1000, len(faces)
