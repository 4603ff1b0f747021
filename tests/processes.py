"""Find the local stack's worker processes as an operator would with `ps`: by their command line
(`python -m cloud.emulator.worker <LogicalId> <handler>`), read from /proc."""

from __future__ import annotations

from pathlib import Path


def worker_pids(logical_id: str, parent: int | None = None) -> set[int]:
    """Pids of the live worker processes serving `logical_id` (e.g. RecognitionFunction), optionally only
    those started by the process `parent`."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:  # exited meanwhile
            continue
        if (state != "Z" and b"cloud.emulator.worker" in argv and logical_id.encode() in argv
                and parent in (None, int(ppid))):
            pids.add(int(entry.name))
    return pids


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def mapped_libraries(pid: int) -> set[str]:
    """File names of the shared libraries the process has mapped (/proc/<pid>/maps): what it really loaded,
    e.g. libtorch_cpu.so once anything imported torch."""
    names = set()
    for line in (Path("/proc") / str(pid) / "maps").read_text().splitlines():
        fields = line.split(maxsplit=5)  # address perms offset dev inode [path]
        path = fields[5] if len(fields) == 6 else ""
        if ".so" in path:
            names.add(Path(path).name)
    return names
