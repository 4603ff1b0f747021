"""`facepipe models fetch`: download a published InceptionResnetV1 state_dict, pinned by its sha256.

The alternative to `facepipe models prepare` for weights we do not convert ourselves, e.g. facenet-pytorch's
VGGFace2 release file. The download goes to a temporary file beside `--out` with a size cap; only when its
sha256 is the pinned one and it loads as the embedder loads it (strictly, into InceptionResnetV1(classify=False);
a `logits.*` classifier head is ignored) does it replace `--out`, followed by a sidecar JSON like prepare's.
The file is kept byte for byte, so `sha256sum` of the baked file equals the pin.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from cloud.functions.settings import Settings
from cloud.operator.models.sidecar import is_up_to_date, sidecar_path, write_sidecar

DEFAULT_MAX_BYTES = 512 * 1024 * 1024  # InceptionResnetV1 with a VGGFace2 head is ~107 MB
SCHEMES = ("https", "http", "file")  # the sha256 pin, not the transport, vouches for the bytes
TIMEOUT_S = 60.0
_CHUNK = 1 << 20


class FetchError(Exception):
    """A one-line, user-facing reason why the weights were not fetched."""


def parse_sha256(value: str) -> str:
    digest = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise FetchError(f"--sha256 must be 64 hex digits, got {value[:80]!r}")
    return digest


def public_url(url: str) -> str:
    """The URL without credentials, query or fragment: safe to print and to bake into the sidecar."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def download(url: str, sink: IO[bytes], max_bytes: int) -> tuple[str, int]:
    """Stream `url` into `sink`; returns (sha256 hex, size). Stops past `max_bytes`."""
    shown = public_url(url)
    if urllib.parse.urlsplit(url).scheme not in SCHEMES:
        raise FetchError(f"{shown}: only {', '.join(SCHEMES)} URLs are fetched")
    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(f"{shown} is {int(declared)} bytes, over the {max_bytes}-byte limit (--max-bytes)")
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"{shown} is over the {max_bytes}-byte limit (--max-bytes)")
                digest.update(chunk)
                sink.write(chunk)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"cannot download {shown}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:  # DNS, refused, timeout, malformed URL
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"cannot download {shown}: {reason}") from exc
    return digest.hexdigest(), size


def check_weights(path: Path) -> dict[str, object]:
    """Load `path` as the recognition handler will and embed one synthetic crop; what the sidecar records."""
    import numpy as np
    import torch

    from cloud.functions.contracts import CROP_SIZE
    from cloud.functions.recognition.embedder import Embedder
    from cloud.functions.recognition.network import WeightsInvalid

    try:
        embedder = Embedder(path)
    except WeightsInvalid as exc:  # torch's reasons run over several lines: keep the start of the first
        reason = str(exc).replace(str(path), "the download").splitlines()[0]
        raise FetchError(reason if len(reason) <= 200 else reason[:200] + "...") from exc
    # A gradient, not zeros: NaN or garbage weights show up as a non-finite or non-unit embedding.
    ramp = np.linspace(0, 255, CROP_SIZE * CROP_SIZE * 3).reshape(CROP_SIZE, CROP_SIZE, 3).astype(np.uint8)
    norm = float(np.linalg.norm(embedder.embed([ramp])[0]))
    if not np.isfinite(norm) or abs(norm - 1.0) > 1e-3:
        raise FetchError(f"the download loads but gives a broken embedding (norm {norm})")
    # The embedder loaded it strictly, so the only extra tensors are the classifier head it drops.
    keys = list(torch.load(path, map_location="cpu", weights_only=True))
    ignored = sorted(key for key in keys if key.startswith("logits."))
    return {"keys": len(keys) - len(ignored), "ignored_keys": ignored, "model_tag": embedder.model_tag,
            "verification": {"loads": "strict, InceptionResnetV1(classify=False)", "embedding_norm": norm}}


def fetch(url: str, sha256: str, out: Path, max_bytes: int = DEFAULT_MAX_BYTES, name: str = "") -> dict[str, object]:
    """Download, check, then atomically write `out` and its sidecar; returns the sidecar's content."""
    expected = parse_sha256(sha256)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as sink:
            digest, size = download(url, sink, max_bytes)
        if digest != expected:
            raise FetchError(f"{public_url(url)} has sha256 {digest}, not the pinned {expected}; nothing written")
        checked = check_weights(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; Lambda reads it as another user
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    record: dict[str, object] = {
        "model": "facenet_pytorch.InceptionResnetV1(classify=False)",
        "weights": name or Path(urllib.parse.urlsplit(url).path).name,
        "source": {"url": public_url(url), "sha256": expected},
        "sha256": digest,
        "size_bytes": size,
        **checked,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_sidecar(out, record)
    print(f"wrote {out} ({size} bytes, sha256 {digest[:16]}, model {checked['model_tag']})")
    threshold = Settings.model_fields["match_threshold"].default
    print(f"note: FACEPIPE_MATCH_THRESHOLD's default ({threshold}) was calibrated for the CASIA-WebFace "
          "weights; calibrate these with cloud/bench/calibrate_threshold.py and set it")
    return record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help=f"where the state_dict is ({', '.join(SCHEMES)})")
    parser.add_argument("--sha256", required=True, help="the file's sha256 (64 hex digits); checked before writing")
    parser.add_argument("--out", type=Path, required=True, help="weights file to write")
    parser.add_argument("--name", default="", help="what the weights are, for the sidecar (default: the file name)")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                        help=f"refuse larger downloads (default {DEFAULT_MAX_BYTES})")
    parser.add_argument("--force", action="store_true", help="download even when --out already has these bytes")


def run(args: argparse.Namespace) -> int:
    try:
        expected = parse_sha256(args.sha256)
        if not args.force and is_up_to_date(args.out) and _recorded_sha256(args.out) == expected:
            print(f"{args.out} is up to date")
            return 0
        fetch(args.url, expected, args.out, args.max_bytes, args.name)
    except (FetchError, OSError) as exc:  # one line, not a traceback
        print(f"facepipe models fetch: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _recorded_sha256(out: Path) -> str | None:
    try:
        return str(json.loads(sidecar_path(out).read_text())["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
