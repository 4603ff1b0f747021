"""The frames a bench run uses: JPEG bytes from a video, photos or a folder, or a clip filmed from photos (by
default the demo's, from the packaged sample photos, as `make demo` films it), every `every`th frame, at most
`limit`."""

from __future__ import annotations

import tempfile
from pathlib import Path

from cloud.operator.submit import collect_inputs


def filmed_frames(photos: list[Path], every: int, limit: int) -> list[bytes]:
    """A clip panned over `photos` as the demo films its own (cloud.emulator.demo.FILMED)."""
    from cloud.emulator.demo_clip import write_pan_clip

    with tempfile.TemporaryDirectory(prefix="facepipe-bench-") as workdir:
        clip = Path(workdir) / "filmed.avi"
        write_pan_clip(photos, clip)
        return load_frames([clip], every, limit)


def load_frames(paths: list[Path], every: int, limit: int) -> list[bytes]:
    inputs = collect_inputs(paths, every)
    if not inputs:
        raise ValueError("no frames in " + " ".join(map(str, paths)))
    return [item.read() for item in inputs[:limit]]


def cycle(frames: list[bytes], count: int) -> list[bytes]:
    """`count` frames, repeating the list when it is shorter."""
    return [frames[i % len(frames)] for i in range(count)]
