"""The faces library on the real local stack: the recognizer keeps every answered face under faces/ with the
template's retention rules; an operator names an unknown group (CLI, then the page in headless chromium) and the
next frame of that person is answered with the name; forgetting them leaves nothing of them in S3 or the gallery,
listed from S3 (every version)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.functions.contracts import HEADER_REPLY_TO, UNKNOWN_NAME
from cloud.functions.recognition.face_records import FaceRecord
from cloud.functions.recognition.gallery import from_bytes, load_gallery
from cloud.operator.faces.actions import Library
from cloud.operator.faces.page import FacesServer
from tests.browser import needs_chromium
from tests.conftest import Mailbox, post_frame
from tests.photos import REPO, SHARED, packaged, requires_shared

SCREENSHOT = REPO / "docs" / "faces.png"


def answer(stack: Any, photo: Path, reply_queue: str, device: str) -> dict[str, Any]:
    request_id = str(uuid.uuid4())
    reply = post_frame(stack, photo.read_bytes(), request_id=request_id, device_id=device,
                       headers={HEADER_REPLY_TO: reply_queue.rsplit("/", 1)[1]})
    assert reply.status_code == 202, reply.text
    return Mailbox(stack.client("sqs"), reply_queue).wait_for(request_id, timeout=90)


def facepipe(stack: Any, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "cloud.operator.cli", "faces", *args, "--operator", "test-operator"],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, **stack.client_env()},
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def library(stack: Any) -> Library:
    return Library(stack.bucket, stack.gallery_uri, 1.02, "test-operator")


def everything_about(stack: Any, name: str, request_ids: set[str]) -> list[str]:
    """Every object version in the bucket that names `name` or belongs to one of its frames, and every gallery
    version holding it: what forgetting must leave empty."""
    s3 = stack.client("s3")
    found = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=stack.bucket):
        for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            key = item["Key"]
            if name in key or any(request in key for request in request_ids):
                found.append(f"{key} {item['VersionId']}")
            elif key.startswith("results/") and "Size" in item:
                body = s3.get_object(Bucket=stack.bucket, Key=key, VersionId=item["VersionId"])["Body"].read()
                if f'"name":"{name}"' in body.decode():
                    found.append(f"{key} {item['VersionId']}")
            elif key == stack.gallery_uri.split("/", 3)[3] and "Size" in item:
                body = s3.get_object(Bucket=stack.bucket, Key=key, VersionId=item["VersionId"])["Body"].read()
                gallery = from_bytes(body)
                if name in gallery.names or name in gallery.negative_names:
                    found.append(f"{key} {item['VersionId']}")
    return found


def test_answered_faces_are_kept_with_the_templates_retention(local_stack: Any, reply_queue: str) -> None:
    # GIVEN a frame of Obama (enrolled) and one of Grace Hopper (not)
    obama = answer(local_stack, packaged("face_recognition/obama2.jpg"), reply_queue, "faces-kept")
    hopper = answer(local_stack, packaged("matplotlib/grace_hopper.jpg"), reply_queue, "faces-kept")
    assert [f["name"] for f in obama["faces"] + hopper["faces"]] == ["barack_obama", UNKNOWN_NAME]
    # THEN the library lists both, newest first, with what was answered
    faces = library(local_stack).recent(1, device="faces-kept")
    assert [(s.record.request_id, s.record.name) for s in faces] == [
        (hopper["request_id"], UNKNOWN_NAME), (obama["request_id"], "barack_obama")]
    assert faces[1].record.distance == obama["faces"][0]["distance"]
    assert faces[1].key.startswith("faces/known/barack_obama/faces-kept/")
    assert faces[0].key.startswith("faces/unknown/faces-kept/")
    # AND the bucket's lifecycle rules expire them as the template's parameters say (known 30, unknown 7 days)
    retention = library(local_stack).retention()
    assert retention["faces/known/"] == int(local_stack.parameters["KnownFacesRetentionDays"]) == 30
    assert retention["faces/unknown/"] == int(local_stack.parameters["UnknownFacesRetentionDays"]) == 7


@requires_shared
def test_cli_names_an_unknown_group_then_forgets_the_person(local_stack: Any, reply_queue: str) -> None:
    person, device = "kit_harington", "faces-cli"
    photos = SHARED / "identities" / person
    # GIVEN two sightings of a stranger
    seen = [answer(local_stack, photos / "1.jpg", reply_queue, device) for _ in range(2)]
    assert [f["name"] for a in seen for f in a["faces"]] == [UNKNOWN_NAME] * 2
    # WHEN the operator lists the unknown groups and assigns the group to a new person
    listed = facepipe(local_stack, "list", "--unknown", "--groups", "--camera", device, "--days", "1").stdout
    [header, *members] = listed.splitlines()
    assert header.endswith(": 2 face(s)") and len(members) == 2, listed
    keys = [line.split()[-1] for line in members]
    assigned = facepipe(local_stack, "assign", "--name", person, *keys)
    assert f"assigned 2 face(s) to {person}" in assigned.stdout
    assert "test-operator assigned 2 face(s)" in assigned.stderr  # the action log says who
    # THEN the next frame of that person (another photo) is answered with the name
    named = answer(local_stack, photos / "2.jpg", reply_queue, device)
    assert [f["name"] for f in named["faces"]] == [person]
    people = facepipe(local_stack, "people", "--days", "1").stdout
    assert f"{person}: 2 enrollment face(s), 0 negative(s), last seen" in people
    sources = {f"  enrollment face {key.rsplit('/', 1)[1].removesuffix('.json')}" for key in keys}
    assert sources <= set(people.splitlines()), people  # what `faces unenroll` takes
    # WHEN they are forgotten
    frames = {a["request_id"] for a in [*seen, named]}
    assert everything_about(local_stack, person, frames)  # there was something to forget
    done = facepipe(local_stack, "forget", person, "--settle", "1")  # the local stack's workers recheck every batch
    forgot = done.stdout
    assert "waiting 1 s for warm recognizers" in done.stderr
    assert f"forgot {person}: 2 gallery embedding(s)," in forgot and "3 face record(s)" in forgot, forgot
    # the results of the three frames they were in: two answered unknown, then one named
    assert "2 enrollment crop(s)" in forgot and "3 result(s)" in forgot, forgot
    # THEN nothing of them is left in S3 (every version listed) nor in the gallery
    assert everything_about(local_stack, person, frames) == []
    assert person not in load_gallery(local_stack.gallery_uri).names


@requires_shared
def test_this_is_not_x_from_the_cli_keeps_a_negative(local_stack: Any, reply_queue: str) -> None:
    device = "faces-wrong"
    # GIVEN Obama's second photo answered as Obama
    first = answer(local_stack, packaged("face_recognition/obama2.jpg"), reply_queue, device)
    assert [f["name"] for f in first["faces"]] == ["barack_obama"]
    [stored] = [s for s in library(local_stack).recent(1, device=device) if s.record.request_id == first["request_id"]]
    before = load_gallery(local_stack.gallery_uri).negative_names.count("barack_obama")
    try:
        # WHEN the operator says it is not him
        facepipe(local_stack, "wrong", stored.key)
        # THEN the same face is no longer answered as Obama, and its record is filed as unknown
        again = answer(local_stack, packaged("face_recognition/obama2.jpg"), reply_queue, device)
        assert [f["name"] for f in again["faces"]] == [UNKNOWN_NAME]
        assert load_gallery(local_stack.gallery_uri).negative_names.count("barack_obama") == before + 1
        moved = FaceRecord.model_validate_json(local_stack.client("s3").get_object(
            Bucket=local_stack.bucket, Key=stored.key.replace("known/barack_obama/", "unknown/"))["Body"].read())
        assert (moved.name, moved.assigned_by) == (UNKNOWN_NAME, "test-operator")
    finally:  # the session's other tests expect Obama recognised: drop the negative again
        from cloud.functions.recognition.gallery import update_gallery

        update_gallery(local_stack.gallery_uri, lambda gallery: gallery.remove_negatives("barack_obama"))


# --- the page in a real browser ------------------------------------------------------------------------------


@pytest.fixture
def page_url(local_stack: Any) -> Iterator[str]:
    server = FacesServer(library(local_stack), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()


@needs_chromium
@requires_shared
def test_the_page_names_an_unknown_group_and_forgets_the_person(
    local_stack: Any, reply_queue: str, page_url: str, tmp_path: Path
) -> None:
    from tests.cdp import Browser

    person, device = "rose_leslie", "faces-page"
    photos = SHARED / "identities" / person
    # GIVEN three sightings of a stranger beside a known face
    seen = [answer(local_stack, photos / "1.jpg", reply_queue, device) for _ in range(3)]
    seen.append(answer(local_stack, packaged("face_recognition/obama2.jpg"), reply_queue, device))
    with Browser(tmp_path / "profile") as browser:
        browser.open(f"{page_url}?camera={device}&days=1")
        # THEN the page shows them as one group of three, and the retention in force
        groups = browser.evaluate("[...document.querySelectorAll('#groups .group')].map(g => g.innerText)")
        assert len(groups) == 1 and "3 sighting(s)" in groups[0], groups
        retention = browser.evaluate("document.getElementById('retention').innerText")
        assert "unknown faces\tfaces/unknown/\t7 day(s)" in retention, retention
        browser.screenshot(SCREENSHOT)
        # WHEN the operator types the name into the group's card and clicks "assign group"
        browser.evaluate(f"document.querySelector('#groups .group input[name=name]').value = {person!r}")
        started = time.perf_counter()
        browser.click_and_wait("document.querySelector('#groups .group button[data-verb=assign]')")
        assert browser.evaluate("document.getElementById('message').innerText") == f"assigned 3 face(s) to {person}"
        # THEN the next frame of that person is answered with the name
        named = answer(local_stack, photos / "2.jpg", reply_queue, device)
        print(f"assign -> first frame named: {time.perf_counter() - started:.2f} s")
        assert [f["name"] for f in named["faces"]] == [person]
        # WHEN they are forgotten from their card on the page
        card = f"document.querySelector('#people .person[data-name=\"{person}\"]')"
        browser.open(f"{page_url}?days=1")
        browser.evaluate(f"{card}.querySelector('input[name=confirm]').checked = true")
        browser.click_and_wait(f"{card}.querySelector('button[data-verb=forget]')")
        message = browser.evaluate("document.getElementById('message').innerText")
        assert message.startswith(f"forgot {person}: 3 gallery embedding(s)"), message
        assert "4 face record(s)" in message and "4 result(s)" in message, message
        # THEN nothing of them is left in S3 nor in the gallery, and the page has no card of them
        frames = {a["request_id"] for a in [*seen[:3], named]}
        assert everything_about(local_stack, person, frames) == []
        assert browser.evaluate(f"{card} === null")
