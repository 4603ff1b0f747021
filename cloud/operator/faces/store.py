"""The faces library's S3 objects: the face records the recognizer keeps
(cloud/functions/recognition/face_records.py), the enrollment crops beside the gallery
(cloud/functions/recognition/enrolled_crops.py), the persisted results; listing and reading them (deleting every
version of them: cloud/functions/object_versions.py).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from cloud.functions import aws
from cloud.functions.contracts import name_refusal
from cloud.functions.recognition.enrolled_crops import enrolled_key
from cloud.functions.recognition.face_records import KNOWN_PREFIX, UNKNOWN_PREFIX, FaceRecord, day_of, parse_record_key
from cloud.functions.recognition.respond import RESULTS_PREFIX

log = logging.getLogger("facepipe.faces")
GET_THREADS = 16  # record reads at once: each GET is a round trip, the listing's cost (docs/bench.md)
# A key has no path meaning in S3, and names and device ids may hold '..'; the pattern pins the segments (no '/', no
# control character, none that is just '.' or '..').
_SEGMENT = r"(?!\.\.?/)[^/\x00-\x1f]+"
SOURCE = re.compile(r"[0-9a-f-]{36}-[0-9]{1,4}")  # an enrollment face from the library: its face id, <request_id>-<i>
RECORD_KEY = re.compile(rf"faces/(known/{_SEGMENT}|unknown)/{_SEGMENT}/\d{{4}}-\d\d-\d\d/{_SEGMENT}\.json")


class NotARecord(ValueError):
    """A key that is not a face record's (the page and the CLI take keys from their user)."""


def check_record_key(key: str) -> str:
    if not RECORD_KEY.fullmatch(key):
        raise NotARecord(f"{key[:200]!r} is not a face record key (faces/known|unknown/.../<day>/<face>.json)")
    return key


def check_source(source: str) -> str:
    if not SOURCE.fullmatch(source):
        raise ValueError(f"{source[:80]!r} is not a library enrollment face id (<request_id>-<i>, as `facepipe faces "
                         "people` prints them); photos enrolled with `facepipe enroll` go with `gallery remove`")
    return source


@dataclass(frozen=True)
class Stored:
    key: str
    record: FaceRecord


def keys_under(bucket: str, prefix: str) -> Iterator[str]:
    pages = aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for item in page.get("Contents", []):
            yield str(item["Key"])


def record_prefixes(name: str | None = None, unknown_only: bool = False) -> list[str]:
    if unknown_only:
        return [UNKNOWN_PREFIX]
    if name is not None:
        if name_refusal(name):
            raise ValueError(f"invalid name: {name_refusal(name)}")
        return [f"{KNOWN_PREFIX}{name}/"]
    return [KNOWN_PREFIX, UNKNOWN_PREFIX]


def read_record(bucket: str, key: str) -> FaceRecord:
    body = aws.client("s3").get_object(Bucket=bucket, Key=check_record_key(key))["Body"].read()
    return FaceRecord.model_validate_json(body)


def _read_or_none(bucket: str, key: str) -> FaceRecord | None:
    """The record, or None (logged) when it cannot be read: one bad object must not hide the others."""
    try:
        return read_record(bucket, key)
    except (ValueError, ClientError) as exc:  # not a record (pydantic's ValidationError is a ValueError), or gone
        log.warning("skipped %s: %s", key, str(exc).splitlines()[0])
        return None


def list_records(bucket: str, *, since_day: str = "", device: str | None = None, name: str | None = None,
                 unknown_only: bool = False, cache: dict[str, FaceRecord] | None = None) -> list[Stored]:
    """The face records of `name` (every known one without it; unknown ones with `unknown_only`) from `since_day`
    (YYYY-MM-DD, the key's day) on, of `device` if given, newest first. The key says name, device and day, so
    only the records kept are read (GET_THREADS at once), and with a `cache` (key -> record) only those not read
    before: a record's content is fixed by its key, except for the library's own rewrites, which drop their key
    from the cache."""
    keys = [key for prefix in record_prefixes(name, unknown_only) for key in keys_under(bucket, prefix)
            if RECORD_KEY.fullmatch(key)]
    keys = [key for key in keys if parse_record_key(key).day >= since_day
            and (device is None or parse_record_key(key).device_id == device)]
    cache = {} if cache is None else cache
    missing = [key for key in keys if key not in cache]
    if missing:
        with ThreadPoolExecutor(max_workers=min(GET_THREADS, len(missing)), thread_name_prefix="face-get") as pool:
            read = zip(missing, pool.map(lambda key: _read_or_none(bucket, key), missing), strict=True)
            cache.update((key, record) for key, record in read if record is not None)
    for stale in [key for key in cache if parse_record_key(key).day < since_day]:
        del cache[stale]  # what the page no longer shows
    records = [Stored(key, cache[key]) for key in keys if key in cache]
    return sorted(records, key=lambda stored: (-stored.record.detected_at, stored.record.index))


def put_json(bucket: str, key: str, body: str) -> None:
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=body.encode(), ContentType="application/json")


def put_enrolled_crop(bucket: str, name: str, source: str, jpeg: bytes) -> str:
    key = enrolled_key(name, source)
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=jpeg, ContentType="image/jpeg")
    return key


def get_bytes(bucket: str, key: str) -> bytes:
    return bytes(aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


# --- results -----------------------------------------------------------------------------------------------------


def names_in(face: object) -> set[str]:
    """The names a stored answer's face holds: the one answered and, in an answer of schema 2, its candidates."""
    if not isinstance(face, dict):
        return set()
    candidates = face.get("candidates")
    named = {c.get("name") for c in candidates if isinstance(c, dict)} if isinstance(candidates, list) else set()
    return {n for n in {face.get("name"), *named} if isinstance(n, str)}


def results_naming(bucket: str, name: str) -> list[tuple[str, dict[str, Any]]]:
    """Every persisted result (results/<device>/<day>/<request_id>.json) with a face answered `name` or holding it
    as a candidate: each is read (GET_THREADS at once), since a result's key does not say who is in it."""
    keys = list(keys_under(bucket, RESULTS_PREFIX))
    if not keys:
        return []

    def read(key: str) -> tuple[str, dict[str, Any]]:
        try:
            return key, json.loads(get_bytes(bucket, key))
        except (ValueError, ClientError) as exc:  # not JSON, or deleted since the listing
            log.warning("skipped %s: %s", key, str(exc).splitlines()[0])
            return key, {}

    with ThreadPoolExecutor(max_workers=min(GET_THREADS, len(keys)), thread_name_prefix="result-get") as pool:
        results = list(pool.map(read, keys))
    return [(key, body) for key, body in results
            if any(name in names_in(face) for face in body.get("faces", []))]


# --- what the bucket keeps, for how long ------------------------------------------------------------------------


Retention = dict[str, int | None]  # prefix -> days before expiry (None: never expires)


def retention_days(bucket: str) -> Retention | None:
    """Days before expiry per prefix, as the bucket's lifecycle rules say; {} when it has none, None when they
    cannot be read (e.g. AccessDenied): unknown."""
    s3 = aws.client("s3")
    try:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
            return {}
        log.warning("cannot read the lifecycle rules of %s: %s", bucket, exc)
        return None
    found: Retention = {}
    for rule in rules:
        prefix = rule.get("Prefix", rule.get("Filter", {}).get("Prefix"))
        if prefix and rule.get("Status") == "Enabled":
            found[prefix] = rule.get("Expiration", {}).get("Days")
    return found


def outlived(key_day: str, prefix: str, retention: Retention | None) -> bool:
    """Whether an object detected on `key_day` is older than `prefix`'s expiry. S3 counts a rule's days from each
    write, so rewriting such an object would start its days again: the library deletes it instead."""
    days = (retention or {}).get(prefix)
    return days is not None and key_day < day_of(time.time() - days * 86400)
