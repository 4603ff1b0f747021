"""The faces library over a real S3 (moto's server over HTTP), without the functions: the page's guards (loopback
only, Host, CSRF, Origin, escaping) and the verbs' bookkeeping (assign, "this is not X", unenroll, rename, forget
with every version gone). Embeddings here are random unit vectors: what is tested is where things are stored."""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests

from cloud.functions import aws, gallery_cli
from cloud.functions.contracts import UNKNOWN_NAME
from cloud.functions.images import encode_jpeg
from cloud.functions.object_versions import versions_under
from cloud.functions.recognition.enrolled_crops import enrolled_key
from cloud.functions.recognition.face_records import FaceRecord, parse_record_key, put_record, record_key
from cloud.functions.recognition.gallery import Gallery, from_bytes, load_gallery, save_gallery, update_gallery
from cloud.functions.recognition.respond import parse_result_key, result_key_of
from cloud.operator.faces import store
from cloud.operator.faces.actions import Library
from cloud.operator.faces.page import FacesServer, page_url
from cloud.operator.faces.view import Filters
from cloud.operator.faces.view import page as page_html
from tests.moto_env import moto_server, point_boto3_at
from tests.photos import REPO, packaged, weights_path

BUCKET, TAG = "faces-unit", "inception_resnet_v1:test"
GALLERY = f"s3://{BUCKET}/gallery/gallery.npz"
RETENTION = {"faces/known/": 30, "faces/unknown/": 7, "results/": 30}


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    with moto_server() as endpoint, pytest.MonkeyPatch.context() as mp:
        point_boto3_at(endpoint, mp.setenv)
        aws.client.cache_clear()
        client = aws.client("s3")
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        client.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [
            {"ID": prefix, "Filter": {"Prefix": prefix}, "Status": "Enabled", "Expiration": {"Days": days}}
            for prefix, days in RETENTION.items()]})
        yield client
    aws.client.cache_clear()


@pytest.fixture
def lib(s3: Any) -> Library:
    for key, version in list(versions_under(BUCKET, "")):
        s3.delete_object(Bucket=BUCKET, Key=key, VersionId=version)
    save_gallery(Gallery(TAG), GALLERY)
    return Library(BUCKET, GALLERY, 1.02, "unit-operator")


def unit(seed: int) -> np.ndarray:
    row = np.random.default_rng(seed).standard_normal(512).astype(np.float32)
    return row / np.linalg.norm(row)


def kept(name: str, seed: int, device: str = "cam1", age_days: float = 0, **fields: Any) -> str:
    crop = np.full((160, 160, 3), seed * 10 % 255, np.uint8)
    record = FaceRecord(request_id=str(uuid.uuid4()), device_id=device, index=0,
                        detected_at=time.time() - age_days * 86400, name=name,
                        distance=0.5, box=[1, 2, 3, 4], probability=0.99, model=TAG,
                        embedding_b64=base64.b64encode(unit(seed).tobytes()).decode(),
                        crop_jpeg_b64=base64.b64encode(encode_jpeg(crop)).decode(), **fields)
    return put_record(BUCKET, record)


def all_keys(s3: Any) -> set[str]:
    return {key for key, _ in versions_under(BUCKET, "")}


def test_each_key_parser_inverts_its_builder() -> None:
    face_id = f"{uuid.uuid4()}-12"
    for name in ("Anne-Marie", UNKNOWN_NAME):
        parsed = parse_record_key(record_key(name, "cam..1", "2026-01-02", face_id))
        assert (parsed.name, parsed.device_id, parsed.day, parsed.face_id) == (name, "cam..1", "2026-01-02", face_id)
        assert parsed.request_id == face_id.rsplit("-", 1)[0]
    assert parse_result_key(result_key_of("cam-2", "2026-01-02", "r-1")) == ("cam-2", "2026-01-02", "r-1")


# --- the verbs ------------------------------------------------------------------------------------------------


def test_assign_then_this_is_not_x_moves_the_face_out_of_x_and_keeps_a_negative(lib: Library, s3: Any) -> None:
    key = kept(UNKNOWN_NAME, 1)
    [named] = lib.assign([key], "ann")
    gallery = load_gallery(GALLERY)
    face_id = named.rsplit("/", 1)[1].removesuffix(".json")
    assert (gallery.names, gallery.sources) == (["ann"], [face_id])
    assert named.startswith("faces/known/ann/cam1/") and key not in all_keys(s3)  # every version of the old key went
    assert enrolled_key("ann", face_id) in all_keys(s3)
    # "this is not ann": out of her enrollment, kept as her negative, filed as unknown again
    back = lib.wrong(named)
    gallery = load_gallery(GALLERY)
    assert (gallery.names, gallery.negative_names) == ([], ["ann"])
    np.testing.assert_allclose(gallery.negative_embeddings[0], unit(1))
    assert back.startswith("faces/unknown/cam1/") and store.read_record(BUCKET, back).assigned_by == "unit-operator"
    assert enrolled_key("ann", face_id) not in all_keys(s3)


def test_reassigning_a_face_moves_it_out_of_the_first_persons_enrollment(lib: Library, s3: Any) -> None:
    [as_dan] = lib.assign([kept(UNKNOWN_NAME, 9)], "dan")
    [as_eve] = lib.assign([as_dan], "eve")
    face_id = as_eve.rsplit("/", 1)[1].removesuffix(".json")
    assert load_gallery(GALLERY).names == ["eve"]
    assert enrolled_key("dan", face_id) not in all_keys(s3) and as_dan not in all_keys(s3)
    assert enrolled_key("eve", face_id) in all_keys(s3)


def test_rename_and_unenroll(lib: Library, s3: Any) -> None:
    [first, second] = [lib.assign([kept(UNKNOWN_NAME, seed)], "bob")[0] for seed in (2, 3)]
    assert lib.rename("bob", "robert") == 2
    assert {s.key.split("/")[2] for s in lib.recent(1)} == {"robert"}
    source = first.rsplit("/", 1)[1].removesuffix(".json")
    assert lib.remove_enrollment("robert", source) == 1
    [person] = lib.people()
    assert (person.name, person.embeddings) == ("robert", 1)
    assert not [k for k in all_keys(s3) if "/bob/" in k]


def test_unenroll_refuses_an_empty_or_malformed_source(lib: Library) -> None:
    update_gallery(GALLERY, lambda gallery: gallery.add("hal", unit(14)) + gallery.add("hal", unit(15)))  # enroll
    for source in ("", "../x", "not-a-face-id"):
        with pytest.raises(ValueError, match="enrollment face"):
            lib.remove_enrollment("hal", source)
    with pytest.raises(ValueError, match="invalid name"):
        lib.remove_enrollment("hal/x", f"{uuid.uuid4()}-0")
    assert load_gallery(GALLERY).names == ["hal", "hal"]  # both photo embeddings kept


def test_refiling_never_restarts_a_faces_retention(lib: Library, s3: Any) -> None:
    assert lib.retention() == RETENTION  # read from the bucket's lifecycle rules
    # GIVEN a face of jo's seen today, one 31 days ago (kept past 30 days only because earlier renames rewrote it)
    fresh, old = kept("jo", 18), kept("jo", 19, age_days=31)
    named = kept("jo", 20, age_days=8)
    update_gallery(GALLERY, lambda gallery: gallery.add("jo", unit(18)))
    # WHEN jo is renamed, THEN today's face is refiled, the one past the retention is deleted rather than rewritten
    lib.rename("jo", "joanna")
    left = all_keys(s3)
    assert fresh.replace("/jo/", "/joanna/") in left and named.replace("/jo/", "/joanna/") in left
    assert not [key for key in left if parse_record_key(old).face_id in key]
    # AND "not joanna" on an 8-day-old face: past the unknown faces' 7 days, so deleted rather than filed unknown
    assert lib.wrong(named.replace("/jo/", "/joanna/")) is None
    assert not [key for key in all_keys(s3) if parse_record_key(named).face_id in key]
    assert load_gallery(GALLERY).negative_names == ["joanna"]  # the negative is kept all the same


def test_the_page_says_unknown_when_the_lifecycle_rules_cannot_be_read() -> None:
    html = page_html(faces=[], groups=[], people=[], retention=None, filters=Filters(), csrf="t", message="",
                     bucket="b")
    assert "unknown (the bucket&#x27;s lifecycle rules could not be read)" in html and "no expiry rule" not in html


def test_rename_renames_the_results_too_so_forget_finds_them(lib: Library, s3: Any) -> None:
    update_gallery(GALLERY, lambda gallery: gallery.add("kay", unit(21)))
    day = time.strftime("%Y-%m-%d", time.gmtime())
    result = result_key_of("cam3", day, str(uuid.uuid4()))
    store.put_json(BUCKET, result, '{"faces": [{"name": "kay", "distance": 0.5}, {"name": "unknown"}]}')
    # a schema 2 answer where kay is only a stranger's nearest candidate
    candidate = result_key_of("cam3", day, str(uuid.uuid4()))
    store.put_json(BUCKET, candidate, '{"faces": [{"name": "unknown", "candidates": [{"name": "ian", "distance": 1.1},'
                                      ' {"name": "kay", "distance": 1.2}]}]}')
    lib.rename("kay", "kaye")
    assert [face["name"] for face in json.loads(store.get_bytes(BUCKET, result))["faces"]] == ["kaye", UNKNOWN_NAME]
    [stranger] = json.loads(store.get_bytes(BUCKET, candidate))["faces"]
    assert [c["name"] for c in stranger["candidates"]] == ["ian", "kaye"]
    # WHEN the renamed person is forgotten (no face record of that frame left), THEN both results go too
    assert lib.forget("kaye").results == 2 and not {result, candidate} & set(all_keys(s3))


def test_forget_deletes_every_version_and_counts_it(lib: Library, s3: Any) -> None:
    [named] = lib.assign([kept(UNKNOWN_NAME, 4)], "cleo")
    kept("cleo", 5)  # recognised as her later
    request = named.rsplit("/", 1)[1].removesuffix(".json").rsplit("-", 1)[0]
    day = named.split("/")[4]
    store.put_json(BUCKET, f"results/cam1/{day}/{request}.json", '{"faces": [{"name": "unknown"}]}')
    other = str(uuid.uuid4())
    store.put_json(BUCKET, f"results/cam2/{day}/{other}.json", '{"faces": [{"name": "cleo"}]}')
    s3.put_object(Bucket=BUCKET, Key=f"crops/cam1/{request}/0.jpg", Body=b"x")
    kept(UNKNOWN_NAME, 6)  # someone else
    report = lib.forget("cleo")
    assert (report.embeddings, report.face_records, report.enrollment_crops, report.results,
            report.overflow_crops, report.gallery_versions) == (1, 2, 1, 2, 1, 1)
    left = all_keys(s3)
    assert not [k for k in left if "cleo" in k or request in k or other in k], left
    assert len([k for k in left if k.startswith("faces/unknown/")]) == 1


def test_forget_deletes_again_what_warm_recognizers_kept_meanwhile(lib: Library, s3: Any) -> None:
    lib.assign([kept(UNKNOWN_NAME, 22)], "lea")
    lib.settle_s = 0.3
    late: list[str] = []

    def a_warm_recognizer_still_names_her(line: str) -> None:
        # a recognizer that loaded the gallery before the forget: it names her and keeps the face and the answer
        late.append(kept("lea", 23))
        request = parse_record_key(late[0]).request_id
        late.append(result_key_of("cam1", parse_record_key(late[0]).day, request))
        store.put_json(BUCKET, late[1], '{"faces": [{"name": "lea"}]}')
        assert "waiting" in line

    report = lib.forget("lea", progress=a_warm_recognizer_still_names_her)
    assert late and not [key for key in all_keys(s3) if key in late]
    assert (report.face_records, report.results) == (2, 1)


def test_forget_after_gallery_remove_still_deletes_the_earlier_versions(lib: Library, s3: Any) -> None:
    lib.assign([kept(UNKNOWN_NAME, 10)], "gus")
    # GIVEN the person already removed from the current gallery (`facepipe gallery remove`, as operations.md says)
    assert update_gallery(GALLERY, lambda gallery: gallery.remove("gus")).changed == 1
    # WHEN they are forgotten
    report = lib.forget("gus")
    # THEN the earlier version that still held their embedding is gone too
    assert (report.embeddings, report.gallery_versions) == (0, 1)
    held = [version for key, version in versions_under(BUCKET, "gallery/gallery.npz")
            if "gus" in _version_names(s3, key, version)]
    assert held == []


def _version_names(s3: Any, key: str, version: str) -> list[str]:
    try:
        body = s3.get_object(Bucket=BUCKET, Key=key, VersionId=version)["Body"].read()
    except s3.exceptions.ClientError:  # a delete marker
        return []
    return from_bytes(body).names


def test_a_key_with_dots_or_an_unreadable_record_does_not_break_the_library(
        lib: Library, s3: Any, caplog: pytest.LogCaptureFixture) -> None:
    dotted = [kept("A..B", 11), kept(UNKNOWN_NAME, 12, device="cam..1")]  # names and device ids both admit '..'
    day = dotted[0].split("/")[4]
    junk = [f"faces/unknown/cam1/{day}/{uuid.uuid4()}-0.json", f"faces/known/ann/cam1/{day}/{uuid.uuid4()}-0.json"]
    store.put_json(BUCKET, junk[0], "not json")
    store.put_json(BUCKET, junk[1], '{"schema_version": 1}')  # JSON, but not a face record
    # THEN the readable records are listed, the others skipped with a log line naming them
    assert sorted(s.key for s in lib.recent(1)) == sorted(dotted)
    assert all(key in caplog.text for key in junk)
    # AND a dotted key is a key like any other for the verbs
    [moved] = lib.assign([dotted[1]], "A..B")
    assert moved.startswith("faces/known/A..B/cam..1/")


def test_gallery_remove_and_enroll_replace_delete_the_persons_enrollment_crops(lib: Library, s3: Any) -> None:
    from cloud.functions.detection.detector import Detector
    from cloud.functions.enrollment import enroll_photos
    from cloud.functions.recognition.embedder import Embedder

    [named] = lib.assign([kept(UNKNOWN_NAME, 16)], "ivy")
    crop = enrolled_key("ivy", named.rsplit("/", 1)[1].removesuffix(".json"))
    assert crop in all_keys(s3)
    # WHEN the person is removed outside the library, THEN their crops go with their embeddings
    assert gallery_cli.run_remove(argparse.Namespace(name="ivy", gallery=GALLERY)) == 0
    assert crop not in all_keys(s3)
    # AND the same with `facepipe enroll --replace` (a gallery of the real model, a crop the library kept)
    embedder = Embedder(weights_path())
    save_gallery(Gallery(embedder.model_tag), GALLERY)
    update_gallery(GALLERY, lambda gallery: gallery.add("ivy", unit(17), source=f"{uuid.uuid4()}-0"))
    [source] = load_gallery(GALLERY).sources
    store.put_enrolled_crop(BUCKET, "ivy", source, b"jpeg")
    report = enroll_photos(GALLERY, weights_path(), {"ivy": [packaged("face_recognition/obama.jpg")]}, replace=True,
                           detector=Detector(), embedder=embedder)
    assert (report.photos, report.crops_deleted, load_gallery(GALLERY).sources) == (1, 1, [""])
    assert not [key for key in all_keys(s3) if key.startswith("gallery/enrolled/")]


# --- the page's guards ----------------------------------------------------------------------------------------


@pytest.fixture
def page(lib: Library) -> Iterator[FacesServer]:
    server = FacesServer(lib)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_page_binds_loopback_only(lib: Library) -> None:
    with pytest.raises(ValueError, match="loopback"):
        FacesServer(lib, "0.0.0.0")


def test_the_page_answers_its_own_host_only(page: FacesServer) -> None:
    assert requests.get(page.url, timeout=10).status_code == 200
    assert requests.get(page.url, headers={"Host": "evil.example"}, timeout=10).status_code == 421


def test_every_post_needs_the_csrf_token_and_this_origin(page: FacesServer, lib: Library) -> None:
    key = kept(UNKNOWN_NAME, 7)
    form = {"verb": "delete", "key": key, "back": "/?"}
    assert requests.post(page.url + "action", data=form, timeout=10).status_code == 403
    assert requests.post(page.url + "action", data={**form, "csrf": "guess"}, timeout=10).status_code == 403
    token = re.search(r'name="csrf" value="([^"]+)"', requests.get(page.url, timeout=10).text)
    assert token is not None
    foreign = requests.post(page.url + "action", data={**form, "csrf": token.group(1)},
                            headers={"Origin": "http://evil.example"}, timeout=10, allow_redirects=False)
    assert foreign.status_code == 403
    assert [s.key for s in lib.recent(1)] == [key]  # nothing was deleted by the refused posts
    done = requests.post(page.url + "action", data={**form, "csrf": token.group(1)},
                         headers={"Origin": page.url.rstrip("/")}, timeout=10, allow_redirects=False)
    assert done.status_code == 303 and "deleted+1" in done.headers["Location"]
    assert lib.recent(1) == []


def test_the_page_shows_the_library_beside_an_unreadable_record(page: FacesServer) -> None:
    key = kept("A..B", 13)
    store.put_json(BUCKET, key.replace("/A..B/", "/zed/"), "not json")
    shown = requests.get(page.url, timeout=10)
    assert shown.status_code == 200 and f"data-key='{key}'" in shown.text


def test_what_s3_holds_is_rendered_escaped(page: FacesServer) -> None:
    kept("o'brien", 8, assigned_by="<script>alert(1)</script>")
    html = requests.get(page.url, timeout=10).text
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "o&#x27;brien" in html and "o'brien" not in html
    shown = requests.get(page.url + "?done=" + requests.utils.quote("<img src=x onerror=alert(1)>"), timeout=10).text
    assert "<img src=x" not in shown


def test_back_cannot_inject_a_header_or_leave_the_page(page: FacesServer) -> None:
    kept(UNKNOWN_NAME, 25)  # a face, so the page has a form (and the CSRF token)
    token = re.search(r'name="csrf" value="([^"]+)"', requests.get(page.url, timeout=10).text)
    assert token is not None
    for back in ("/?days=1\r\nSet-Cookie: evil=1", "//evil.example/?x", "/?days=1"):
        done = requests.post(page.url + "action", data={"verb": "nothing", "csrf": token.group(1), "back": back},
                             timeout=10, allow_redirects=False)
        assert done.status_code == 303 and "evil" not in done.headers.get("Set-Cookie", "")
        assert done.headers["Location"].startswith("/?days=1&" if back == "/?days=1" else "/?&")


def test_the_url_of_a_page_on_ipv6_loopback_has_brackets() -> None:
    assert (page_url("::1", 8765), page_url("127.0.0.1", 8765)) == ("http://[::1]:8765/", "http://127.0.0.1:8765/")


@pytest.fixture
def locked_page(lib: Library) -> Iterator[FacesServer]:
    server = FacesServer(lib, token=TOKEN)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


TOKEN = "faces-page-token-0123456789"


def test_with_a_token_nothing_is_shown_or_done_without_it(locked_page: FacesServer, lib: Library) -> None:
    key = kept(UNKNOWN_NAME, 24)
    # another local user's process: no page, so no CSRF token; no crop; no action
    bare = requests.get(locked_page.url, timeout=10)
    assert bare.status_code == 401 and "csrf" not in bare.text
    assert requests.get(locked_page.url + "?token=guess-guess-guess-guess", timeout=10).status_code == 401
    assert requests.get(locked_page.url + "enrolled.jpg?name=a&source=b", timeout=10).status_code == 401
    refused = requests.post(locked_page.url + "action", data={"verb": "delete", "key": key}, timeout=10)
    assert refused.status_code == 401 and [s.key for s in lib.recent(1)] == [key]
    # the operator opens the URL `serve` printed: a cookie, the token out of the address bar, then the page
    browser = requests.Session()
    login = browser.get(locked_page.login_url, timeout=10, allow_redirects=False)
    assert login.status_code == 303 and login.headers["Location"] == "/" and "HttpOnly" in login.headers["Set-Cookie"]
    shown = browser.get(locked_page.login_url, timeout=10)
    assert shown.status_code == 200 and shown.url == locked_page.url
    csrf = re.search(r'name="csrf" value="([^"]+)"', shown.text)
    assert csrf is not None
    done = browser.post(locked_page.url + "action", data={"verb": "delete", "key": key, "csrf": csrf.group(1),
                                                          "back": "/?"}, timeout=10, allow_redirects=False)
    assert done.status_code == 303 and lib.recent(1) == []
    bearer = requests.get(locked_page.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert bearer.status_code == 200


def test_serve_makes_a_token_by_default_and_prints_the_url_with_it(s3: Any, lib: Library) -> None:
    serve = subprocess.Popen([sys.executable, "-m", "cloud.operator.cli", "faces", "serve", "--listen", "127.0.0.1:0",
                              "--bucket", BUCKET, "--gallery", GALLERY], stdout=subprocess.PIPE, text=True,
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert serve.stdout is not None
        line = serve.stdout.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+/)\?token=([\w-]+)", line)
        assert url is not None, line
        assert requests.get(url.group(1), timeout=10).status_code == 401
        assert requests.get(url.group(0), timeout=10).status_code == 200
    finally:
        serve.terminate()
        serve.wait(timeout=10)

