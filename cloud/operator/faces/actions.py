"""The faces library's verbs, one implementation for the page (page.py) and the command line (cli.py).

Every gallery edit goes through `update_gallery` (conditional writes, re-applied on a conflict), so an operator's
edit never undoes an enrollment or another operator's edit. Every verb is logged with who did what.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from botocore.exceptions import ClientError

from cloud.functions import aws
from cloud.functions.contracts import UNKNOWN_NAME, crops_prefix, name_refusal
from cloud.functions.object_versions import purge, purge_keys, versions_under
from cloud.functions.recognition.enrolled_crops import enrolled_key, person_prefix, purge_person
from cloud.functions.recognition.face_records import (
    KNOWN_PREFIX,
    UNKNOWN_PREFIX,
    FaceRecord,
    day_of,
    parse_record_key,
)
from cloud.functions.recognition.gallery import (
    Gallery,
    GalleryError,
    GalleryNotFound,
    InvalidName,
    current_version,
    from_bytes,
    load_gallery,
    parse_s3_uri,
    update_gallery,
)
from cloud.functions.recognition.respond import RESULTS_PREFIX, parse_result_key, result_key_of
from cloud.operator.faces import store
from cloud.operator.faces.clusters import Group, group_faces
from cloud.operator.faces.store import Retention, Stored

log = logging.getLogger("facepipe.faces")


class LibraryError(ValueError):
    """A verb that cannot be done as asked (the message says why); nothing was changed."""


@dataclass
class Person:
    name: str
    embeddings: int
    negatives: int
    sources: list[str]  # enrollment faces (library face ids; '' for `facepipe enroll` photos)
    last_seen: FaceRecord | None = None


@dataclass
class Forgotten:
    """What `forget` deleted, counted."""

    name: str
    embeddings: int = 0
    negatives: int = 0
    gallery_versions: int = 0  # earlier gallery versions that held the person
    enrollment_crops: int = 0
    face_records: int = 0
    results: int = 0
    overflow_crops: int = 0  # crops/<device>/<request_id>/ of the frames they were in

    def lines(self) -> list[str]:
        return [f"forgot {self.name}: {self.embeddings} gallery embedding(s), {self.negatives} negative(s), "
                f"{self.gallery_versions} earlier gallery version(s), {self.enrollment_crops} enrollment crop(s), "
                f"{self.face_records} face record(s), {self.results} result(s), {self.overflow_crops} crop(s)"]


@dataclass
class Library:
    bucket: str
    gallery_uri: str
    threshold: float  # the recognizer's match threshold: also what groups unknown faces
    who: str  # the operator, in every log line
    settle_s: float = 0.0  # forget's second pass after this long (cli.py: the recognizers' gallery_refresh_s and more)
    gallery_key: str = field(init=False)
    # Records read, by key (store.list_records): a page reload reads only the faces kept since.
    _records: dict[str, FaceRecord] = field(init=False, default_factory=dict)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        location = parse_s3_uri(self.gallery_uri)
        if location is None or location[0] != self.bucket:
            raise LibraryError(f"the faces library needs the gallery in the bucket {self.bucket} (s3://...), "
                               f"not {self.gallery_uri!r}")
        self.gallery_key = location[1]

    # --- reading ------------------------------------------------------------------------------------------------

    def recent(self, days: int = 7, *, device: str | None = None, name: str | None = None,
               unknown_only: bool = False) -> list[Stored]:
        since = day_of(time.time() - days * 86400)
        with self._lock:  # one listing at a time fills the cache
            return store.list_records(self.bucket, since_day=since, device=device, name=name,
                                      unknown_only=unknown_only, cache=self._records)

    def unknown_groups(self, faces: Sequence[Stored]) -> list[Group]:
        return group_faces([f for f in faces if f.record.name == UNKNOWN_NAME], self.threshold)

    def gallery(self) -> Gallery:
        return load_gallery(self.gallery_uri)

    def people(self, faces: Sequence[Stored] = ()) -> list[Person]:
        """Everyone enrolled, with counts and where `faces` (newest first) last saw them."""
        try:
            gallery = self.gallery()
        except GalleryError:
            return []
        last: dict[str, FaceRecord] = {}
        for stored in faces:
            last.setdefault(stored.record.name, stored.record)
        negatives = Counter(gallery.negative_names)
        people = []
        for name, count in gallery.counts().items():
            sources = [s for n, s in zip(gallery.names, gallery.sources, strict=True) if n == name]
            people.append(Person(name, count, negatives[name], sources, last.get(name)))
        return people

    def retention(self) -> Retention | None:
        return store.retention_days(self.bucket)

    # --- verbs --------------------------------------------------------------------------------------------------

    def assign(self, keys: Sequence[str], name: str) -> list[str]:
        """Enroll each face as `name` (the recognizer's own embedding of that crop; its crop kept as an enrollment
        crop) and file its record under `name`; returns the records' new keys (a record older than the named faces'
        retention is deleted instead: `_refile`). From the next batch on the recognizer matches them (it rechecks
        the gallery's version)."""
        refusal = name_refusal(name)
        if refusal:
            raise InvalidName(f"invalid name: {refusal}")
        records = [store.read_record(self.bucket, store.check_record_key(key)) for key in keys]
        if not records:
            raise LibraryError("no face given")

        def enroll(gallery: Gallery) -> int:
            for record in records:
                if record.model != gallery.model_tag:
                    raise LibraryError(f"face {record.face_id} was embedded with {record.model}, the gallery "
                                       f"with {gallery.model_tag}")
                gallery.remove_source(name, record.face_id)  # assigning twice adds it once
                if record.name != UNKNOWN_NAME:  # reassigned: it leaves the enrollment it was assigned to before
                    gallery.remove_source(record.name, record.face_id)
            return sum(gallery.add(name, record.embedding(), source=record.face_id) for record in records)

        model = records[0].model
        update_gallery(self.gallery_uri, enroll, new=lambda: Gallery(model))
        retention, moved = self.retention(), []
        for key, record in zip(keys, records, strict=True):
            store.put_enrolled_crop(self.bucket, name, record.face_id, record.crop_jpeg())
            if record.name not in (UNKNOWN_NAME, name):
                purge_keys(self.bucket, [enrolled_key(record.name, record.face_id)])
            new_key = self._refile(key, record.model_copy(update={"name": name, "assigned_by": self.who}), retention)
            moved.extend([new_key] if new_key else [])
        log.info("%s assigned %d face(s) to %s: %s", self.who, len(records), name, ", ".join(keys))
        return moved

    def wrong(self, key: str) -> str | None:
        """"This is not X": the face leaves X's enrollment if it came from there, its embedding becomes a negative
        of X (X's matches are checked against it) and its record is filed as unknown; returns its new key (None:
        older than the unknown faces' retention, deleted)."""
        record = store.read_record(self.bucket, store.check_record_key(key))
        if record.name == UNKNOWN_NAME:
            raise LibraryError(f"face {record.face_id} is not named: nothing to mark wrong")
        wrong_name = record.name

        def veto(gallery: Gallery) -> int:
            return gallery.remove_source(wrong_name, record.face_id) + gallery.add_negative(
                wrong_name, record.embedding())

        update_gallery(self.gallery_uri, veto)
        purge_keys(self.bucket, [enrolled_key(wrong_name, record.face_id)])
        new_key = self._refile(key, record.model_copy(update={"name": UNKNOWN_NAME, "assigned_by": self.who}),
                               self.retention())
        log.info("%s marked %s as not %s", self.who, key, wrong_name)
        return new_key

    def delete(self, keys: Sequence[str]) -> int:
        """Delete face records (every version); returns how many."""
        deleted = purge_keys(self.bucket, [store.check_record_key(key) for key in keys])
        log.info("%s deleted %d face record(s): %s", self.who, deleted, ", ".join(keys))
        return deleted

    def rename(self, old: str, new: str) -> int:
        """Rename a person in the gallery, their enrollment crops, face records and persisted results; returns the
        gallery rows."""
        if new == old:
            return 0
        renamed = update_gallery(self.gallery_uri, lambda gallery: gallery.rename(old, new)).changed
        if not renamed:
            raise LibraryError(f"{old!r} is not enrolled")
        for key in list(store.keys_under(self.bucket, person_prefix(old))):
            source = key.rsplit("/", 1)[-1].removesuffix(".jpg")
            store.put_enrolled_crop(self.bucket, new, source, store.get_bytes(self.bucket, key))
            purge_keys(self.bucket, [key])
        retention = self.retention()
        for stored in store.list_records(self.bucket, name=old):
            self._refile(stored.key, stored.record.model_copy(update={"name": new}), retention)
        results = 0
        for key, body in store.results_naming(self.bucket, old):  # so that `forget NEW` finds them
            if store.outlived(parse_result_key(key)[1], RESULTS_PREFIX, retention):
                purge_keys(self.bucket, [key])
                continue
            for face in body["faces"]:
                if not isinstance(face, dict):
                    continue
                candidates = face.get("candidates")  # in an answer of schema 2
                for named in [face, *(candidates if isinstance(candidates, list) else [])]:
                    if isinstance(named, dict) and named.get("name") == old:
                        named["name"] = new
            store.put_json(self.bucket, key, json.dumps(body, separators=(",", ":"), ensure_ascii=False))
            results += 1
        log.info("%s renamed %s to %s (%d gallery row(s), %d result(s))", self.who, old, new, renamed, results)
        return renamed

    def remove_enrollment(self, name: str, source: str) -> int:
        """Remove one enrollment face of `name` (its embedding and crop); returns the embeddings removed. Only a
        library face id: '' (photos enrolled with `facepipe enroll`) would match every photo of `name`."""
        refusal = name_refusal(name)
        if refusal:
            raise InvalidName(f"invalid name: {refusal}")
        store.check_source(source)
        removed = update_gallery(self.gallery_uri, lambda gallery: gallery.remove_source(name, source)).changed
        purge_keys(self.bucket, [enrolled_key(name, source)])
        log.info("%s removed enrollment %s of %s (%d embedding(s))", self.who, source, name, removed)
        return removed

    def forget(self, name: str, progress: Callable[[str], None] = log.info) -> Forgotten:
        """Everything about `name`: gallery embeddings and negatives (and the earlier gallery versions holding them),
        enrollment crops, face records, the results naming them and the overflow crops of those frames. Then, after
        `settle_s`, the face records and results again: warm recognizers keep the gallery they loaded until their
        next check (gallery_refresh_s) and go on naming the person meanwhile."""
        refusal = name_refusal(name)
        if refusal:
            raise InvalidName(f"invalid name: {refusal}")
        report = Forgotten(name)
        counted: dict[str, int] = {}

        def drop(gallery: Gallery) -> int:
            counted["embeddings"] = gallery.names.count(name)
            counted["negatives"] = gallery.negative_names.count(name)
            return gallery.forget(name)

        try:
            if update_gallery(self.gallery_uri, drop).changed:
                report.embeddings, report.negatives = counted["embeddings"], counted["negatives"]
        except GalleryNotFound:
            pass  # nothing enrolled: earlier versions, the stored faces and results may still name them
        # Always: after `gallery remove` or `enroll --replace` the current gallery no longer holds them, earlier
        # versions still do.
        report.gallery_versions = self._purge_gallery_history(name, current_version(self.gallery_uri))
        report.enrollment_crops = purge_person(self.gallery_uri, name)
        self._purge_sightings(name, report)
        if self.settle_s > 0:
            progress(f"forget {name}: waiting {self.settle_s:.0f} s for warm recognizers to reload the gallery, "
                     "then deleting what they kept meanwhile")
            time.sleep(self.settle_s)
            self._purge_sightings(name, report)
        log.info("%s %s", self.who, report.lines()[0])
        return report

    def _purge_sightings(self, name: str, report: Forgotten) -> None:
        """The face records filed under `name`, the results naming them and the results and overflow crops of the
        frames their faces were in (named or assigned later: those show them too); adds to `report`'s counts."""
        frames = {(parsed.device_id, parsed.day, parsed.request_id) for parsed in
                  map(parse_record_key, store.keys_under(self.bucket, f"{KNOWN_PREFIX}{name}/"))}
        report.face_records += purge(self.bucket, [f"{KNOWN_PREFIX}{name}/"])
        naming = [key for key, _ in store.results_naming(self.bucket, name)]
        frames |= {parse_result_key(key) for key in naming}
        report.results += purge_keys(self.bucket, {*naming, *(result_key_of(*frame) for frame in frames)})
        report.overflow_crops += purge(self.bucket, [crops_prefix(device, request)
                                                     for device, _, request in sorted(frames)])

    # --- helpers ------------------------------------------------------------------------------------------------

    def _refile(self, old_key: str, record: FaceRecord, retention: Retention | None) -> str | None:
        """Write `record` at the key its name gives, then delete every version of `old_key` if that differs; returns
        the new key. A record older than its new prefix's retention is deleted instead (None): a write starts S3's
        days again, so rewriting it would keep it past the retention."""
        with self._lock:
            self._records.pop(record.key, None)
        prefix = KNOWN_PREFIX if record.name != UNKNOWN_NAME else UNKNOWN_PREFIX
        if store.outlived(record.day, prefix, retention):
            purge_keys(self.bucket, [old_key])
            return None
        store.put_json(self.bucket, record.key, record.model_dump_json())
        if record.key != old_key:
            purge_keys(self.bucket, [old_key])
        return record.key

    def _purge_gallery_history(self, name: str, current: str | None) -> int:
        """Delete the gallery's earlier versions that still hold `name` (the bucket keeps them 90 days)."""
        s3 = aws.client("s3")
        doomed = []
        for key, version in versions_under(self.bucket, self.gallery_key):
            if key != self.gallery_key or version == current:
                continue
            try:
                old = from_bytes(s3.get_object(Bucket=self.bucket, Key=key, VersionId=version)["Body"].read())
            except ClientError:  # a delete marker has no body: nothing of anyone in it
                continue
            if name in old.names or name in old.negative_names:
                doomed.append(version)
        for version in doomed:
            s3.delete_object(Bucket=self.bucket, Key=self.gallery_key, VersionId=version)
        return len(doomed)
