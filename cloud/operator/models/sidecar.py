"""A model file's sidecar (`<file>.json`: its sha256, source and checks) and whether the file is what it says.

Shared by every build-time writer of model files (`facepipe models prepare`, `fetch`, `export`), below them all.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def file_sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def sidecar_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def write_sidecar(out: Path, record: dict[str, object]) -> None:
    """`out`'s sidecar JSON, replaced atomically (written after `out`, so a crash leaves a mismatch)."""
    tmp = sidecar_path(out).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, sidecar_path(out))


def is_up_to_date(out: Path) -> bool:
    """True when `out` exists and is byte-for-byte the file its sidecar describes."""
    try:
        recorded = json.loads(sidecar_path(out).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return out.is_file() and recorded == file_sha256(out)
