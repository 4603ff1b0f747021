"""Disk spool: encoded frames wait here while the endpoint is unreachable, and survive a restart.

One file per frame: a JSON header line (request id, capture time, ...) then the JPEG bytes, written
to a temporary name, fsynced and renamed, so a crash leaves either the whole frame or nothing.
The directory is fsynced after the rename too, so the new name itself survives a power cut. File
names sort in capture order, so draining oldest-first is a directory listing. Beyond `max_bytes` the
oldest frames are deleted (the caller counts them as dropped).

One process per spool: an exclusive fcntl lock on `.lock` in the directory, held while the Spool is
open. A second daemon pointed at the same directory gets SpoolInUse instead of draining, trimming and
deleting the first one's frames.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_SUFFIX = ".frame"
_TMP_SUFFIX = ".tmp"
LOCK_NAME = ".lock"


class SpoolInUse(OSError):
    """Another process has this spool directory open."""


@dataclass(frozen=True)
class SpooledFrame:
    request_id: str
    captured_at: float
    jpeg: bytes
    name: str = ""  # file name once spooled

    def header(self) -> bytes:
        return json.dumps({"request_id": self.request_id, "captured_at": self.captured_at}).encode()


class Spool:
    """A bounded FIFO of frames on disk. Thread-safe."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_exclusively(directory / LOCK_NAME)  # before touching any file
        for leftover in directory.glob(f"*{_TMP_SUFFIX}"):  # a write interrupted by a crash
            leftover.unlink(missing_ok=True)
        self._sizes: dict[str, int] = {p.name: p.stat().st_size for p in directory.glob(f"*{_SUFFIX}")}
        self._bytes = sum(self._sizes.values())
        self._counter = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._sizes)

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    def put(self, frame: SpooledFrame) -> int:
        """Store a frame; return how many frames were dropped (oldest first) to stay under max_bytes."""
        data = frame.header() + b"\n" + frame.jpeg
        with self._lock:
            self._counter += 1
            # Capture time in ns first, so names sort in capture order across restarts.
            name = f"{round(frame.captured_at * 1e9):020d}-{self._counter:06d}-{frame.request_id}{_SUFFIX}"
            path = self.directory / name
            tmp = path.with_name(name + _TMP_SUFFIX)
            try:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
                _fsync_directory(self.directory)  # the rename is durable only once the directory is
            except OSError:  # disk full: a partial file would stay behind, uncounted, until a restart
                tmp.unlink(missing_ok=True)
                raise
            self._sizes[name] = len(data)
            self._bytes += len(data)
            return self._trim()

    def close(self) -> None:
        """Release the directory for another process (also happens when this one exits)."""
        self._lock_file.close()

    def _trim(self) -> int:
        dropped = 0
        for name in sorted(self._sizes):
            if self._bytes <= self.max_bytes:
                break
            self._delete(name)
            dropped += 1
        if dropped:
            log.warning("spool: over %d bytes, dropped the %d oldest frame(s)", self.max_bytes, dropped)
        return dropped

    def _delete(self, name: str) -> None:
        # No directory fsync here: a delete lost in a power cut brings back a delivered or dropped
        # frame, which is sent again (a duplicate answer is harmless); a lost rename would lose a frame.
        (self.directory / name).unlink(missing_ok=True)
        self._bytes -= self._sizes.pop(name, 0)

    def oldest(self) -> tuple[SpooledFrame | None, int]:
        """(oldest readable frame or None, number of corrupt files discarded on the way)."""
        corrupt = 0
        with self._lock:
            for name in sorted(self._sizes):
                try:
                    raw = (self.directory / name).read_bytes()
                    header, _, jpeg = raw.partition(b"\n")
                    meta = json.loads(header)
                    return SpooledFrame(
                        request_id=str(meta["request_id"]), captured_at=float(meta["captured_at"]), jpeg=jpeg,
                        name=name,
                    ), corrupt
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    log.warning("spool: discarding unreadable %s: %s", name, exc)
                    self._delete(name)
                    corrupt += 1
        return None, corrupt

    def remove(self, frame: SpooledFrame) -> None:
        with self._lock:
            self._delete(frame.name)


def _lock_exclusively(path: Path) -> IO[str]:
    """Open and lock `path` (kept open: closing it releases the lock); SpoolInUse when held elsewhere."""
    handle = open(path, "a+")  # noqa: SIM115 - stays open for the Spool's lifetime: it holds the lock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise SpoolInUse(
            f"spool directory {path.parent} is in use by another facepipe-edge process (pid {holder}); "
            f"give each daemon its own spool.directory"
        ) from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
