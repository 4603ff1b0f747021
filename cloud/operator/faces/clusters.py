"""Unknown faces grouped by similarity, so five sightings of one stranger are one card.

Greedy leader clustering on the recognizer's embeddings, newest face first: a face joins the nearest group whose
mean embedding is within `threshold` (L2), else starts one. With the recognizer's match threshold, a group is the
faces that would have matched each other had one of them been enrolled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cloud.operator.faces.store import Stored


@dataclass
class Group:
    members: list[Stored] = field(default_factory=list)
    total: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # sum of the members' embeddings

    @property
    def centre(self) -> np.ndarray:
        mean = self.total / len(self.members)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)

    @property
    def group_id(self) -> str:
        """The newest member's face id: stable while the group's newest face stays."""
        return self.members[0].record.face_id

    def add(self, stored: Stored, embedding: np.ndarray) -> None:
        self.members.append(stored)
        self.total = embedding.copy() if not len(self.total) else self.total + embedding


def group_faces(faces: Sequence[Stored], threshold: float) -> list[Group]:
    """`faces` (newest first) in groups, each newest first; groups in the order of their newest face."""
    groups: list[Group] = []
    for stored in faces:
        embedding = stored.record.embedding()
        distances = [float(np.linalg.norm(group.centre - embedding)) for group in groups]
        if distances and min(distances) <= threshold:
            groups[int(np.argmin(distances))].add(stored, embedding)
        else:
            groups.append(Group())
            groups[-1].add(stored, embedding)
    return groups
