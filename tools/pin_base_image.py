"""Pin Dockerfile.lambda's base image by digest for `sam build`: sets BASE_IMAGE in both functions'
DockerBuildArgs in template.yaml (they stay identical, so the image is still built once).

    DIGEST=$(docker buildx imagetools inspect public.ecr.aws/lambda/python:3.12 --format '{{.Manifest.Digest}}')
    python3 tools/pin_base_image.py "public.ecr.aws/lambda/python:3.12@$DIGEST"

The digest of the tag's multi-platform index serves x86_64 and arm64 alike. Standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PINNED = re.compile(r"[a-z0-9.-]+(?::\d+)?(?:/[a-z0-9._-]+)+(?::[\w.-]+)?@sha256:[0-9a-f]{64}")
_LINE = re.compile(r"^(\s+BASE_IMAGE:).*$", re.MULTILINE)


def pin(template: Path, image: str) -> int:
    """Set every BASE_IMAGE build argument of `template` to `image`; returns how many were set."""
    if not PINNED.fullmatch(image):
        raise SystemExit(f"{image!r} is not an image reference pinned by digest (...@sha256:<64 hex digits>)")
    text, count = _LINE.subn(lambda match: f"{match.group(1)} {image}", template.read_text())
    if count != 2:
        raise SystemExit(f"{template}: expected BASE_IMAGE in both functions' DockerBuildArgs, found {count}")
    template.write_text(text)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", help="e.g. public.ecr.aws/lambda/python:3.12@sha256:...")
    parser.add_argument("--template", type=Path, default=Path("template.yaml"))
    args = parser.parse_args(argv)
    pin(args.template, args.image)
    print(f"BASE_IMAGE={args.image} in {args.template}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
