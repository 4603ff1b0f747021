"""`make demo`: the whole loop on one machine.

Starts the local stack, enrolls demo people, films a clip from real sample photos (or takes --video),
runs the edge daemon on it as a file camera in its own process (as on a Raspberry Pi) and prints the
events as people arrive and leave (one per passage, not a line per frame). Once everyone has left it
takes a screenshot of the daemon's status page (headless chromium, when installed); after the clip, the daemon's
summary, then the faces library page on the demo stack (`facepipe faces serve`), its URL printed last: served until
Ctrl-C in a terminal. Under .cache/demo: events.jsonl, the events' best pictures (snapshots/), status-page.png and
faces-page.png.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import requests
import yaml

from cloud.emulator.demo_clip import BACKDROP, write_pan_clip
from cloud.emulator.stack import DEFAULT_MODELS, DEFAULT_WEIGHTS, LocalStack, StackConfig
from cloud.functions.enrollment import people_from_dir

DEVICE_ID = "demo-cam"

# Packaged sample photos (tools/fetch_sample_photos.py): who is enrolled, and what the camera sees.
ENROLLED = {
    "barack_obama": ["face_recognition/obama.jpg"],
    "joe_biden": ["face_recognition/biden.jpg"],
    "grace_hopper": ["matplotlib/grace_hopper.jpg"],
    "eileen_collins": ["skimage/astronaut.png"],
}
# Other photos of an enrolled person, and a group of six people nobody enrolled.
FILMED = ["face_recognition/obama2.jpg", "insightface/t1.jpg", "face_recognition/obama3.jpg"]
# After the clip, the empty backdrop is held this long: everyone has left (tracks end events.max_gap_s after the
# last sighting) while the daemon still runs, so its status page can be photographed. Holding the clip's last
# frame instead would keep whoever is still in it tracked, by the motion gate's keep-alive, to the end.
EMPTY_TAIL_S = 8.0


def edge_config(stack: LocalStack, video: Path, workdir: Path, port: int) -> dict:
    """The daemon's YAML: a file camera that plays the clip once, pointed at the local stack."""
    return {
        "device_id": DEVICE_ID,
        "camera": {"source": str(video), "loop": False},
        "throttle": {"max_fps": 3.0, "max_in_flight": 4},
        "endpoint": {"url": stack.function_url, "auth": stack.config.auth, "region": stack.region},
        "responses": {"queue_url": stack.response_queue_url, "endpoint_url": stack.endpoint_url, "wait_s": 1},
        "spool": {"directory": str(workdir / "spool")},
        "outputs": {"log": {"on": "events"}, "jsonl": {"path": str(workdir / "events.jsonl"), "on": "events"},
                    "snapshots": {"directory": str(workdir / "snapshots"), "on": "events"}},
        "metrics": {"listen": f"127.0.0.1:{port}"},
    }


def with_empty_tail(video: Path, out: Path, seconds: float) -> int:
    """The video, then the empty backdrop held `seconds` (MJPG .avi); returns the frames of the video."""
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    writer: cv2.VideoWriter | None = None
    frames, size = 0, None
    while True:
        ok, image = capture.read()
        if not ok:
            break
        if writer is None:
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"MJPG"), fps, (image.shape[1], image.shape[0]))
        writer.write(image)
        frames, size = frames + 1, image.shape
    capture.release()
    if writer is None or size is None:
        raise RuntimeError(f"cannot read any frame of {video}")
    empty = np.full(size, BACKDROP, dtype=np.uint8)
    for _ in range(round(seconds * fps)):
        writer.write(empty)
    writer.release()
    return frames


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def screenshot_when_everyone_left(daemon: subprocess.Popen[bytes], base: str, frames: int, out: Path) -> str:
    """Once the clip (not its still tail) was captured and no track is open: the status page as a PNG."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return "no screenshot of the status page: chromium is not installed (apt-get install chromium)"
    while daemon.poll() is None:
        try:
            status = requests.get(f"{base}/api/status", timeout=2).json()
        except requests.RequestException:  # still starting
            status = None
        if status and status["counts"]["captured"] >= frames and not status["tracks"]:
            profile = out.parent / "chromium-profile"
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            f"--user-data-dir={profile}", "--virtual-time-budget=4000", "--window-size=1280,1100",
                            f"--screenshot={out}", f"{base}/"], capture_output=True, timeout=120)
            return f"status page screenshot: {out}" if out.is_file() else "the status page screenshot failed"
        time.sleep(0.5)
    return "no screenshot: the daemon ended before everyone had left"


def run_demo(config: StackConfig, photos: Path, video: Path | None, enroll_dir: Path | None, workdir: Path) -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    if video is None:
        video = workdir / "clip.avi"
        frames = write_pan_clip([photos / name for name in FILMED], video)
        print(f"demo clip: {video} ({frames} frames filmed from {', '.join(FILMED)})", flush=True)
    people = people_from_dir(enroll_dir) if enroll_dir else {
        name: [photos / rel for rel in files] for name, files in ENROLLED.items()
    }
    # The handlers' JSON logs and EMF metrics are for CloudWatch: they go to a file; the demo shows the edge's view.
    function_log = workdir / "functions.log"
    function_log.unlink(missing_ok=True)
    # The SQS trigger's batch size and window are template.yaml's defaults, as deployed.
    config.function_log = function_log
    with LocalStack(config) as stack:
        print(f"local stack ready in {stack.timings['total_s']:.1f} s: {stack.function_url} "
              f"(engine {stack.engine_summary()}; the functions' logs: {function_log})", flush=True)
        report = stack.enroll(people)
        print(f"enrolled {report.photos} photo(s) of {', '.join(report.enrolled)}"
              + "".join(f"; skipped {skip}" for skip in report.skipped), flush=True)
        played = workdir / "played.avi"
        frames = with_empty_tail(video, played, EMPTY_TAIL_S)
        port = _free_port()
        config_path = workdir / "edge.yaml"
        config_path.write_text(yaml.safe_dump(edge_config(stack, played, workdir, port), sort_keys=False))
        for stale in [*(workdir / "snapshots").glob("*.jpg"), workdir / "events.jsonl", workdir / "status-page.png"]:
            stale.unlink(missing_ok=True)  # what the demo leaves is this run's
        print(f"edge daemon: facepipe-edge run --config {config_path}; status page http://127.0.0.1:{port}/",
              flush=True)
        # Credentials reach the daemon the standard way (environment), never through its YAML.
        env = {**os.environ, **{k: v for k, v in stack.client_env().items() if k.startswith("AWS_")}}
        daemon = subprocess.Popen([sys.executable, "-m", "edge_client", "run", "--config", str(config_path)], env=env)
        try:
            note = screenshot_when_everyone_left(daemon, f"http://127.0.0.1:{port}", frames,
                                                 workdir / "status-page.png")
            daemon.wait()
        finally:
            if daemon.poll() is None:
                daemon.terminate()
                daemon.wait(timeout=30)
        print(note, flush=True)
        print(f"events: {workdir / 'events.jsonl'}; their best pictures: {workdir / 'snapshots'}", flush=True)
        serve_faces_library(stack, workdir / "faces-page.png")
    return daemon.returncode


def serve_faces_library(stack: LocalStack, screenshot: Path) -> None:
    """The faces library page (`facepipe faces serve`) on the demo stack, its URL printed last: in a terminal it
    serves until Ctrl-C (the stack lives as long); without one (CI, tests) it is photographed and the demo ends."""
    import getpass
    import threading

    from cloud.functions.settings import get_settings
    from cloud.operator.faces.actions import Library
    from cloud.operator.faces.page import FacesServer

    server = FacesServer(Library(stack.bucket, stack.gallery_uri, get_settings().match_threshold, getpass.getuser()))
    thread = threading.Thread(target=server.serve_forever, name="faces-page", daemon=True)
    thread.start()
    try:
        browser = shutil.which("chromium") or shutil.which("chromium-browser")
        if browser is not None:
            screenshot.unlink(missing_ok=True)
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            f"--user-data-dir={screenshot.parent / 'chromium-profile'}", "--window-size=1280,1100",
                            f"--screenshot={screenshot}", server.url], capture_output=True, timeout=120)
            if screenshot.is_file():
                print(f"faces library screenshot: {screenshot}", flush=True)
        print(f"faces library: {server.url} (`facepipe faces serve` on the demo stack: name the unknown faces, "
              f"fix wrong ones, forget people)", flush=True)
        if sys.stdin.isatty():
            print("Ctrl-C ends the demo and its stack", flush=True)
            while thread.is_alive():
                thread.join(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["onnx", "torch"], default="onnx",
                        help="what runs the networks (default %(default)s, as the functions' image)")
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS,
                        help="the exported .onnx networks, engine onnx (make models; default %(default)s)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                        help="InceptionResnetV1 weights file, engine torch (default %(default)s)")
    parser.add_argument("--photos", type=Path, required=True, help="packaged sample photos (make photos)")
    parser.add_argument("--video", type=Path, default=None, help="play this video instead of the built clip")
    parser.add_argument("--enroll-dir", type=Path, default=None, help="enroll these people (one folder each)")
    parser.add_argument("--workdir", type=Path, default=Path(".cache/demo"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = StackConfig(engine=args.engine, models_dir=args.models_dir, weights_path=args.weights)
    return run_demo(config, args.photos, args.video, args.enroll_dir, args.workdir)


if __name__ == "__main__":
    sys.exit(main())
