"""Enrollment crops: the face a gallery embedding was made from when the faces library enrolled it
(cloud/operator/faces/), at `gallery/enrolled/<name>/<source>.jpg` beside the gallery. gallery/ has no expiry rule,
so whatever removes a person's embeddings (`forget`, `gallery remove`, `enroll --replace`) deletes their crops."""

from __future__ import annotations

from cloud.functions.object_versions import purge
from cloud.functions.recognition.gallery import parse_s3_uri

ENROLLED_PREFIX = "gallery/enrolled/"


def enrolled_key(name: str, source: str) -> str:
    return f"{ENROLLED_PREFIX}{name}/{source}.jpg"


def person_prefix(name: str) -> str:
    return f"{ENROLLED_PREFIX}{name}/"


def purge_person(gallery_uri: str, name: str) -> int:
    """Delete every version of `name`'s enrollment crops in the gallery's bucket; returns how many crops. A file
    gallery has none (the library works on S3 only)."""
    location = parse_s3_uri(gallery_uri)
    return 0 if location is None else purge(location[0], [person_prefix(name)])
