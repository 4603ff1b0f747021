"""torch threads on ONE core: is 1 or 2 faster? (what a Lambda function under 1769 MB, less than one vCPU, gets)

Each thread count runs in its own process pinned to CPU 0 (`taskset -c 0`) and times, after a warm-up:
- MTCNN (the detector, 1280 px) on a 1280x720 frame cut from a real group photo (six faces)
- one InceptionResnetV1 forward pass over a batch of 8 real face crops

Prints both side by side (median and fastest ms). cloud/functions/settings.py picks the default thread count from the
function's memory (1 below 2654 MB); this checks that one thread is not slower than two on a single core.
Run: `python -m cloud.bench.threads_one_core` (needs `taskset`, util-linux).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

THREADS = (1, 2)


def _times_ms(fn: Callable[[], object], repeat: int) -> list[float]:
    fn()  # warm-up: first-call allocations, lazy init
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def worker(threads: int, repeat: int) -> dict[str, list[float]]:
    """Runs inside the pinned process: torch is imported here, after the affinity is set."""
    import torch
    from PIL import Image

    from cloud.functions.detection.detector import Detector
    from cloud.functions.recognition.embedder import Embedder
    from tests.photos import packaged, weights_path

    torch.set_num_threads(threads)
    with Image.open(packaged("insightface/t1.jpg")) as photo:
        frame = photo.convert("RGB").crop((0, 0, 1280, 720))  # t1 is 1280x886: the upper 720 rows
    detector = Detector(max_side=1280)
    faces = detector.detect(Image.open(packaged("insightface/t1.jpg")).convert("RGB"))
    crops = [face.crop for face in faces]
    batch = (crops * 2)[:8]
    embedder = Embedder(weights_path())
    return {
        "mtcnn_1280x720": _times_ms(lambda: detector.detect(frame), repeat),
        "embed_batch_of_8": _times_ms(lambda: embedder.embed(batch), repeat),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # internal: the pinned process
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeat)))
        return
    if shutil.which("taskset") is None:
        sys.exit("taskset not found (util-linux)")
    results = {}
    for threads in THREADS:
        out = subprocess.run(
            ["taskset", "-c", "0", sys.executable, "-m", "cloud.bench.threads_one_core", "--worker", str(threads),
             "--repeat", str(args.repeat)],
            check=True, capture_output=True, text=True,
        ).stdout
        results[threads] = json.loads(out.strip().splitlines()[-1])
    print(f"one core (taskset -c 0), {args.repeat} runs each after a warm-up; ms median / fastest")
    print(f"{'':20}" + "".join(f"{f'{t} thread' + ('s' if t > 1 else ''):>22}" for t in THREADS))
    for name in results[THREADS[0]]:
        cells = [f"{statistics.median(results[t][name]):9.1f} / {min(results[t][name]):8.1f}" for t in THREADS]
        print(f"{name:20}" + "".join(f"{cell:>22}" for cell in cells))


if __name__ == "__main__":
    main()
