"""Disk spool: order, size cap, atomic files, and surviving a restart."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge_client.config import EX_CONFIG
from edge_client.spool import LOCK_NAME, Spool, SpooledFrame, SpoolInUse
from tests.photos import REPO, packaged


def _frames(n: int) -> list[SpooledFrame]:
    jpeg = packaged("face_recognition/obama.jpg").read_bytes()
    return [SpooledFrame(request_id=f"00000000-0000-4000-8000-{i:012d}", captured_at=1_700_000_000 + i, jpeg=jpeg)
            for i in range(n)]


def _drain(spool: Spool) -> list[SpooledFrame]:
    out = []
    while (item := spool.oldest()[0]) is not None:
        out.append(item)
        spool.remove(item)
    return out


def test_fifo_in_capture_order_with_contents_intact(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10**9)
    frames = _frames(5)
    for frame in (frames[3], frames[0], frames[4], frames[1], frames[2]):  # spooled out of order
        assert spool.put(frame) == 0
    assert len(spool) == 5
    drained = _drain(spool)
    assert [f.request_id for f in drained] == [f.request_id for f in frames]
    assert drained[0].jpeg == frames[0].jpeg and drained[0].captured_at == frames[0].captured_at
    assert len(spool) == 0 and spool.bytes == 0 and list(tmp_path.glob("*.frame")) == []


def test_size_cap_drops_the_oldest(tmp_path: Path) -> None:
    frames = _frames(6)
    one = len(frames[0].header()) + 1 + len(frames[0].jpeg)
    spool = Spool(tmp_path, max_bytes=3 * one + 10)
    dropped = sum(spool.put(frame) for frame in frames)
    assert dropped == 3 and len(spool) == 3 and spool.bytes <= spool.max_bytes
    assert [f.request_id for f in _drain(spool)] == [f.request_id for f in frames[3:]]


def test_survives_restart_and_cleans_interrupted_writes(tmp_path: Path) -> None:
    first = Spool(tmp_path, max_bytes=10**9)
    frames = _frames(3)
    for frame in frames:
        first.put(frame)
    (tmp_path / "99999999999999999999-000001-x.frame.tmp").write_bytes(b"half a frame")  # a crash mid-write
    first.close()  # the daemon exits (its lock goes with it)
    again = Spool(tmp_path, max_bytes=10**9)
    assert len(again) == 3 and again.bytes == first.bytes
    assert not list(tmp_path.glob("*.tmp"))
    assert [f.request_id for f in _drain(again)] == [f.request_id for f in frames]


def test_corrupt_file_is_discarded_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10**9)
    frames = _frames(2)
    for frame in frames:
        spool.put(frame)
    oldest = sorted(tmp_path.glob("*.frame"))[0]
    oldest.write_bytes(b"{not json\n\xff\xd8")
    item, corrupt = spool.oldest()
    assert corrupt == 1 and item is not None and item.request_id == frames[1].request_id
    assert len(spool) == 1


def test_failed_write_leaves_no_partial_file(tmp_path: Path) -> None:
    # A real write failure: a file size limit (as on a full disk, the write stops part way).
    code = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from edge_client.spool import Spool, SpooledFrame\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "spool = Spool(Path(sys.argv[1]), max_bytes=10**9)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
        "try:\n"
        "    spool.put(SpooledFrame('00000000-0000-4000-8000-000000000000', 1.0, Path(sys.argv[2]).read_bytes()))\n"
        "except OSError as exc:\n"
        "    print('failed:', exc.errno)\n"
        "print(len(spool), spool.bytes)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(packaged("face_recognition/obama.jpg"))],
                            capture_output=True, text=True, timeout=60, cwd=REPO, check=True)
    assert result.stdout.split() == ["failed:", str(errno.EFBIG), "0", "0"], result.stdout + result.stderr
    assert [path.name for path in tmp_path.iterdir()] == [LOCK_NAME]


def test_a_second_spool_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    # GIVEN a spool holding a frame
    first = Spool(tmp_path, max_bytes=10**9)
    first.put(_frames(1)[0])
    # WHEN a second one opens the same directory (another daemon with the same config)
    with pytest.raises(SpoolInUse, match=rf"in use by another facepipe-edge process \(pid {os.getpid()}\)"):
        Spool(tmp_path, max_bytes=1)  # max_bytes=1 would trim (delete) the first one's frame
    # THEN the first one's frame is untouched, and once it closes the directory can be opened
    assert len(list(tmp_path.glob("*.frame"))) == 1
    first.close()
    assert len(Spool(tmp_path, max_bytes=10**9)) == 1


def test_a_second_daemon_on_a_spool_in_use_exits_as_a_config_error(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    holder = Spool(spool_dir, max_bytes=10**9)  # stands for the first daemon: this process holds the lock
    holder.put(_frames(1)[0])
    config = {
        "device_id": "second", "camera": {"source": str(packaged("face_recognition/obama.jpg"))},
        "endpoint": {"url": "http://127.0.0.1:9/", "auth": "none", "region": "us-east-1"},
        "responses": {"queue_url": "http://127.0.0.1:9/000000000000/none"},
        "spool": {"directory": str(spool_dir), "max_bytes": 1}, "metrics": {"listen": None},
    }
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPIPE_EDGE__")}
    result = subprocess.run([sys.executable, "-m", "edge_client", "run", "--config", str(path)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == EX_CONFIG, result.stderr
    expected = f"spool directory {spool_dir} is in use by another facepipe-edge process (pid {os.getpid()})"
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len(list(spool_dir.glob("*.frame"))) == 1  # the first daemon's frame is still there
    holder.close()


def test_put_fsyncs_the_directory_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Power loss cannot be staged here; what can be checked is that a directory fsync happens, on the
    # real directory, after the frame file has its final name.
    synced: list[tuple[bool, list[str]]] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced.append((os.path.samefile(f"/proc/self/fd/{fd}", tmp_path), sorted(os.listdir(tmp_path))))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    spool = Spool(tmp_path, max_bytes=10**9)
    spool.put(_frames(1)[0])
    assert len(synced) == 1
    same_dir, listing = synced[0]
    assert same_dir and [name for name in listing if name.endswith(".frame")] == [spool.oldest()[0].name]
    assert not [name for name in listing if name.endswith(".tmp")]
