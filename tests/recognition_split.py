"""The shared photos' enrollment/probe split: every identity's 1.jpg enrolled, every identity photo probed,
against the whole gallery and against the gallery without the probe's own person (a stranger's view)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cloud.functions.recognition.gallery import Gallery, Match
from cloud.functions.settings import Settings
from tests.photos import SHARED

THRESHOLD = Settings.model_fields["match_threshold"].default  # the calibrated default, not the env


def enrollment_photos() -> dict[str, list[Path]]:
    """{person: [identities/<person>/1.jpg]} for every identity."""
    return {p.name: [p / "1.jpg"] for p in sorted((SHARED / "identities").iterdir()) if p.is_dir()}


def recognise(embedding: np.ndarray, gallery: Gallery) -> Match:
    [match] = gallery.match(embedding, THRESHOLD)
    return match


def decisions(gallery: Gallery, probes: dict[Path, np.ndarray]) -> dict[str, Match]:
    """"<person>/<photo>": the probe's match in the whole gallery."""
    return {f"{photo.parent.name}/{photo.name}": recognise(embedding, gallery) for photo, embedding in probes.items()}


def stranger_decisions(gallery: Gallery, probes: dict[Path, np.ndarray]) -> dict[str, Match]:
    """"<person>/<photo>": the probe's match in the gallery with its own person taken out (leave one out)."""
    matches = {}
    for photo, embedding in probes.items():
        person = photo.parent.name
        others = Gallery(gallery.model_tag, list(gallery.names), gallery.embeddings.copy())
        assert others.remove(person) == 1
        matches[f"{person}/{photo.name}"] = recognise(embedding, others)
    return matches
