"""`facepipe enroll`: detect the single face in each photo, embed it, and add it to the gallery.

    facepipe enroll --name NAME PHOTO...      one person, several photos
    facepipe enroll --dir people/             one sub-folder per person: people/<name>/*.jpg

Photos with no face or several faces are reported and skipped. Faces are embedded with the same engine
and model file as the recognition function (`--engine`, `--models-dir`, `--weights`; default: the functions'
FACEPIPE_ENGINE, FACEPIPE_MODELS_DIR, FACEPIPE_WEIGHTS_PATH), so the gallery's model tag matches its probes.
The models are loaded only when the command runs, so `facepipe --help` stays light.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cloud.functions.contracts import name_refusal
from cloud.functions.recognition.enrolled_crops import purge_person
from cloud.functions.recognition.gallery import (
    Gallery,
    GalleryError,
    GalleryNotFound,
    InvalidName,
    load_gallery,
    update_gallery,
)

if TYPE_CHECKING:
    from cloud.functions.detection.detector import Detector
    from cloud.functions.recognition.embedder import Embedder, Engine

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}
# Enrollment photos come from the operator's disk, not the network: allow full-size camera photos.
MAX_PHOTO_BYTES = 64 * 1024 * 1024
MAX_PHOTO_PIXELS = 64_000_000
EMBED_CHUNK = 16  # crops per forward pass: bounded memory on long enrollments


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass
class EnrollReport:
    gallery_uri: str
    model_tag: str
    enrolled: dict[str, int] = field(default_factory=dict)  # name -> photos added in this run
    skipped: list[Skipped] = field(default_factory=list)
    version: str | None = None  # the saved gallery's version (S3 VersionId); None if nothing was saved
    attempts: int = 0  # saves tried: more than 1 when another edit landed while this one was merged
    crops_deleted: int = 0  # with `replace`: the faces library's enrollment crops of the embeddings dropped

    @property
    def photos(self) -> int:
        return sum(self.enrolled.values())


def people_from_dir(directory: Path) -> dict[str, list[Path]]:
    """{folder name: its photos} for every sub-folder of `directory` holding photos."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    people = {}
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
        if photos:
            people[folder.name] = photos
    return people


def enroll_photos(
    gallery_uri: str,
    weights_path: str | Path,
    people: dict[str, list[Path]],
    *,
    min_probability: float = 0.9,
    replace: bool = False,
    progress: bool = False,
    detector: Detector | None = None,
    embedder: Embedder | None = None,
    engine: Engine | None = None,
    models_dir: str | Path | None = None,
) -> EnrollReport:
    """Add one embedding per usable photo to the gallery at `gallery_uri` and save it.

    `replace` drops a person's earlier embeddings first. `detector`/`embedder` let callers share
    loaded models; otherwise they are built for `engine` and `models_dir` (default: the functions' settings,
    FACEPIPE_ENGINE and FACEPIPE_MODELS_DIR; engine "torch" embeds with `weights_path`). Raises
    GalleryModelMismatch, before any photo is processed, when the stored gallery was built with another
    model. Detection and embedding run first; only the merge into the
    latest stored gallery is retried when another edit (an enrollment, a removal) lands meanwhile.
    """
    from tqdm import tqdm

    from cloud.functions.detection.detector import Detector
    from cloud.functions.recognition.embedder import Embedder

    refusals = [refusal for refusal in map(name_refusal, people) if refusal]
    if refusals:  # before loading a model or reading a photo
        raise InvalidName("invalid name(s), nobody enrolled: " + "; ".join(refusals))
    if engine is None or models_dir is None:
        from cloud.functions.settings import get_settings

        engine = engine or get_settings().engine
        models_dir = get_settings().models_dir if models_dir is None else models_dir
    embedder = embedder or Embedder(weights_path, engine=engine, models_dir=models_dir)
    _load_or_new(gallery_uri, embedder.model_tag).check_model(embedder.model_tag, gallery_uri)  # fail early
    detector = detector or Detector(min_probability=min_probability, engine=engine,
                                    models_dir=Path(models_dir) if models_dir else None)
    report = EnrollReport(gallery_uri=gallery_uri, model_tag=embedder.model_tag)

    names: list[str] = []
    crops: list[np.ndarray] = []
    work = [(name, path) for name, paths in people.items() for path in paths]
    for name, path in tqdm(work, desc="enrolling", unit="photo", disable=not progress, file=sys.stderr):
        crop_or_reason = _single_face(detector, path)
        if isinstance(crop_or_reason, str):
            report.skipped.append(Skipped(path, crop_or_reason))
        else:
            names.append(name)
            crops.append(crop_or_reason)
    if not crops:
        return report

    embeddings = np.concatenate(
        [embedder.embed(crops[i : i + EMBED_CHUNK]) for i in range(0, len(crops), EMBED_CHUNK)]
    )
    model_tag = embedder.model_tag

    def merge(gallery: Gallery) -> int:
        gallery.check_model(model_tag, gallery_uri)  # the stored gallery may have been replaced meanwhile
        changed = sum(gallery.remove(name) for name in set(names)) if replace else 0
        for name, embedding in zip(names, embeddings, strict=True):
            changed += gallery.add(name, embedding)
        return changed

    update = update_gallery(gallery_uri, merge, new=lambda: Gallery(model_tag))
    if replace:  # the faces library's crops of the embeddings just dropped
        report.crops_deleted = sum(purge_person(gallery_uri, name) for name in set(names))
    for name in names:
        report.enrolled[name] = report.enrolled.get(name, 0) + 1
    report.version, report.attempts = update.gallery.version, update.attempts
    return report


def _load_or_new(uri: str, model_tag: str) -> Gallery:
    try:
        return load_gallery(uri)
    except GalleryNotFound:
        return Gallery(model_tag)


def _single_face(detector: Detector, path: Path) -> np.ndarray | str:
    """The photo's only face crop, or why the photo is skipped."""
    from cloud.functions.images import ImageRejected, open_checked

    try:
        if path.stat().st_size > MAX_PHOTO_BYTES:  # before reading it: the limit is also a memory bound
            return f"unreadable: larger than {MAX_PHOTO_BYTES} bytes"
        image = open_checked(path.read_bytes(), MAX_PHOTO_BYTES, MAX_PHOTO_PIXELS)
    except (OSError, ImageRejected) as exc:
        return f"unreadable: {exc}"
    faces = detector.detect(image)
    if not faces:
        return f"no face found (probability >= {detector.min_probability})"
    if len(faces) > 1:
        return f"{len(faces)} faces found; an enrollment photo must show exactly one face"
    return faces[0].crop


# --- command line ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--name", help="the person shown in PHOTO...")
    who.add_argument("--dir", type=Path, help="folder with one sub-folder of photos per person (folder name = name)")
    parser.add_argument("photos", nargs="*", type=Path, metavar="PHOTO", help="photos of NAME (with --name)")
    parser.add_argument("--gallery", help="s3://bucket/key or a file path (default: $FACEPIPE_GALLERY_URI)")
    parser.add_argument("--weights",
                        help="InceptionResnetV1 weights file, engine torch (default: $FACEPIPE_WEIGHTS_PATH)")
    parser.add_argument("--engine", choices=["onnx", "torch"],
                        help="what runs the networks, as in the functions (default: $FACEPIPE_ENGINE, else onnx)")
    parser.add_argument("--models-dir", help="folder of the exported .onnx networks, engine onnx "
                                             "(default: $FACEPIPE_MODELS_DIR)")
    parser.add_argument("--min-probability", type=float, help="face detection threshold (default: 0.9)")
    parser.add_argument("--replace", action="store_true", help="drop the person's earlier embeddings first")


def run(args: argparse.Namespace) -> int:
    from cloud.functions.recognition.network import WeightsMissing
    from cloud.functions.settings import get_settings

    settings = get_settings()
    gallery_uri = args.gallery or settings.gallery_uri
    weights = args.weights or settings.weights_path
    engine = args.engine or settings.engine
    models_dir = args.models_dir or settings.models_dir
    model_option = "--weights (or set FACEPIPE_WEIGHTS_PATH)" if engine == "torch" else \
        "--models-dir (or set FACEPIPE_MODELS_DIR)"
    if not gallery_uri or not (weights if engine == "torch" else models_dir):
        print(f"error: give --gallery (or set FACEPIPE_GALLERY_URI) and, for engine {engine}, {model_option}",
              file=sys.stderr)
        return 2
    try:
        people = _people(args)
        report = enroll_photos(
            gallery_uri, weights, people, replace=args.replace, progress=True, engine=engine, models_dir=models_dir,
            min_probability=settings.min_face_probability if args.min_probability is None else args.min_probability,
        )
    except (GalleryError, WeightsMissing, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in summary_lines(report):
        print(line)
    return 0 if report.photos else 1


def _people(args: argparse.Namespace) -> dict[str, list[Path]]:
    if args.dir is not None:
        if args.photos:
            raise ValueError("--dir takes no PHOTO arguments")
        return people_from_dir(args.dir)
    if not args.photos:
        raise ValueError("--name needs at least one PHOTO")
    return {args.name: list(args.photos)}


def summary_lines(report: EnrollReport) -> Iterator[str]:
    for skipped in report.skipped:
        yield f"skipped {skipped.path}: {skipped.reason}"
    for name, count in sorted(report.enrolled.items()):
        yield f"enrolled {name}: {count} photo(s)"
    if report.photos:
        yield (f"saved {report.photos} embedding(s) of {len(report.enrolled)} person(s) to {report.gallery_uri} "
               f"(version {report.version}, model {report.model_tag})")
        if report.crops_deleted:
            yield f"deleted {report.crops_deleted} enrollment crop(s) of the replaced embeddings"
    else:
        yield f"nothing enrolled; {report.gallery_uri} unchanged"

