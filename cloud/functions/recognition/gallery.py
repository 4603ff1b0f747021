"""The gallery: enrolled face embeddings, their names, and the embedding model they came from.

Storage format (format version 1): a NumPy `.npz` archive, read without pickle, holding
- `format_version`: int, 1
- `model_tag`: str, the embedder's tag (model and weights checksum) the embeddings were made with
- `names`: str array (n,), one name per embedding; a name may have several embeddings
- `embeddings`: float32 (n, 512), L2-normalised
- optional, read as empty when absent (galleries saved before the faces library): `sources` str (n,), where each
  embedding came from (a faces-library face id, or '' for a photo enrolled by `facepipe enroll`);
  `negative_names` str (m,) and `negative_embeddings` float32 (m, 512): faces an operator marked "this is not
  <name>" (cloud/operator/faces/). A reader that ignores them still matches as before.

Location by URI: `s3://bucket/key` (a versioned object: every save is a new S3 version and the
VersionId is returned) or a local file path.

Edits (enroll, remove) go through `update_gallery`: read the latest gallery, apply the edit, and save
only if the stored gallery is still the one read (S3: PutObject with If-Match on the ETag read, or
If-None-Match '*' when there was none; a file: under an fcntl lock, compared with the content read);
on a conflict it re-reads and re-applies the edit. Two concurrent edits therefore both land, instead
of the later save silently undoing the earlier one.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from botocore.exceptions import ClientError

from cloud.functions import aws
from cloud.functions.contracts import UNKNOWN_NAME, name_refusal

FORMAT_VERSION = 1
EMBEDDING_SIZE = 512


class GalleryError(Exception):
    """The gallery cannot be read, written or used."""


class InvalidName(GalleryError, ValueError):
    """A name that cannot be enrolled (cloud.functions.contracts.name_refusal says why)."""


class GalleryNotFound(GalleryError, FileNotFoundError):
    """No gallery at the URI yet (nothing enrolled)."""


class GalleryConflict(GalleryError):
    """The stored gallery changed since it was read: the save was refused, nothing was overwritten."""


class GalleryModelMismatch(GalleryError):
    """The gallery's embeddings come from another model than the one in use: distances would be meaningless."""

    def __init__(self, gallery_tag: str, embedder_tag: str, uri: str = "") -> None:
        where = f" at {uri}" if uri else ""
        super().__init__(
            f"the gallery{where} was built with embedding model {gallery_tag!r}, but the model in use is "
            f"{embedder_tag!r}; embeddings of different models cannot be compared. Either run with the engine and "
            f"model file the gallery was built with, or re-enroll everyone with the model in use "
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
    # What a conditional save compares with the stored gallery: the S3 ETag or the file content's
    # SHA-256 as read (or last saved); None = not stored yet. Not stored.
    revision: str | None = None
    sources: list[str] = field(default_factory=list)  # per embedding; filled with '' when not given
    # "This is not <name>": a match to <name> closer to one of its negatives than to its own embeddings is not <name>.
    negative_names: list[str] = field(default_factory=list)
    negative_embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, EMBEDDING_SIZE), np.float32))

    def __post_init__(self) -> None:
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32).reshape(-1, EMBEDDING_SIZE)
        if len(self.names) != len(self.embeddings):
            raise GalleryError(f"{len(self.names)} names for {len(self.embeddings)} embeddings")
        self.sources = list(self.sources) or [""] * len(self.names)
        if len(self.sources) != len(self.names):
            raise GalleryError(f"{len(self.sources)} sources for {len(self.names)} embeddings")
        self.negative_embeddings = np.asarray(self.negative_embeddings, np.float32).reshape(-1, EMBEDDING_SIZE)
        if len(self.negative_names) != len(self.negative_embeddings):
            raise GalleryError(f"{len(self.negative_names)} names for {len(self.negative_embeddings)} negatives")

    def __len__(self) -> int:
        return len(self.names)

    def check_model(self, embedder_tag: str, uri: str = "") -> None:
        if self.model_tag != embedder_tag:
            raise GalleryModelMismatch(self.model_tag, embedder_tag, uri)

    def add(self, name: str, embeddings: np.ndarray, source: str = "") -> int:
        """Append embeddings (n, 512) for `name`, each recorded as coming from `source`; returns how many."""
        refusal = name_refusal(name)
        if refusal:
            raise InvalidName(f"invalid name: {refusal}")
        rows = np.asarray(embeddings, dtype=np.float32).reshape(-1, EMBEDDING_SIZE)
        self.embeddings = np.concatenate([self.embeddings, rows])
        self.names.extend([name] * len(rows))
        self.sources.extend([source] * len(rows))
        return len(rows)

    def _keep(self, keep: list[int]) -> int:
        removed = len(self.names) - len(keep)
        self.names = [self.names[i] for i in keep]
        self.sources = [self.sources[i] for i in keep]
        self.embeddings = self.embeddings[keep]
        return removed

    def remove(self, name: str) -> int:
        """Drop every embedding of `name`; returns how many were removed (0 when unknown). Its negatives stay:
        `forget` drops those too."""
        return self._keep([i for i, n in enumerate(self.names) if n != name])

    def remove_source(self, name: str, source: str) -> int:
        """Drop `name`'s embeddings that came from `source` (one enrollment face); returns how many."""
        return self._keep([i for i, (n, s) in enumerate(zip(self.names, self.sources, strict=True))
                           if not (n == name and s == source)])

    def add_negative(self, name: str, embedding: np.ndarray) -> int:
        """Keep `embedding` as a face that is not `name`; returns 1."""
        row = np.asarray(embedding, dtype=np.float32).reshape(1, EMBEDDING_SIZE)
        self.negative_embeddings = np.concatenate([self.negative_embeddings, row])
        self.negative_names.append(name)
        return 1

    def remove_negatives(self, name: str) -> int:
        """Drop the faces marked "this is not `name`"; returns how many."""
        keep = [i for i, n in enumerate(self.negative_names) if n != name]
        removed = len(self.negative_names) - len(keep)
        self.negative_names = [self.negative_names[i] for i in keep]
        self.negative_embeddings = self.negative_embeddings[keep]
        return removed

    def forget(self, name: str) -> int:
        """Drop `name`'s embeddings and negatives; returns how many rows went."""
        return self.remove(name) + self.remove_negatives(name)

    def rename(self, old: str, new: str) -> int:
        """Give `old`'s embeddings and negatives the name `new`; returns how many rows changed."""
        refusal = name_refusal(new)
        if refusal:
            raise InvalidName(f"invalid name: {refusal}")
        changed = self.names.count(old) + self.negative_names.count(old)
        self.names = [new if n == old else n for n in self.names]
        self.negative_names = [new if n == old else n for n in self.negative_names]
        return changed

    def counts(self) -> dict[str, int]:
        """Embeddings per name, names sorted."""
        result: dict[str, int] = {}
        for name in sorted(self.names):
            result[name] = result.get(name, 0) + 1
        return result

    def match(self, embeddings: np.ndarray, threshold: float) -> list[Match]:
        """Nearest enrolled embedding per query row by L2 distance; beyond `threshold` the name is
        UNKNOWN_NAME (with the distance), and an empty gallery gives (UNKNOWN_NAME, None). A stored name
        that name_refusal refuses (a gallery written before names were checked) also answers UNKNOWN_NAME."""
        queries = np.asarray(embeddings, dtype=np.float32).reshape(-1, EMBEDDING_SIZE)
        if not len(self.names):
            return [(UNKNOWN_NAME, None)] * len(queries)
        distances = _distances(queries, self.embeddings)
        if self.negative_names:
            return self._match_with_negatives(queries, distances, threshold)
        nearest = distances.argmin(1)
        result: list[Match] = []
        for row, index in enumerate(nearest):
            distance = float(distances[row, index])
            name = self.names[index]
            known = distance <= threshold and name_refusal(name) is None
            result.append((name if known else UNKNOWN_NAME, distance))
        return result

    def candidates(self, embeddings: np.ndarray, count: int) -> list[list[tuple[str, float]]]:
        """Per query row, the `count` nearest distinct names (a name's distance: its nearest embedding), nearest
        first, whatever the threshold. Left out: names name_refusal refuses, and a name whose nearest negative is
        nearer than it (the face is "not that person", as match decides)."""
        queries = np.asarray(embeddings, dtype=np.float32).reshape(-1, EMBEDDING_SIZE)
        names = sorted({n for n in self.names if name_refusal(n) is None})
        if not names:
            return [[] for _ in range(len(queries))]
        own, vetoed = self._per_name(queries, _distances(queries, self.embeddings), names)
        own = np.where(own < vetoed, own, np.inf)
        order = np.argsort(own, axis=1, kind="stable")[:, :count]
        return [[(names[i], float(own[row, i])) for i in ranked if np.isfinite(own[row, i])]
                for row, ranked in enumerate(order)]

    def _per_name(self, queries: np.ndarray, distances: np.ndarray, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(own, vetoed), each (m, len(names)): the distance to each name's nearest embedding, and to that name's
        nearest negative (inf for a name without negatives)."""
        own = _nearest_per_name(distances, self.names, names)
        vetoed = np.full(own.shape, np.inf, np.float32)
        if self.negative_names:
            vetoed = _nearest_per_name(_distances(queries, self.negative_embeddings), self.negative_names, names)
        return own, vetoed

    def _match_with_negatives(self, queries: np.ndarray, distances: np.ndarray, threshold: float) -> list[Match]:
        """Per query, the nearest name whose own nearest embedding is nearer than that name's nearest negative and
        within `threshold`, with the distance to that name's nearest embedding; when no name passes, unknown with
        the distance to the nearest embedding overall (as without negatives)."""
        names = sorted(set(self.names))
        own, vetoed = self._per_name(queries, distances, names)
        usable = np.where((own < vetoed) & (own <= threshold), own, np.inf)
        result: list[Match] = []
        for row in range(len(queries)):
            column = int(usable[row].argmin())
            nearest = float(distances[row].min())
            known = np.isfinite(usable[row, column]) and name_refusal(names[column]) is None
            result.append((names[column], float(own[row, column])) if known else (UNKNOWN_NAME, nearest))
        return result


def _nearest_per_name(distances: np.ndarray, row_names: list[str], names: list[str]) -> np.ndarray:
    """(m, len(names)): per query, the least of `distances` (m, len(row_names)) over each name's rows; inf for a
    name without rows."""
    column = {name: i for i, name in enumerate(names)}
    keep = [i for i, n in enumerate(row_names) if n in column]
    nearest = np.full((len(distances), len(names)), np.inf, np.float32)
    if keep:  # one scatter-min over all rows instead of a loop over names
        np.minimum.at(nearest.T, [column[row_names[i]] for i in keep], distances[:, keep].T.astype(np.float32))
    return nearest


def _distances(queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(m, n) L2 distances from each query row to each of `rows`."""
    # |a-b|^2 = |a|^2 + |b|^2 - 2ab: one matrix product instead of an (m, n, 512) difference.
    squared = (queries**2).sum(1)[:, None] + (rows**2).sum(1)[None, :] - 2 * queries @ rows.T
    return np.sqrt(np.clip(squared, 0, None))


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
        sources=np.array(gallery.sources, dtype=str),
        negative_names=np.array(gallery.negative_names, dtype=str),
        negative_embeddings=gallery.negative_embeddings,
    )
    return buffer.getvalue()


def from_bytes(data: bytes, uri: str = "", version: str | None = None, revision: str | None = None) -> Gallery:
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
                revision=revision,
                sources=[str(n) for n in archive["sources"]] if "sources" in archive else [],
                negative_names=[str(n) for n in archive["negative_names"]] if "negative_names" in archive else [],
                negative_embeddings=archive["negative_embeddings"] if "negative_embeddings" in archive else
                np.zeros((0, EMBEDDING_SIZE), np.float32),
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
        return from_bytes(data, uri, version, _content_revision(data))
    bucket, key = location
    s3 = aws.client("s3")
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except s3.exceptions.NoSuchKey as exc:
        raise GalleryNotFound(f"no gallery at {uri}: enroll someone first (facepipe enroll)") from exc
    return from_bytes(obj["Body"].read(), uri, _s3_version(obj), obj["ETag"])


def save_gallery(gallery: Gallery, uri: str) -> str | None:
    """Write the gallery unconditionally, whatever is stored (a new gallery, a copy to another URI);
    returns (and sets on `gallery`) its new version: the S3 VersionId, or the file's mtime. Edits of
    a gallery others may edit too go through `update_gallery`."""
    return _write(gallery, uri, conditional=False)


def _write(gallery: Gallery, uri: str, *, conditional: bool) -> str | None:
    """Save; with `conditional`, only if the stored gallery's revision is still `gallery.revision`
    (None: only if nothing is stored), else GalleryConflict. A local file is replaced atomically so a
    reader never sees half a gallery; its conditional save must run under `_file_lock`."""
    data = to_bytes(gallery)
    location = parse_s3_uri(uri)
    if location is None:
        path = Path(uri)
        if conditional and _stored_file_revision(path) != gallery.revision:
            raise GalleryConflict(f"{uri} changed since it was read")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{random.getrandbits(32):08x}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        gallery.version, gallery.revision = file_version(path), _content_revision(data)
        return gallery.version
    bucket, key = location
    condition: dict[str, str] = {}
    if conditional:
        condition = {"IfMatch": gallery.revision} if gallery.revision else {"IfNoneMatch": "*"}
    try:
        reply = aws.client("s3").put_object(
            Bucket=bucket, Key=key, Body=data, ContentType="application/octet-stream", **condition
        )
    except ClientError as exc:
        # 412: the ETag no longer matches (or an object appeared); 409: a concurrent conditional write
        # won the race; NoSuchKey: the object read was deleted meanwhile.
        if conditional and exc.response.get("Error", {}).get("Code") in _CONFLICT_CODES:
            raise GalleryConflict(f"{uri} changed since it was read") from exc
        raise
    gallery.version, gallery.revision = _s3_version(reply), reply["ETag"]
    return gallery.version


_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"}
UPDATE_ATTEMPTS = 8


@dataclass(frozen=True)
class Update:
    gallery: Gallery  # as saved (or as read, when the edit changed nothing)
    changed: int  # what the edit returned: embeddings added + removed; 0 = nothing saved
    attempts: int  # 1 unless another writer got in between and the edit was re-applied


def update_gallery(
    uri: str, edit: Callable[[Gallery], int], *, new: Callable[[], Gallery] | None = None,
    attempts: int = UPDATE_ATTEMPTS,
) -> Update:
    """Apply `edit` to the latest gallery at `uri` and save it, so that concurrent edits all land.

    `edit` changes the gallery in place and returns how many embeddings it added or removed (0: nothing
    to save). It may run more than once, each time on a fresh copy, so it must be cheap and depend only
    on its argument: do slow work (detection, embedding) before. `new` makes the gallery to edit when
    none is stored yet; without it that is GalleryNotFound. Exceptions from `edit` (e.g.
    GalleryModelMismatch) propagate with nothing saved; GalleryConflict after `attempts` lost races.
    """
    with _file_lock(uri):
        for attempt in range(1, attempts + 1):
            try:
                gallery = load_gallery(uri)
            except GalleryNotFound:
                if new is None:
                    raise
                gallery = new()
            changed = edit(gallery)
            if not changed:
                return Update(gallery, 0, attempt)
            try:
                _write(gallery, uri, conditional=True)
                return Update(gallery, changed, attempt)
            except GalleryConflict:
                if attempt < attempts:
                    time.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))  # full jitter
    raise GalleryConflict(f"{uri} kept changing: {attempts} attempts to save an edit lost the race; try again")


@contextmanager
def _file_lock(uri: str) -> Iterator[None]:
    """For a file gallery, an exclusive lock on a lock file beside it for the whole read-edit-save:
    local writers queue instead of racing. (S3 needs none: its conditional writes do the job.)"""
    if parse_s3_uri(uri) is not None:
        yield
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A lock file that is never deleted: deleting it would let two writers lock two different files.
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _stored_file_revision(path: Path) -> str | None:
    try:
        return _content_revision(path.read_bytes())
    except FileNotFoundError:
        return None


def _content_revision(data: bytes) -> str:
    # The content itself, not mtime/size: two saves within one timestamp tick can have the same size.
    return hashlib.sha256(data).hexdigest()


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
