"""Calibrate the unknown-threshold (max L2 distance for a named match) on the shared photos.

Run: `.venv/bin/python -m cloud.bench.calibrate_threshold [--weights W] [--photos ../shared/testdata/faces]`

Every `identities/<name>/<n>.jpg` photo is detected (MTCNN) and embedded (the configured weights). Printed:
- pairwise: every same-person pair and every different-person pair; per threshold the false-reject
  rate (same-person pairs over it) and the false-accept rate (different-person pairs under it);
- open set, as the recognizer is used: enroll `1.jpg` of each person with two photos, then probe
  their `2.jpg` (genuine: rejected or given another name = false reject) and the people with one
  photo (strangers: given any name = false accept);
- the chosen default: the middle of the widest run of thresholds with the fewest open-set errors
  (false rejects + false accepts), ties between runs broken by fewer pairwise errors.
"""

from __future__ import annotations

import argparse
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloud.functions.contracts import UNKNOWN_NAME
from cloud.functions.recognition.gallery import Gallery

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PHOTOS = REPO.parent / "shared" / "testdata" / "faces"
DEFAULT_WEIGHTS = REPO / ".cache" / "models" / "facenet-casia-webface.pt"
THRESHOLDS = np.round(np.arange(0.70, 1.4001, 0.01), 2)


@dataclass
class Distances:
    same: np.ndarray  # same-person pair distances
    different: np.ndarray  # different-person pair distances
    genuine: list[tuple[str, str, float]]  # open set: (true name, nearest name, distance) per 2.jpg probe
    strangers: list[tuple[str, str, float]]  # open set: (stranger, nearest name, distance)


def embed_identities(photos: Path, weights: Path) -> dict[str, list[np.ndarray]]:
    """{identity: [embedding of 1.jpg, 2.jpg, ...]}; every identities/ photo holds exactly one face."""
    from PIL import Image

    from cloud.functions.detection.detector import Detector
    from cloud.functions.recognition.embedder import Embedder

    detector, embedder = Detector(), Embedder(weights)
    names, crops = [], []
    for path in sorted((photos / "identities").glob("*/*.jpg")):
        faces = detector.detect(Image.open(path).convert("RGB"))
        if len(faces) != 1:
            raise RuntimeError(f"{path}: {len(faces)} faces, expected exactly one")
        names.append(path.parent.name)
        crops.append(faces[0].crop)
    embeddings = np.concatenate([embedder.embed(crops[i : i + 16]) for i in range(0, len(crops), 16)])
    result: dict[str, list[np.ndarray]] = {}
    for name, embedding in zip(names, embeddings, strict=True):
        result.setdefault(name, []).append(embedding)
    return result


def distances(people: dict[str, list[np.ndarray]]) -> Distances:
    flat = [(name, e) for name, es in people.items() for e in es]
    same: list[float] = []
    different: list[float] = []
    for (name_a, a), (name_b, b) in itertools.combinations(flat, 2):
        (same if name_a == name_b else different).append(float(np.linalg.norm(a - b)))
    enrolled = {name: es for name, es in people.items() if len(es) >= 2}
    gallery = Gallery("calibration")
    for name, es in enrolled.items():
        gallery.add(name, es[0])
    # threshold = inf: the nearest name and its distance, whatever the distance.
    genuine_probes = [(name, es[1]) for name, es in enrolled.items()]
    stranger_probes = [(name, es[0]) for name, es in people.items() if len(es) == 1]
    genuine = [(n, m, d or 0.0) for (n, _), (m, d) in zip(
        genuine_probes, gallery.match(np.array([e for _, e in genuine_probes]), np.inf), strict=True)]
    strangers = [(n, m, d or 0.0) for (n, _), (m, d) in zip(
        stranger_probes, gallery.match(np.array([e for _, e in stranger_probes]), np.inf), strict=True)]
    return Distances(np.array(same), np.array(different), genuine, strangers)


@dataclass(frozen=True)
class Rates:
    threshold: float
    pair_frr: float
    pair_far: float
    open_false_rejects: int  # genuine probes rejected (unknown) or given another name
    open_false_accepts: int  # strangers given a name

    @property
    def open_errors(self) -> int:
        return self.open_false_rejects + self.open_false_accepts


def rates(d: Distances, threshold: float) -> Rates:
    def named(nearest: str, distance: float) -> str:
        return nearest if distance <= threshold else UNKNOWN_NAME

    return Rates(
        threshold=float(threshold),
        pair_frr=float((d.same > threshold).mean()),
        pair_far=float((d.different <= threshold).mean()),
        open_false_rejects=sum(named(m, dist) != true for true, m, dist in d.genuine),
        open_false_accepts=sum(named(m, dist) != UNKNOWN_NAME for _, m, dist in d.strangers),
    )


def choose(table: list[Rates]) -> Rates:
    """Middle of the widest run of consecutive thresholds with the fewest errors (open set first,
    then pairwise), so the default sits as far as these photos allow from both kinds of error."""
    def key(r: Rates) -> tuple[int, float]:
        return r.open_errors, round(r.pair_frr + r.pair_far, 6)

    best = min(key(r) for r in table)
    runs: list[list[Rates]] = []
    for _, group in itertools.groupby(table, key=lambda r: key(r) == best):
        group_list = list(group)
        if key(group_list[0]) == best:
            runs.append(group_list)
    widest = max(runs, key=len)
    return widest[len(widest) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--weights", type=Path,
                        default=Path(os.environ.get("FACEPIPE_WEIGHTS_PATH") or DEFAULT_WEIGHTS))
    args = parser.parse_args()

    d = distances(embed_identities(args.photos, args.weights))
    print(f"# {len(d.same)} same-person pairs, {len(d.different)} different-person pairs; open set: "
          f"{len(d.genuine)} enrolled people probed with 2.jpg, {len(d.strangers)} strangers")
    print(f"same-person distance:      min {d.same.min():.3f}  median {np.median(d.same):.3f}  max {d.same.max():.3f}")
    print(f"different-person distance: min {d.different.min():.3f}  median {np.median(d.different):.3f}  "
          f"max {d.different.max():.3f}")
    worst_genuine = max(d.genuine, key=lambda g: g[2])
    nearest_stranger = min(d.strangers, key=lambda s: s[2])
    print(f"open set: farthest genuine probe {worst_genuine[0]} at {worst_genuine[2]:.3f} "
          f"(nearest {worst_genuine[1]}); nearest stranger {nearest_stranger[0]} at {nearest_stranger[2]:.3f} "
          f"(to {nearest_stranger[1]})")
    misnamed = [g for g in d.genuine if g[1] != g[0]]
    print(f"open set: genuine probes whose nearest enrolled face is someone else: {len(misnamed)} {misnamed}")
    print()
    print("threshold  pair FRR  pair FAR  open-set false rejects  open-set false accepts")
    table = [rates(d, t) for t in THRESHOLDS]
    for r in table:
        print(f"{r.threshold:9.2f}  {r.pair_frr:8.1%}  {r.pair_far:8.1%}  "
              f"{r.open_false_rejects:>10d}/{len(d.genuine):<11d}  {r.open_false_accepts:>10d}/{len(d.strangers)}")
    chosen = choose(table)
    print()
    print(f"chosen default match_threshold = {chosen.threshold:.2f}: pairwise FRR {chosen.pair_frr:.1%}, "
          f"FAR {chosen.pair_far:.1%}; open set {chosen.open_false_rejects}/{len(d.genuine)} false rejects, "
          f"{chosen.open_false_accepts}/{len(d.strangers)} false accepts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
