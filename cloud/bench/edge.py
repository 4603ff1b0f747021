"""Edge benchmark: the daemon's CPU per captured frame with and without motion gating, and
end-to-end latency (capture to answer) on the local stack. Prints figures; asserts nothing.

Run: `make bench` or `.venv/bin/python -m cloud.bench.edge [--video CLIP]`. The default clip is the shared
real video when ../shared exists, else the demo clip filmed from the packaged photos.

The local stack runs in this process; the daemon runs as its own process (`python -m edge_client
run`), so its CPU figure (getrusage of the daemon, every thread, from the start of the pipeline)
is the edge's alone. The clip plays at its own frame rate, like a camera.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import cv2
import yaml

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VIDEO = REPO.parent / "shared" / "testdata" / "faces" / "video" / "short_hamilton_clip.mp4"
DEFAULT_WEIGHTS = REPO / ".cache" / "models" / "facenet-casia-webface.pt"
DEFAULT_PHOTOS = REPO / ".cache" / "photos"

# (video, label, throttle section); "clip" is the real footage, "still" one real photo of a face held still (tracked:
# the keep-alive sends a frame a second; without it, one frame).
SCENARIOS = [
    ("clip", "max_fps 2, motion on", {"max_fps": 2, "motion": {"enabled": True}}),
    ("clip", "max_fps 2, motion off", {"max_fps": 2, "motion": {"enabled": False}}),
    ("clip", "max_fps 30, motion on", {"max_fps": 30, "motion": {"enabled": True}}),
    ("clip", "max_fps 30, motion off", {"max_fps": 30, "motion": {"enabled": False}}),
    ("still", "max_fps 2, motion on", {"max_fps": 2, "motion": {"enabled": True}}),
    ("still", "max_fps 2, no keep-alive", {"max_fps": 2, "motion": {"enabled": True, "keepalive_s": None}}),
    ("still", "max_fps 2, motion off", {"max_fps": 2, "motion": {"enabled": False}}),
]


def still_video(photo: Path, frames: int, path: Path) -> Path:
    """One real photo written `frames` times at 29.97 fps (MJPG): a camera watching a still scene."""
    image = cv2.imread(str(photo))
    if image is None:
        raise SystemExit(f"cannot read {photo}")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 29.97, (image.shape[1], image.shape[0]))
    for _ in range(frames):
        writer.write(image)
    writer.release()
    return path


def decode_only_cpu(video: Path) -> tuple[float, int]:
    """CPU seconds and frames for just decoding the clip: the floor under any pipeline."""
    start = time.process_time()
    capture, frames = cv2.VideoCapture(str(video)), 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    return time.process_time() - start, frames


def run_daemon(stack: Any, video: Path, throttle: dict[str, Any], workdir: Path) -> dict[str, float]:
    sqs = stack.client("sqs")
    name = f"{stack.reply_to_prefix}bench-{uuid.uuid4().hex[:8]}"
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    config = {
        "device_id": "bench",
        "camera": {"source": str(video), "fps": None},
        "throttle": throttle,
        "endpoint": {"url": stack.function_url, "region": stack.region},
        "responses": {"queue_url": queue_url, "endpoint_url": stack.endpoint_url, "reply_to": name, "wait_s": 1},
        "spool": {"directory": str(workdir / f"spool-{name}")},
        "outputs": {"log": False},
        "metrics": {"listen": None},
        "log_level": "WARNING",
    }
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPIPE_EDGE__")}
    env.update({k: v for k, v in stack.client_env().items() if k.startswith("AWS_")})
    result = subprocess.run([sys.executable, "-m", "edge_client", "run", "--config", str(path)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=600, check=True)
    sqs.delete_queue(QueueUrl=queue_url)
    line = result.stdout.strip().splitlines()[-1]
    figures = {k: float(v) for k, v in re.findall(r"(captured|sent|answered|unanswered|still|busy) (\d+)", line)}
    figures["cpu_s"] = float(re.search(r"CPU ([\d.]+)s", line).group(1))  # type: ignore[union-attr]
    for key, pattern in (("median", r"median ([\d.]+)s"), ("p95", r"p95 ([\d.]+)s")):
        match = re.search(pattern, line)
        figures[key] = float(match.group(1)) if match else float("nan")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO if DEFAULT_VIDEO.is_file() else None)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("facepipe-detection", "facepipe-recognition", "cloud", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    from cloud.emulator.demo import FILMED
    from cloud.emulator.demo_clip import write_pan_clip
    from cloud.emulator.stack import LocalStack, StackConfig

    with tempfile.TemporaryDirectory() as tmp, \
            LocalStack(StackConfig(weights_path=args.weights, function_log=Path(tmp) / "functions.log")) as stack:
        stack.start_every_worker()  # the max_fps 30 runs use every worker: none starts cold inside a run
        if args.video is None:
            args.video = Path(tmp) / "demo-clip.avi"
            write_pan_clip([args.photos / name for name in FILMED], args.video)
        _, frames = decode_only_cpu(args.video)
        photo = args.photos / "matplotlib" / "grace_hopper.jpg"
        videos = {"clip": args.video, "still": still_video(photo, frames, Path(tmp) / "still.avi")}
        for kind, video in videos.items():
            cpu, count = decode_only_cpu(video)
            print(f"{kind}: {video.name}, {count} frames; decode alone {cpu / count * 1000:.2f} ms CPU/frame")
        stack.enroll({"barack_obama": [args.photos / "face_recognition" / "obama.jpg"]})
        print(f"{'video':6} {'throttle':24} {'captured':>8} {'sent':>5} {'still':>5} {'busy':>5} {'answered':>8} "
              f"{'ms CPU/frame':>12} {'median s':>8} {'p95 s':>6}")
        for kind, label, throttle in SCENARIOS:
            f = run_daemon(stack, videos[kind], throttle, Path(tmp))
            print(f"{kind:6} {label:24} {f['captured']:8.0f} {f['sent']:5.0f} {f.get('still', 0):5.0f} "
                  f"{f.get('busy', 0):5.0f} {f['answered']:8.0f} {f['cpu_s'] / f['captured'] * 1000:12.2f} "
                  f"{f['median']:8.3f} {f['p95']:6.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
