"""The gallery: enrolled face embeddings, their names, and the embedding model they came from.

Storage format (format version 1): a NumPy `.npz` archive, read without pickle, holding
- `format_version`: int, 1
- `model_tag`: str, the embedder's tag (model and weights checksum) the embeddings were made with
- `names`: str array (n,), one name per embedding; a name may have several embeddings
- `embeddings`: float32 (n, 512), L2-normalised

Location by URI: `s3://bucket/key` (a versioned object: every save is a new S3 version and the
VersionId is returned) or a local file path.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cloud import aws
from cloud.contracts import UNKNOWN_NAME

FORMAT_VERSION = 1
EMBEDDING_SIZE = 512


class GalleryError(Exception):
    """The gallery cannot be read, written or used."""


class GalleryNotFound(GalleryError, FileNotFoundError):
    """No gallery at the URI yet (nothing enrolled)."""


class GalleryModelMismatch(GalleryError):
    """The gallery's embeddings come from another model than the one in use: distances would be meaningless."""

    def __init__(self, gallery_tag: str, embedder_tag: str, uri: str = "") -> None:
        where = f" at {uri}" if uri else ""
        super().__init__(
            f"the gallery{where} was built with embedding model {gallery_tag!r}, but the weights in use are "
            f"{embedder_tag!r}; embeddings of different models cannot be compared. Either point the weights "
            f"path back to the weights the gallery was built with, or re-enroll everyone with the new weights "
            f"into a new gallery (remove the old one or choose another gallery URI)."
        )
        self.gallery_tag = gallery_tag
        self.embedder_tag = embedder_tag


Match = tuple[str, float | None]


@dataclass
class Gallery:
    model_tag: str
    names: list[str] = field(default_factory=list)
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, EMBEDDING_SIZE), np.float32))
    version: str | None = None  # where it was loaded from: S3 VersionId or file mtime; not stored

    def __post_init__(self) -> None:
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32).reshape(-1, EMBEDDING_SIZE)
        if len(self.names) != len(self.embeddings):
            raise GalleryError(f"{len(self.names)} names for {len(self.embeddings)} embeddings")

    def __len__(self) -> int:
        return len(self.names)

    def check_model(self, embedder_tag: str, uri: str = "") -> None:
        if self.model_tag != embedder_tag:
            raise GalleryModelMismatch(self.model_tag, embedder_tag, uri)

    def add(self, name: str, embeddings: np.ndarray) -> int:
        """Append embeddings (n, 512) for `name`; returns how many were added."""
        if not name or name == UNKNOWN_NAME:
            raise GalleryError(f"invalid name {name!r}: empty or the reserved {UNKNOWN_NAME!r}")
        rows = np.asarray(embeddings, dtype=np.float32).reshape(-1, EMBEDDING_SIZE)
        self.embeddings = np.concatenate([self.embeddings, rows])
        self.names.extend([name] * len(rows))
        return len(rows)

    def remove(self, name: str) -> int:
        """Drop every embedding of `name`; returns how many were removed (0 when unknown)."""
        keep = [i for i, n in enumerate(self.names) if n != name]
        removed = len(self.names) - len(keep)
        self.names = [self.names[i] for i in keep]
        self.embeddings = self.embeddings[keep]
        return removed

    def counts(self) -> dict[str, int]:
        """Embeddings per name, names sorted."""
        result: dict[str, int] = {}
        for name in sorted(self.names):
            result[name] = result.get(name, 0) + 1
        return result

    def match(self, embeddings: np.ndarray, threshold: float) -> list[Match]:
        """Nearest enrolled embedding per query row by L2 distance; beyond `threshold` the name is
        UNKNOWN_NAME (with the distance), and an empty gallery gives (UNKNOWN_NAME, None)."""
        queries = np.asarray(embeddings, dtype=np.float32).reshape(-1, EMBEDDING_SIZE)
        if not len(self.names):
            return [(UNKNOWN_NAME, None)] * len(queries)
        # |a-b|^2 = |a|^2 + |b|^2 - 2ab: one matrix product instead of an (m, n, 512) difference.
        squared = (
            (queries**2).sum(1)[:, None] + (self.embeddings**2).sum(1)[None, :] - 2 * queries @ self.embeddings.T
        )
        distances = np.sqrt(np.clip(squared, 0, None))
        nearest = distances.argmin(1)
        result: list[Match] = []
        for row, index in enumerate(nearest):
            distance = float(distances[row, index])
            result.append((self.names[index] if distance <= threshold else UNKNOWN_NAME, distance))
        return result


# --- storage -----------------------------------------------------------------------------------


def parse_s3_uri(uri: str) -> tuple[str, str] | None:
    """(bucket, key) for an s3:// URI, None for a local path."""
    if not uri.startswith("s3://"):
        return None
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket or not key:
        raise GalleryError(f"gallery URI {uri!r} must look like s3://bucket/key")
    return bucket, key


def to_bytes(gallery: Gallery) -> bytes:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        format_version=np.array(FORMAT_VERSION),
        model_tag=np.array(gallery.model_tag),
        names=np.array(gallery.names, dtype=str),
        embeddings=gallery.embeddings,
    )
    return buffer.getvalue()


def from_bytes(data: bytes, uri: str = "", version: str | None = None) -> Gallery:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            fmt = int(archive["format_version"])
            if fmt != FORMAT_VERSION:
                raise GalleryError(f"gallery {uri} has format version {fmt}; this code reads {FORMAT_VERSION}")
            return Gallery(
                model_tag=str(archive["model_tag"]),
                names=[str(n) for n in archive["names"]],
                embeddings=archive["embeddings"],
                version=version,
            )
    except (ValueError, KeyError, OSError) as exc:  # not an npz, or fields missing
        raise GalleryError(f"gallery {uri} is unreadable: {exc}") from exc


def load_gallery(uri: str) -> Gallery:
    """Read the gallery at `uri`; GalleryNotFound when nothing was saved there yet."""
    location = parse_s3_uri(uri)
    if location is None:
        path = Path(uri)
        try:
            # Version before content: a save in between then makes the next check reload, instead of
            # labelling the old content with the new version (which no check would ever reload).
            version = file_version(path)
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise GalleryNotFound(f"no gallery at {uri}: enroll someone first (facepipe enroll)") from exc
        return from_bytes(data, uri, version)
    bucket, key = location
    s3 = aws.client("s3")
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except s3.exceptions.NoSuchKey as exc:
        raise GalleryNotFound(f"no gallery at {uri}: enroll someone first (facepipe enroll)") from exc
    return from_bytes(obj["Body"].read(), uri, _s3_version(obj))


def save_gallery(gallery: Gallery, uri: str) -> str | None:
    """Write the gallery; returns (and sets on `gallery`) its new version: the S3 VersionId, or the
    file's mtime. A local file is replaced atomically so a reader never sees half a gallery."""
    data = to_bytes(gallery)
    location = parse_s3_uri(uri)
    if location is None:
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        gallery.version = file_version(path)
    else:
        bucket, key = location
        reply = aws.client("s3").put_object(
            Bucket=bucket, Key=key, Body=data, ContentType="application/octet-stream"
        )
        gallery.version = _s3_version(reply)
    return gallery.version


def current_version(uri: str) -> str | None:
    """The stored gallery's version without downloading it (S3 HEAD or file stat); None when absent."""
    location = parse_s3_uri(uri)
    if location is None:
        path = Path(uri)
        return file_version(path) if path.exists() else None
    bucket, key = location
    s3 = aws.client("s3")
    try:
        return _s3_version(s3.head_object(Bucket=bucket, Key=key))
    except s3.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def file_version(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_mtime_ns}-{stat.st_size}"


def _s3_version(reply: dict[str, Any]) -> str:
    # VersionId on a versioned bucket; the ETag keeps change detection working on an unversioned one.
    return str(reply.get("VersionId") or reply["ETag"])


class GalleryCache:
    """The recognizer's gallery, loaded once per container and reloaded when the stored version
    changes (checked with a HEAD/stat at most every `refresh_seconds`), so enrollments reach warm
    containers without a redeploy."""

    def __init__(self, refresh_seconds: float) -> None:
        self.refresh_seconds = refresh_seconds
        self._gallery: Gallery | None = None
        self._key: tuple[str, str] = ("", "")
        self._checked = 0.0

    def get(self, uri: str, model_tag: str) -> Gallery:
        """The gallery at `uri` (an empty one when none is stored or `uri` is empty), checked
        against `model_tag`: GalleryModelMismatch when it was built with other weights."""
        now = time.monotonic()
        if self._gallery is None or self._key != (uri, model_tag):
            self._gallery = _load_or_empty(uri, model_tag)
        elif uri and now - self._checked >= self.refresh_seconds:
            if current_version(uri) != self._gallery.version:
                self._gallery = _load_or_empty(uri, model_tag)
        else:
            return self._gallery
        self._key, self._checked = (uri, model_tag), now
        return self._gallery


def _load_or_empty(uri: str, model_tag: str) -> Gallery:
    if not uri:
        return Gallery(model_tag)
    try:
        gallery = load_gallery(uri)
    except GalleryNotFound:
        return Gallery(model_tag)  # nothing enrolled yet: every face is unknown
    gallery.check_model(model_tag, uri)
    return gallery
