"""`make demo`: the whole loop on one machine.

Starts the local stack, enrolls demo people, films a clip from real sample photos (or takes --video),
runs the edge daemon on it as a file camera in its own process (as on a Raspberry Pi), prints the
names as answers arrive, and ends after the clip with the daemon's summary.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

import yaml

from cloud.enrollment import people_from_dir
from cloud.local.demo_clip import write_pan_clip
from cloud.local.stack import LocalStack, StackConfig

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


def edge_config(stack: LocalStack, video: Path, workdir: Path) -> dict:
    """The daemon's YAML: a file camera that plays the clip once, pointed at the local stack."""
    return {
        "device_id": DEVICE_ID,
        "camera": {"source": str(video), "loop": False},
        "throttle": {"max_fps": 3.0, "max_in_flight": 4},
        "endpoint": {"url": stack.function_url, "auth": stack.config.auth, "region": stack.region},
        "responses": {"queue_url": stack.response_queue_url, "endpoint_url": stack.endpoint_url, "wait_s": 1},
        "spool": {"directory": str(workdir / "spool")},
        "outputs": {"log": True, "jsonl": str(workdir / "answers.jsonl"), "snapshots_dir": str(workdir / "snapshots")},
        "metrics": {"listen": None},
    }


def run_demo(weights: Path, photos: Path, video: Path | None, enroll_dir: Path | None, workdir: Path) -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    if video is None:
        video = workdir / "clip.avi"
        frames = write_pan_clip([photos / name for name in FILMED], video)
        print(f"demo clip: {video} ({frames} frames filmed from {', '.join(FILMED)})", flush=True)
    people = people_from_dir(enroll_dir) if enroll_dir else {
        name: [photos / rel for rel in files] for name, files in ENROLLED.items()
    }
    # The handlers' JSON logs and EMF metrics are for CloudWatch; the demo shows the edge's view.
    quiet = {"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}
    # The SQS trigger's batch size and window are template.yaml's defaults, as deployed.
    with LocalStack(StackConfig(weights_path=weights, extra_env=quiet)) as stack:
        print(f"local stack ready in {stack.timings['total_s']:.1f} s: {stack.function_url}", flush=True)
        report = stack.enroll(people)
        print(f"enrolled {report.photos} photo(s) of {', '.join(report.enrolled)}"
              + "".join(f"; skipped {skip}" for skip in report.skipped), flush=True)
        config_path = workdir / "edge.yaml"
        config_path.write_text(yaml.safe_dump(edge_config(stack, video, workdir), sort_keys=False))
        print(f"edge daemon: facepipe-edge run --config {config_path}", flush=True)
        # Credentials reach the daemon the standard way (environment), never through its YAML.
        env = {**os.environ, **{k: v for k, v in stack.client_env().items() if k.startswith("AWS_")}}
        daemon = subprocess.run([sys.executable, "-m", "edge_client", "run", "--config", str(config_path)], env=env)
    print(f"answers: {workdir / 'answers.jsonl'}; annotated snapshots: {workdir / 'snapshots'}", flush=True)
    return daemon.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--photos", type=Path, required=True, help="packaged sample photos (make photos)")
    parser.add_argument("--video", type=Path, default=None, help="play this video instead of the built clip")
    parser.add_argument("--enroll-dir", type=Path, default=None, help="enroll these people (one folder each)")
    parser.add_argument("--workdir", type=Path, default=Path(".cache/demo"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    return run_demo(args.weights, args.photos, args.video, args.enroll_dir, args.workdir)


if __name__ == "__main__":
    sys.exit(main())
