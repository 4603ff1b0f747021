"""`facepipe faces ...`: the faces library's verbs for scripts (actions.py does the work, as for the page).

    facepipe faces list [--days 7] [--camera CAM] [--name NAME | --unknown] [--groups]
    facepipe faces assign --name NAME KEY...       enroll faces (a group's keys) as NAME
    facepipe faces wrong KEY                       "this is not <its name>"
    facepipe faces delete KEY...                   delete face records
    facepipe faces people                          enrolled people, their enrollment faces, last seen
    facepipe faces rename OLD NEW
    facepipe faces unenroll NAME SOURCE            remove one enrollment face
    facepipe faces forget [--settle S] NAME        everything about NAME, with counts (again after S seconds)
    facepipe faces serve [--listen 127.0.0.1:8765] the page (page.py)

KEY is a face record's S3 key, as `list` prints it. Bucket and gallery default to the functions' settings
(FACEPIPE_BUCKET, FACEPIPE_GALLERY_URI: what `facepipe local up` exports).
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from collections.abc import Callable

from botocore.exceptions import ClientError

from cloud.functions.recognition.gallery import GalleryError
from cloud.operator.faces.actions import Library, LibraryError
from cloud.operator.faces.store import NotARecord
from cloud.operator.faces.view import when

SETTLE_BATCH_S = 10.0  # forget's second pass: after the gallery refresh, a batch that started before it


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bucket", help="the stack's bucket (default: $FACEPIPE_BUCKET)")
    parser.add_argument("--gallery", help="s3://bucket/key of the gallery (default: $FACEPIPE_GALLERY_URI)")
    parser.add_argument("--operator", default=getpass.getuser(),
                        help="who is acting, in the log of every action (default: your login, %(default)s)")


def add_settle_argument(parser: argparse.ArgumentParser) -> None:
    from cloud.functions.settings import get_settings

    default = get_settings().gallery_refresh_s + SETTLE_BATCH_S
    parser.add_argument("--settle", type=float, default=default, metavar="SECONDS",
                        help="forget deletes the person's new faces and results again after this long: warm "
                             "recognizers name them until they recheck the gallery (default: FACEPIPE_GALLERY_"
                             f"REFRESH_S + {SETTLE_BATCH_S:.0f} s for a batch in flight, %(default)s)")


def library(args: argparse.Namespace) -> Library:
    from cloud.functions.settings import get_settings

    settings = get_settings()
    bucket, gallery = args.bucket or settings.bucket, args.gallery or settings.gallery_uri
    if not bucket or not gallery:
        raise LibraryError("give --bucket and --gallery (or set FACEPIPE_BUCKET and FACEPIPE_GALLERY_URI)")
    return Library(bucket, gallery, settings.match_threshold, args.operator, getattr(args, "settle", 0.0))


def _guarded(verb: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        try:
            return verb(args)
        except (LibraryError, GalleryError, NotARecord, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except ClientError as exc:
            print(f"error: S3: {exc}", file=sys.stderr)
            return 2

    return run


# --- list -------------------------------------------------------------------------------------------------------


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--days", type=int, default=7, help="faces of the last DAYS days (default %(default)s)")
    parser.add_argument("--camera", help="one camera's (device id) faces only")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--name", help="one person's faces only")
    who.add_argument("--unknown", action="store_true", help="unknown faces only")
    parser.add_argument("--groups", action="store_true", help="unknown faces grouped by similarity")


@_guarded
def run_list(args: argparse.Namespace) -> int:
    lib = library(args)
    faces = lib.recent(args.days, device=args.camera, name=args.name, unknown_only=args.unknown)
    if args.groups:
        for group in lib.unknown_groups(faces):
            print(f"group {group.group_id}: {len(group.members)} face(s)")
            for stored in group.members:
                print(f"  {when(stored.record.detected_at)}  {stored.record.device_id}  {stored.key}")
        return 0
    for stored in faces:
        r = stored.record
        distance = "-" if r.distance is None else f"{r.distance:.3f}"
        print(f"{when(r.detected_at)}  {r.device_id}  {r.name}  {distance}  {stored.key}")
    print(f"{len(faces)} face(s)", file=sys.stderr)
    return 0


# --- the verbs --------------------------------------------------------------------------------------------------


def add_assign_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--name", required=True, help="the person (existing or new) these faces are")
    parser.add_argument("keys", nargs="+", metavar="KEY", help="face record keys (`facepipe faces list`)")


@_guarded
def run_assign(args: argparse.Namespace) -> int:
    moved = library(args).assign(args.keys, args.name)
    print(f"assigned {len(args.keys)} face(s) to {args.name}" + outlived_note(len(args.keys) - len(moved)))
    return 0


def add_wrong_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("key", metavar="KEY", help="a named face that is not that person")


@_guarded
def run_wrong(args: argparse.Namespace) -> int:
    new_key = library(args).wrong(args.key)
    print(f"kept as a negative example; the face is now {new_key}" if new_key else
          "kept as a negative example" + outlived_note(1))
    return 0


def outlived_note(deleted: int) -> str:
    return f" ({deleted} record(s) older than the retention deleted, not refiled)" if deleted else ""


def add_delete_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("keys", nargs="+", metavar="KEY")


@_guarded
def run_delete(args: argparse.Namespace) -> int:
    print(f"deleted {library(args).delete(args.keys)} face record(s)")
    return 0


def add_people_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--days", type=int, default=7, help="last seen within DAYS days (default %(default)s)")


@_guarded
def run_people(args: argparse.Namespace) -> int:
    lib = library(args)
    for person in lib.people(lib.recent(args.days)):
        seen = "not seen" if person.last_seen is None else \
            f"last seen {when(person.last_seen.detected_at)} on {person.last_seen.device_id}"
        print(f"{person.name}: {person.embeddings} enrollment face(s), {person.negatives} negative(s), {seen}")
        for source in person.sources:  # what `faces unenroll NAME SOURCE` takes
            print(f"  enrollment face {source}" if source else "  a photo enrolled with `facepipe enroll`")
    return 0


def add_rename_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("old")
    parser.add_argument("new")


@_guarded
def run_rename(args: argparse.Namespace) -> int:
    print(f"renamed {args.old} to {args.new}: {library(args).rename(args.old, args.new)} gallery row(s)")
    return 0


def add_unenroll_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("name")
    parser.add_argument("source", help="the enrollment face's id, as `facepipe faces people` prints it")


@_guarded
def run_unenroll(args: argparse.Namespace) -> int:
    print(f"removed {library(args).remove_enrollment(args.name, args.source)} embedding(s) of {args.name}")
    return 0


def add_forget_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    add_settle_argument(parser)
    parser.add_argument("name")


@_guarded
def run_forget(args: argparse.Namespace) -> int:
    for line in library(args).forget(args.name, progress=lambda line: print(line, file=sys.stderr, flush=True)).lines():
        print(line)
    return 0
