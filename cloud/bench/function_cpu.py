"""The functions' own CPU figures, read from the EMF metrics they print into their log (as CloudWatch would read
them): each invocation's `HandlerCpuMs`, and the part of it spent in the model (`DetectCpuMs`, `RecogniseCpuMs`).
Summed over the measured runs' time windows, per frame, they tell what a function spends besides its model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MODEL_CPU = ("DetectCpuMs", "RecogniseCpuMs")  # detection's MTCNN and crops; recognition's crops, embedding, match


@dataclass(frozen=True)
class Invocation:
    service: str  # the metrics' service dimension: facepipe-detection, facepipe-recognition
    at_s: float  # EMF's Timestamp: when the invocation flushed its metrics, at its end
    handler_ms: float
    model_ms: float


def read(log: Path) -> list[Invocation]:
    """Every invocation in the function log that reported its CPU; other lines (JSON logs, REPORT lines) skipped."""
    invocations = []
    with log.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if '"HandlerCpuMs"' not in line:
                continue
            try:
                emf = json.loads(line)
                invocations.append(Invocation(emf["service"], emf["_aws"]["Timestamp"] / 1000,
                                              _total(emf["HandlerCpuMs"]),
                                              sum(_total(emf[name]) for name in MODEL_CPU if name in emf)))
            except (ValueError, KeyError, TypeError):  # a log line that mentions the name, not an EMF record
                continue
    return invocations


def per_frame(invocations: list[Invocation], windows: list[tuple[float, float]],
              frames: int) -> dict[str, dict[str, float]]:
    """Per service, the CPU ms per frame of the invocations that ended inside `windows` (start, end: epoch
    seconds), which carried `frames` frames in all: in the handler, and in its model."""
    totals: dict[str, dict[str, float]] = {}
    for call in invocations:
        if any(start <= call.at_s <= end for start, end in windows):
            total = totals.setdefault(call.service, {"handler": 0.0, "model": 0.0})
            total["handler"] += call.handler_ms
            total["model"] += call.model_ms
    return {name: {part: round(ms / frames, 2) for part, ms in total.items()} for name, total in sorted(totals.items())}


def _total(value: float | list[float]) -> float:
    """An EMF metric's value: one number, or the list of every value added in the invocation."""
    return float(sum(value)) if isinstance(value, list) else float(value)
