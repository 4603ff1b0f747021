"""The functions' two engines side by side: facenet-pytorch in torch against the ONNX exports in ONNX Runtime.

Each (function, engine) runs in a fresh process, as a cold Lambda container would, on one intra-op thread:
- init: importing the function's handler module plus its engine's runtime, then building its model(s), as the
  Lambda init phase does (Init Duration, without the runtime client's own start);
- RSS once loaded, and the process's peak (VmHWM, Lambda's Max Memory Used) after the timed work;
- detection: `detect` per 1280x720 frame (crops included), one frame with six faces (insightface/t1.jpg) and one
  with one face (obama2.jpg on a grey canvas); recognition: `embed` per face at a batch of 8 real face crops
  (then one full chunk of 16, whose memory the peak includes).
  Median and fastest of `--repeat` after a warm-up.
The engines alternate for `--rounds` rounds, so a busy machine slows both alike.
Run: `python -m cloud.bench.engines [--models-dir .cache/models] [--weights ...]` (`make models` exports the files).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from cloud.functions.detection.detector import Engine

ENGINES = ("torch", "onnx")
FUNCTIONS = ("detection", "recognition")
BATCH = 8
CHUNK = 16  # the recognition function's embed_chunk default: its largest forward pass, for the peak


def _status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process; unlike ru_maxrss, the peak is not inherited across exec."""
    with open("/proc/self/status") as fh:
        kb = next(line.split()[1] for line in fh if line.startswith(field + ":"))
    return int(kb) / 1024


def _frames() -> dict[str, Image.Image]:
    from PIL import Image

    from tests.photos import packaged

    with Image.open(packaged("insightface/t1.jpg")) as photo:
        many = photo.convert("RGB").crop((0, 0, 1280, 720))  # t1 is 1280x886: its upper 720 rows, six faces
    with Image.open(packaged("face_recognition/obama2.jpg")) as photo:
        one = Image.new("RGB", (1280, 720), (128, 128, 128))
        face = photo.convert("RGB")
        face.thumbnail((1280, 720))
        one.paste(face, ((1280 - face.width) // 2, (720 - face.height) // 2))
    return {"six_faces": many, "one_face": one}


def _timed(call: Callable[[], object], repeat: int) -> dict[str, float]:
    call()  # warm-up: first-call allocations are not the steady state
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": statistics.median(times), "min_ms": min(times)}


def worker(function: str, engine: Engine, models_dir: Path, weights: Path, crops: Path,
           repeat: int) -> dict[str, object]:
    """Runs in its own process: everything it times is imported here."""
    started = time.perf_counter()
    importlib.import_module(f"cloud.functions.{function}.handler")  # what the function's init imports
    from cloud.functions.detection.detector import Detector
    from cloud.functions.recognition.embedder import Embedder
    if engine == "torch":
        import torch  # noqa: F401 - the engine's runtime, imported by the model otherwise
    else:
        import onnxruntime  # noqa: F401
    from cloud.functions.memory import keep_freed_memory

    imported = time.perf_counter()
    detector = Detector(max_side=1280, threads=1, engine=engine, models_dir=models_dir) \
        if function == "detection" else None
    embedder = Embedder(weights, threads=1, engine=engine, models_dir=models_dir) \
        if function == "recognition" else None
    loaded = time.perf_counter()
    keep_freed_memory()  # as the handlers' init does, after the model
    rss_loaded = _status_mb("VmRSS")
    work: dict[str, object] = {}
    if detector:
        for name, frame in _frames().items():
            work[name] = {"faces": len(detector.detect(frame)), **_timed(partial(detector.detect, frame), repeat)}
    elif embedder:
        batch = list(np.load(crops))[:BATCH]
        timed = _timed(partial(embedder.embed, batch), repeat)
        work["per_face"] = {key: ms / len(batch) for key, ms in timed.items()}
        embedder.embed(batch * (CHUNK // BATCH))  # the peak of a full chunk
    return {"import_s": imported - started, "load_s": loaded - imported, "init_s": loaded - started,
            "rss_loaded_mb": rss_loaded, "peak_rss_mb": _status_mb("VmHWM"), "work": work}


def _run(function: str, engine: str, args: argparse.Namespace, crops: Path) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "cloud.bench.engines", "--worker", function, engine,
                           "--models-dir", str(args.models_dir), "--weights", str(args.weights),
                           "--crops", str(crops), "--repeat", str(args.repeat)],
                          capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def _face_crops(models_dir: Path, out: Path) -> None:
    """BATCH real face crops (the six of t1.jpg, then the portraits'), found by the ONNX detector."""
    from PIL import Image

    from cloud.functions.detection.detector import Detector
    from tests.photos import packaged

    detector = Detector(engine="onnx", models_dir=models_dir)
    crops = []
    for name in ("insightface/t1.jpg", "face_recognition/obama2.jpg", "face_recognition/biden.jpg"):
        with Image.open(packaged(name)) as photo:
            crops += [face.crop for face in detector.detect(photo.convert("RGB"))]
    assert len(crops) >= BATCH, f"{len(crops)} crops"
    np.save(out, np.stack(crops[:BATCH]))


def _median(results: list[dict[str, object]], *keys: str) -> float:
    values = []
    for result in results:
        value: object = result
        for key in keys:
            value = value[key]  # type: ignore[index]
        values.append(float(value))  # type: ignore[arg-type]
    return statistics.median(values)


def main() -> int:
    from tests.photos import MODELS, WEIGHTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed calls per input (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two engines (default %(default)s)")
    parser.add_argument("--models-dir", type=Path, default=MODELS, help="the exported .onnx files (make models)")
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="the torch engine's state_dict (make weights)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--worker", nargs=2, metavar=("FUNCTION", "ENGINE"), help=argparse.SUPPRESS)
    parser.add_argument("--crops", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        function, engine = args.worker
        if engine not in ENGINES:
            parser.error(f"no engine {engine!r}")
        print(json.dumps(worker(function, engine, args.models_dir, args.weights, args.crops, args.repeat)))
        return 0
    results: dict[str, dict[str, list[dict[str, object]]]] = {f: {e: [] for e in ENGINES} for f in FUNCTIONS}
    with tempfile.TemporaryDirectory() as tmp:
        crops = Path(tmp) / "crops.npy"
        _face_crops(args.models_dir, crops)
        for _ in range(args.rounds):
            for function in FUNCTIONS:
                for engine in ENGINES:
                    results[function][engine].append(_run(function, engine, args, crops))
    print(f"engines, 1 thread, median of {args.repeat} calls, {args.rounds} rounds (one line each)")
    print(f"{'function':<12}{'engine':<7}{'import s':>9}{'load s':>8}{'init s':>8}{'RSS MB':>8}{'peak MB':>9}  work ms")
    for function in FUNCTIONS:
        for engine in ENGINES:
            for r in results[function][engine]:
                work = "; ".join(f"{name} {w['median_ms']:.1f} (min {w['min_ms']:.1f})"
                                 for name, w in r["work"].items())  # type: ignore[attr-defined]
                print(f"{function:<12}{engine:<7}{r['import_s']:>9.2f}{r['load_s']:>8.2f}{r['init_s']:>8.2f}"
                      f"{r['rss_loaded_mb']:>8.0f}{r['peak_rss_mb']:>9.0f}  {work}")
    print("\ntorch / onnx, medians over rounds:")
    for function in FUNCTIONS:
        torch_runs, onnx_runs = results[function]["torch"], results[function]["onnx"]
        parts = [f"init {_median(torch_runs, 'init_s') / _median(onnx_runs, 'init_s'):.1f}x",
                 f"peak RSS {_median(torch_runs, 'peak_rss_mb') / _median(onnx_runs, 'peak_rss_mb'):.1f}x"]
        for name in onnx_runs[0]["work"]:  # type: ignore[attr-defined]
            t, o = _median(torch_runs, "work", name, "median_ms"), _median(onnx_runs, "work", name, "median_ms")
            parts.append(f"{name} {t:.1f} vs {o:.1f} ms = {t / o:.2f}x")
        print(f"  {function}: " + ", ".join(parts))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
