"""Filesystem writes outside allowed directories, seen by a PEP 578 audit hook.

Lambda's filesystem is read-only except /tmp. `install(allowed)` makes this process record, without
blocking, every open for writing, create, rename, remove or metadata change whose path lies outside
`allowed`; call it first, before importing the code under test (audit hooks cannot be removed, so use it
in a subprocess).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
# audit event -> (position of a path it changes, position of that path's dir_fd or None), per
# https://docs.python.org/3/library/audit_events.html (os.replace raises os.rename, os.unlink os.remove)
_PATH_EVENTS: dict[str, tuple[tuple[int, int | None], ...]] = {
    "os.mkdir": ((0, 2),), "os.rmdir": ((0, 1),), "os.remove": ((0, 1),), "os.rename": ((0, 2), (1, 3)),
    "os.link": ((1, 3),), "os.symlink": ((1, 2),), "os.truncate": ((0, None),), "os.chmod": ((0, 2),),
    "os.chown": ((0, 3),), "os.utime": ((0, 3),), "os.chflags": ((0, None),), "os.setxattr": ((0, None),),
    "os.removexattr": ((0, None),), "os.mkfifo": ((0, 2),), "os.mknod": ((0, 3),),
    "shutil.rmtree": ((0, 1),), "sqlite3.connect": ((0, None),),
}
ALWAYS_ALLOWED = ("/dev/null",)


def _path(value: object, dir_fd: object = None) -> str | None:
    """An absolute path for a path argument; None for file descriptors and in-memory databases."""
    if isinstance(value, int) or value is None or value == ":memory:":
        return None
    try:
        path = os.fsdecode(value)  # type: ignore[arg-type]
    except TypeError:
        return None
    if isinstance(dir_fd, int) and not os.path.isabs(path):  # shutil.rmtree works relative to a dir_fd
        path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
    return os.path.realpath(path)


def install(allowed: Iterable[str]) -> list[str]:
    """Start recording; returns the list that fills with "event path" entries."""
    roots = [os.path.realpath(root) for root in allowed]
    seen: list[str] = []
    busy = False

    def outside(path: str) -> bool:
        return path not in ALWAYS_ALLOWED and not any(path == root or path.startswith(root + os.sep)
                                                      for root in roots)

    def hook(event: str, args: tuple[object, ...]) -> None:
        nonlocal busy
        if busy:  # realpath and readlink raise no watched event, but stay safe against re-entry
            return
        if event == "open":
            _, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS)
            positions: tuple[tuple[int, int | None], ...] = ((0, None),) if writing else ()
        else:
            positions = _PATH_EVENTS.get(event, ())
        if not positions:
            return
        busy = True
        try:
            for position, fd_position in positions:
                dir_fd = args[fd_position] if fd_position is not None and fd_position < len(args) else None
                path = _path(args[position], dir_fd) if position < len(args) else None
                if path is not None and outside(path):
                    seen.append(f"{event} {path}")
        finally:
            busy = False

    import sys

    sys.addaudithook(hook)
    return seen
