"""Gallery: matching rules, storage round trips (local file and a versioned S3 object on a real moto
server over HTTP), model-tag refusal, and the recognizer's reload-on-new-version cache."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from cloud.functions import aws
from cloud.functions.contracts import UNKNOWN_NAME, name_refusal
from cloud.functions.recognition.gallery import (
    Gallery,
    GalleryCache,
    GalleryConflict,
    GalleryError,
    GalleryModelMismatch,
    GalleryNotFound,
    Update,
    current_version,
    from_bytes,
    load_gallery,
    save_gallery,
    to_bytes,
    update_gallery,
)
from tests.moto_env import moto_server, point_boto3_at

TAG = "inception_resnet_v1:test"


def unit_rows(seed: int, n: int) -> np.ndarray:
    """n random L2-normalised 512-d rows (storage and arithmetic tests; not faces)."""
    rows = np.random.default_rng(seed).normal(size=(n, 512)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def s3_bucket() -> Iterator[str]:
    """A versioned bucket on a moto server over HTTP, reached through cloud.functions.aws like the handlers."""
    with moto_server() as endpoint, pytest.MonkeyPatch.context() as env:
        point_boto3_at(endpoint, env.setenv)
        s3 = aws.client("s3")
        s3.create_bucket(Bucket="galleries")
        s3.put_bucket_versioning(Bucket="galleries", VersioningConfiguration={"Status": "Enabled"})
        yield "galleries"
    aws.client.cache_clear()


# --- matching ----------------------------------------------------------------------------------------


def test_match_names_the_nearest_within_threshold_and_unknown_beyond() -> None:
    # GIVEN two people, one with two embeddings
    a, b, c = unit_rows(1, 3)
    gallery = Gallery(TAG)
    gallery.add("ann", np.stack([a, b]))
    gallery.add("bob", c)
    # WHEN probing with b itself, with a vector between a and b, and with a far-away vector
    between = (a + b) / np.linalg.norm(a + b)
    far = unit_rows(2, 1)[0]
    matches = gallery.match(np.stack([b, between, far, c]), threshold=0.9)
    # THEN exact copies match at distance 0, and the far vector is unknown with its true distance
    assert matches[0] == ("ann", pytest.approx(0.0, abs=1e-3))
    assert matches[1][0] == "ann"
    assert matches[1][1] == pytest.approx(np.linalg.norm(between - a), abs=1e-4)
    nearest_far = min(np.linalg.norm(far - row) for row in (a, b, c))
    assert matches[2] == (UNKNOWN_NAME, pytest.approx(nearest_far, abs=1e-4))
    assert nearest_far > 0.9
    assert matches[3] == ("bob", pytest.approx(0.0, abs=1e-3))


def test_threshold_is_inclusive_and_empty_gallery_answers_unknown_without_distance() -> None:
    a, b = unit_rows(3, 2)
    gallery = Gallery(TAG)
    gallery.add("ann", a)
    distance = float(np.linalg.norm(a - b))
    assert gallery.match(b[None], threshold=distance + 1e-4)[0][0] == "ann"
    assert gallery.match(b[None], threshold=distance - 1e-4)[0][0] == UNKNOWN_NAME
    assert Gallery(TAG).match(np.stack([a, b]), threshold=1.0) == [(UNKNOWN_NAME, None)] * 2


def test_add_remove_counts() -> None:
    gallery = Gallery(TAG)
    assert gallery.add("ann", unit_rows(4, 2)) == 2
    assert gallery.add("bob", unit_rows(5, 1)) == 1
    assert gallery.counts() == {"ann": 2, "bob": 1}
    assert gallery.remove("ann") == 2
    assert gallery.remove("nobody") == 0
    assert gallery.counts() == {"bob": 1}
    assert gallery.embeddings.shape == (1, 512)
    with pytest.raises(GalleryError, match="reserved"):
        gallery.add(UNKNOWN_NAME, unit_rows(6, 1))


# --- storage -----------------------------------------------------------------------------------------


def test_file_round_trip(tmp_path: Path) -> None:
    uri = str(tmp_path / "sub" / "gallery.npz")
    gallery = Gallery(TAG)
    gallery.add("ann", unit_rows(7, 2))
    gallery.add("bob", unit_rows(8, 1))
    version = save_gallery(gallery, uri)
    loaded = load_gallery(uri)
    assert (loaded.model_tag, loaded.names, loaded.version) == (TAG, ["ann", "ann", "bob"], version)
    np.testing.assert_array_equal(loaded.embeddings, gallery.embeddings)
    assert loaded.embeddings.dtype == np.float32
    assert current_version(uri) == version


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(GalleryNotFound, match="enroll"):
        load_gallery(str(tmp_path / "absent.npz"))
    assert current_version(str(tmp_path / "absent.npz")) is None
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a gallery")
    with pytest.raises(GalleryError, match="unreadable"):
        load_gallery(str(junk))


def test_s3_round_trip_keeps_every_version(s3_bucket: str) -> None:
    # GIVEN a gallery saved twice to a versioned bucket
    key = f"round-trip-{uuid.uuid4().hex[:8]}/gallery.npz"  # the bucket is the module's: a key of its own
    uri = f"s3://{s3_bucket}/{key}"
    gallery = Gallery(TAG)
    gallery.add("ann", unit_rows(9, 1))
    first = save_gallery(gallery, uri)
    gallery.add("bob", unit_rows(10, 1))
    second = save_gallery(gallery, uri)
    # THEN each save is a new S3 version, the latest is what loads, and the first is still there
    assert first and second and first != second
    loaded = load_gallery(uri)
    assert (loaded.names, loaded.version, loaded.model_tag) == (["ann", "bob"], second, TAG)
    np.testing.assert_array_equal(loaded.embeddings, gallery.embeddings)
    assert current_version(uri) == second
    versions = aws.client("s3").list_object_versions(Bucket=s3_bucket, Prefix=key)["Versions"]
    assert {v["VersionId"] for v in versions} == {first, second}


def test_s3_missing_gallery(s3_bucket: str) -> None:
    with pytest.raises(GalleryNotFound):
        load_gallery(f"s3://{s3_bucket}/nothing-here.npz")
    assert current_version(f"s3://{s3_bucket}/nothing-here.npz") is None
    with pytest.raises(GalleryError, match="s3://bucket/key"):
        load_gallery("s3://only-a-bucket")


# --- model tag and the recognizer's cache ----------------------------------------------------------


def test_gallery_from_other_weights_is_refused_with_both_tags(tmp_path: Path) -> None:
    uri = str(tmp_path / "gallery.npz")
    save_gallery(Gallery("inception_resnet_v1:aaaa"), uri)
    with pytest.raises(GalleryModelMismatch) as caught:
        GalleryCache(refresh_seconds=60).get(uri, "inception_resnet_v1:bbbb")
    message = str(caught.value)
    assert "inception_resnet_v1:aaaa" in message and "inception_resnet_v1:bbbb" in message
    assert "re-enroll" in message


def test_cache_reloads_a_new_version_after_the_refresh_interval(s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/cache/gallery.npz"
    fresh, lazy = GalleryCache(refresh_seconds=0), GalleryCache(refresh_seconds=3600)
    # Nothing stored yet: an empty gallery, every face unknown.
    assert len(fresh.get(uri, TAG)) == 0 and len(lazy.get(uri, TAG)) == 0
    gallery = Gallery(TAG)
    gallery.add("ann", unit_rows(11, 1))
    version = save_gallery(gallery, uri)
    reloaded = fresh.get(uri, TAG)
    assert (reloaded.names, reloaded.version) == (["ann"], version)
    assert len(lazy.get(uri, TAG)) == 0  # within its interval: no HEAD, the old copy


def test_a_save_while_the_cache_reads_the_file_is_picked_up_by_the_next_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a file gallery that an enrollment replaces right after the recognizer has read its bytes
    uri = str(tmp_path / "gallery.npz")
    old, new = Gallery(TAG), Gallery(TAG)
    old.add("ann", unit_rows(12, 1))
    new.add("bob", unit_rows(13, 1))
    save_gallery(old, uri)
    real_read = Path.read_bytes

    def read_then_enroll(path: Path) -> bytes:
        data = real_read(path)
        monkeypatch.setattr(Path, "read_bytes", real_read)
        time.sleep(0.01)  # a new mtime even on coarse clocks
        save_gallery(new, uri)
        return data

    monkeypatch.setattr(Path, "read_bytes", read_then_enroll)
    cache = GalleryCache(refresh_seconds=0)
    assert cache.get(uri, TAG).names == ["ann"]
    # THEN the next check sees a version it has not loaded, and reloads
    assert cache.get(uri, TAG).names == ["bob"]


# --- concurrent edits: read-modify-write with conditional saves ---------------------------------------


def _adder(name: str, seed: int) -> Callable[[Gallery], int]:
    return lambda gallery: gallery.add(name, unit_rows(seed, 1))


def _both_read_before_either_saves(
    uri: str, edits: tuple[Callable[[Gallery], int], Callable[[Gallery], int]], new: Callable[[], Gallery] | None,
) -> list[Update]:
    """Run two update_gallery calls in threads, their first attempts held at a barrier after the read
    and the edit: the worst interleaving (both edit the same revision), forced every time."""
    barrier = threading.Barrier(2, timeout=30)
    updates: list[Update] = []

    def run(edit: Callable[[Gallery], int]) -> None:
        calls = 0

        def held(gallery: Gallery) -> int:
            nonlocal calls
            calls += 1
            changed = edit(gallery)
            if calls == 1:
                barrier.wait()
            return changed

        updates.append(update_gallery(uri, held, new=new))

    threads = [threading.Thread(target=run, args=(edit,)) for edit in edits]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(updates) == 2
    return updates


def test_s3_two_edits_of_one_revision_both_land_every_round(s3_bucket: str) -> None:
    # GIVEN a stored gallery with "base", and rounds of two writers that both read it before either
    # saves: one removes "base" (an erasure request), the other enrolls someone new
    for round_ in range(15):
        uri = f"s3://{s3_bucket}/race/{round_}.npz"
        seeded = Gallery(TAG)
        seeded.add("base", unit_rows(100 + round_, 2))
        save_gallery(seeded, uri)
        updates = _both_read_before_either_saves(
            uri, (lambda gallery: gallery.remove("base"), _adder(f"new{round_}", round_)), None
        )
        # THEN the second save was refused (If-Match on the ETag read), re-read and re-applied: both land
        assert sorted(update.attempts for update in updates) == [1, 2]
        assert load_gallery(uri).counts() == {f"new{round_}": 1}


def test_s3_two_writers_creating_the_first_gallery_both_land(s3_bucket: str) -> None:
    # GIVEN no gallery yet, and two enrollments that both found none (If-None-Match '*' on the save)
    for round_ in range(5):
        uri = f"s3://{s3_bucket}/create/{round_}.npz"
        updates = _both_read_before_either_saves(
            uri, (_adder("ann", 1), _adder("bob", 2)), lambda: Gallery(TAG)
        )
        assert sorted(update.attempts for update in updates) == [1, 2]
        assert load_gallery(uri).counts() == {"ann": 1, "bob": 1}


def test_file_gallery_edit_interrupted_by_an_unlocked_writer_is_reapplied(tmp_path: Path) -> None:
    # GIVEN a file gallery and an edit during which another writer (not taking the lock) saves
    uri = str(tmp_path / "gallery.npz")
    seeded = Gallery(TAG)
    seeded.add("base", unit_rows(20, 1))
    save_gallery(seeded, uri)
    calls = 0

    def remove_base_while_someone_enrolls(gallery: Gallery) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            other = load_gallery(uri)
            other.add("carl", unit_rows(21, 1))
            save_gallery(other, uri)
        return gallery.remove("base")

    update = update_gallery(uri, remove_base_while_someone_enrolls)
    # THEN the content check refused the first save; the edit was re-applied to the fresh gallery
    assert (update.attempts, update.changed) == (2, 1)
    assert load_gallery(uri).counts() == {"carl": 1}


def _add_at_once(uri: str, names: list[str]) -> list[int]:
    """One thread per name, released together, each adding its name; returns their attempts."""
    barrier = threading.Barrier(len(names), timeout=30)
    attempts: list[int] = []

    def add(name: str, seed: int) -> None:
        barrier.wait()
        attempts.append(update_gallery(uri, _adder(name, seed), new=lambda: Gallery(TAG)).attempts)

    threads = [threading.Thread(target=add, args=(name, seed)) for seed, name in enumerate(names)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return attempts


def test_file_gallery_writers_queue_on_the_lock(tmp_path: Path) -> None:
    # GIVEN rounds of four threads adding one name each to one file gallery at the same moment
    uri = str(tmp_path / "gallery.npz")
    for round_ in range(10):
        # THEN the lock makes each writer read the previous one's save: no conflict, no retry
        assert _add_at_once(uri, [f"p{round_}-{i}" for i in range(4)]) == [1, 1, 1, 1]
    # ... and every name is there
    assert load_gallery(uri).counts() == {f"p{r}-{i}": 1 for r in range(10) for i in range(4)}


def test_update_without_a_change_saves_nothing_and_a_missing_gallery_needs_new(tmp_path: Path) -> None:
    uri = str(tmp_path / "gallery.npz")
    with pytest.raises(GalleryNotFound):
        update_gallery(uri, lambda gallery: gallery.remove("ann"))
    assert not Path(uri).exists()
    save_gallery(Gallery(TAG), uri)
    before = Path(uri).read_bytes(), current_version(uri)
    update = update_gallery(uri, lambda gallery: gallery.remove("ann"))
    assert (update.changed, update.attempts) == (0, 1)
    assert (Path(uri).read_bytes(), current_version(uri)) == before


def test_an_edit_that_keeps_losing_gives_up_with_a_conflict(s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/busy.npz"
    save_gallery(Gallery(TAG), uri)

    def always_overtaken(gallery: Gallery) -> int:
        other = load_gallery(uri)
        other.add("someone", unit_rows(30, 1))
        save_gallery(other, uri)
        return gallery.add("ann", unit_rows(31, 1))

    with pytest.raises(GalleryConflict, match="3 attempts"):
        update_gallery(uri, always_overtaken, attempts=3)
    assert "ann" not in load_gallery(uri).counts()


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ann", "李", "王 小明", "José", "Zoë", "O'Brien", "Anne-Marie Jr.", "e\u0301mile",
                                  "r2_d2", "x" * 64])
def test_names_of_every_script_are_accepted(name: str) -> None:
    assert name_refusal(name) is None
    assert Gallery(TAG).add(name, unit_rows(7, 1)) == 1


@pytest.mark.parametrize("name", ["a/b", "../ann", "ann\x00", "ann,bob", "\x1b[31mann", "ann\nbob", "ann\u202e",
                                  "", " ann", "ann ", "_ann", ".ann", "\u0301ann", "x" * 65, UNKNOWN_NAME])
def test_names_that_break_paths_results_or_terminals_are_refused(name: str) -> None:
    assert name_refusal(name)
    gallery = Gallery(TAG)
    with pytest.raises(ValueError, match="invalid name"):
        gallery.add(name, unit_rows(8, 1))
    assert len(gallery) == 0


def test_a_stored_name_that_fails_the_check_answers_unknown() -> None:
    # GIVEN a gallery written before names were checked, holding 'a/b' and 'ann'
    a, b = unit_rows(9, 2)
    stored = from_bytes(to_bytes(Gallery(TAG, names=["a/b", "ann"], embeddings=np.stack([a, b]))))
    # WHEN faces match each, THEN the checked name answers, the other is unknown (with its distance)
    (bad, bad_distance), (good, _) = stored.match(np.stack([a, b]), threshold=0.5)
    assert (bad, good) == (UNKNOWN_NAME, "ann")
    assert bad_distance == pytest.approx(0, abs=1e-3)
