"""Deleting every version of S3 objects. The bucket is versioned (every gallery save is a version), so deleting a key
only adds a delete marker: forgetting must delete each version (and marker) by its VersionId, or the old bytes stay
readable."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from cloud.functions import aws

DELETE_BATCH = 1000  # DeleteObjects' limit


def versions_under(bucket: str, prefix: str) -> Iterator[tuple[str, str]]:
    """(key, version id) of every version and delete marker under `prefix`."""
    pages = aws.client("s3").get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            yield str(item["Key"]), str(item["VersionId"])


def purge(bucket: str, prefixes: Iterable[str], exact: bool = False) -> int:
    """Delete every version of every key under `prefixes` (with `exact`, of those keys only); returns how many
    distinct keys had a version."""
    doomed = [(key, version) for prefix in prefixes for key, version in versions_under(bucket, prefix)
              if not exact or key == prefix]
    s3 = aws.client("s3")
    for start in range(0, len(doomed), DELETE_BATCH):
        chunk = doomed[start:start + DELETE_BATCH]
        reply = s3.delete_objects(Bucket=bucket, Delete={"Quiet": True, "Objects": [
            {"Key": key, "VersionId": version} for key, version in chunk]})
        if reply.get("Errors"):
            first = reply["Errors"][0]
            raise RuntimeError(f"S3 refused to delete {first.get('Key')}: {first.get('Code')} {first.get('Message')}")
    return len({key for key, _ in doomed})


def purge_keys(bucket: str, keys: Iterable[str]) -> int:
    return purge(bucket, sorted(set(keys)), exact=True)
