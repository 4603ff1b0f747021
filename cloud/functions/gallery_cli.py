"""`facepipe gallery list` and `facepipe gallery remove NAME`: inspect and edit the enrolled gallery."""

from __future__ import annotations

import argparse
import sys

from cloud.functions.recognition.enrolled_crops import purge_person
from cloud.functions.recognition.gallery import GalleryError, load_gallery, update_gallery


def _add_gallery_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gallery", help="s3://bucket/key or a file path (default: $FACEPIPE_GALLERY_URI)")


def _gallery_uri(args: argparse.Namespace) -> str:
    from cloud.functions.settings import get_settings

    uri = args.gallery or get_settings().gallery_uri
    if not uri:
        raise GalleryError("give --gallery or set FACEPIPE_GALLERY_URI")
    return str(uri)


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    _add_gallery_argument(parser)


def run_list(args: argparse.Namespace) -> int:
    try:
        uri = _gallery_uri(args)
        gallery = load_gallery(uri)
    except GalleryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = gallery.counts()
    print(f"gallery {uri} (version {gallery.version})")
    print(f"model {gallery.model_tag}: {len(gallery)} embedding(s) of {len(counts)} name(s)")
    for name, count in counts.items():
        print(f"{count:5d}  {name}")
    return 0


def add_remove_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the enrolled name to remove (every embedding of it)")
    _add_gallery_argument(parser)


def run_remove(args: argparse.Namespace) -> int:
    try:
        uri = _gallery_uri(args)
        # Conditional save, re-applied on a conflict: an enrollment finishing meanwhile cannot undo it.
        update = update_gallery(uri, lambda gallery: gallery.remove(args.name))
    except GalleryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    crops = purge_person(uri, args.name)  # the faces library's crops of those embeddings (even if none are left)
    if not update.changed:
        print(f"error: {args.name!r} is not in {uri}" + (f" ({crops} leftover enrollment crop(s) deleted)"
                                                         if crops else ""), file=sys.stderr)
        return 1
    print(f"removed {args.name}: {update.changed} embedding(s), {crops} enrollment crop(s); {uri} is now version "
          f"{update.gallery.version}")
    return 0
