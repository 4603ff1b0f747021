"""Delete from site-packages what the Lambda handlers never load; run by Dockerfile.lambda's build stage.

In Python rather than `find`: the base image (public.ecr.aws/lambda/python:3.12, Amazon Linux 2023
minimal) has no findutils (aws/aws-lambda-base-images#196). What goes (12 MB of the 338 MB that
requirements/lambda.txt installs, before bytecode): ONNX Runtime's offline model tools (transformer optimiser,
quantiser, converters: `onnxruntime.transformers`, `.quantization`, `.tools`, 4 MB; a session never imports
them) and numpy's unit tests (8 MB). The build imports both handlers and onnxruntime right after, so a wrong
deletion fails the build.

    python trim_lambda_packages.py SITE_PACKAGES
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DIRS = ("onnxruntime/transformers", "onnxruntime/quantization", "onnxruntime/tools")
PACKAGES_WITHOUT_TESTS = ("numpy",)


def trim(site: Path) -> list[Path]:
    """Delete the listed files and folders under `site`; returns what was deleted (absent ones are skipped)."""
    deleted: list[Path] = []
    for relative in DIRS:
        deleted += _remove(site / relative)
    for package in PACKAGES_WITHOUT_TESTS:
        root = site / package
        # Outermost first (sorted paths), so a tests/ folder inside a deleted one is not visited again.
        for tests in sorted(root.rglob("tests")) if root.is_dir() else []:
            if tests.is_dir() and not tests.is_symlink() and tests.exists():
                deleted += _remove(tests)
    return deleted


def _remove(path: Path) -> list[Path]:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    else:
        return []
    return [path]


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: trim_lambda_packages.py SITE_PACKAGES", file=sys.stderr)
        return 2
    deleted = trim(Path(argv[0]))
    print(f"trim_lambda_packages: deleted {len(deleted)} file(s)/folder(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
