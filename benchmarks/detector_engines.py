"""The detector's two engines side by side: facenet-pytorch's MTCNN in torch against the ONNX Runtime port.

Each engine runs in a fresh process (as a cold Lambda container would), one intra-op thread, and reports:
- import: `import cloud.detection.detector` plus its engine's runtime (torch + facenet-pytorch, or onnxruntime);
- load: building the Detector (the three networks), and the process's resident memory (RSS) then;
- per frame: median and fastest ms of `detect` (crops included) on two 1280x720 frames cut from packaged photos,
  six faces (insightface/t1.jpg) and one (face_recognition/obama2.jpg on a grey canvas), after a warm-up;
- peak RSS after the frames.
The engines alternate for `--rounds` rounds, so a busy machine slows both alike.
Run: `python -m benchmarks.detector_engines` (the ONNX files are exported to a temporary folder first).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENGINES = ("torch", "onnx")


def _status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process; unlike ru_maxrss, the peak is not inherited across exec."""
    with open("/proc/self/status") as fh:
        kb = next(line.split()[1] for line in fh if line.startswith(field + ":"))
    return int(kb) / 1024


def worker(engine: str, models_dir: Path, repeat: int) -> dict[str, object]:
    """Runs in its own process: everything it times is imported here."""
    started = time.perf_counter()
    from cloud.detection import detector as detector_module

    if engine == "torch":
        import facenet_pytorch  # noqa: F401 - the engine's runtime, imported by the Detector otherwise
        import torch  # noqa: F401
    else:
        import onnxruntime  # noqa: F401
    imported = time.perf_counter()
    detector = detector_module.Detector(max_side=1280, threads=1, engine=engine,  # type: ignore[arg-type]
                                        models_dir=models_dir)
    loaded = time.perf_counter()
    rss_loaded = _status_mb("VmRSS")

    from PIL import Image

    from tests.photos import packaged

    with Image.open(packaged("insightface/t1.jpg")) as photo:
        many = photo.convert("RGB").crop((0, 0, 1280, 720))  # t1 is 1280x886: its upper 720 rows, six faces
    with Image.open(packaged("face_recognition/obama2.jpg")) as photo:
        one = Image.new("RGB", (1280, 720), (128, 128, 128))
        face = photo.convert("RGB")
        face.thumbnail((1280, 720))
        one.paste(face, ((1280 - face.width) // 2, (720 - face.height) // 2))
    frames: dict[str, object] = {}
    for name, frame in (("six_faces", many), ("one_face", one)):
        faces = len(detector.detect(frame))  # warm-up
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            detector.detect(frame)
            times.append((time.perf_counter() - start) * 1000)
        frames[name] = {"faces": faces, "median_ms": statistics.median(times), "min_ms": min(times)}
    return {"import_s": imported - started, "load_s": loaded - imported, "rss_loaded_mb": rss_loaded,
            "peak_rss_mb": _status_mb("VmHWM"), "frames": frames}


def _run(engine: str, models_dir: Path, repeat: int) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "benchmarks.detector_engines", "--worker", engine,
                           "--models-dir", str(models_dir), "--repeat", str(repeat)],
                          capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed detections per frame (default 15)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two engines (default 2)")
    parser.add_argument("--models-dir", type=Path, help="the exported .onnx files (default: export them now)")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.models_dir, args.repeat)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        models_dir = args.models_dir
        if models_dir is None:
            from cloud.models.mtcnn_export import export_mtcnn
            from tests.photos import packaged

            models_dir = Path(tmp)
            export_mtcnn(models_dir, packaged("face_recognition/obama.jpg"))
        results: dict[str, list[dict[str, object]]] = {engine: [] for engine in ENGINES}
        for _ in range(args.rounds):
            for engine in ENGINES:
                results[engine].append(_run(engine, models_dir, args.repeat))
    print(f"detector engines, 1 thread, median of {args.repeat} per frame, {args.rounds} rounds (one line each)")
    print(f"{'engine':<7}{'import s':>9}{'load s':>8}{'RSS MB':>8}{'peak MB':>9}"
          f"{'6 faces ms (min)':>19}{'1 face ms (min)':>18}")
    for engine in ENGINES:
        for r in results[engine]:
            frames = r["frames"]
            assert isinstance(frames, dict)
            six, one = frames["six_faces"], frames["one_face"]
            print(f"{engine:<7}{r['import_s']:>9.2f}{r['load_s']:>8.2f}{r['rss_loaded_mb']:>8.0f}{r['peak_rss_mb']:>9.0f}"
                  f"{six['median_ms']:>12.1f} ({six['min_ms']:.0f}){one['median_ms']:>11.1f} ({one['min_ms']:.0f})")
    for frame in ("six_faces", "one_face"):
        medians = {e: statistics.median(r["frames"][frame]["median_ms"] for r in results[e])  # type: ignore[index]
                   for e in ENGINES}
        print(f"{frame}: torch/onnx = {medians['torch'] / medians['onnx']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
