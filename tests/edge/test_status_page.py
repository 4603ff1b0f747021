"""The live status page in a real headless browser (Debian's chromium) against the daemon playing the demo
clip (filmed from the packaged real photos, as `make demo` does) on the real local stack: the page shows
the enrolled name, the counters that /metrics has, and never a secret. The screenshot is kept (pytest's
tmp_path; the path is printed)."""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from cloud.emulator.demo import FILMED
from cloud.emulator.demo_clip import write_pan_clip
from edge_client.config import parse_config
from edge_client.daemon import Daemon
from edge_client.status import public_config
from tests.browser import CHROMIUM, needs_chromium
from tests.edge.conftest import free_port, make_config, wait_until
from tests.photos import packaged

SECRET = "s3cret-token"


def chromium(url: str, *args: str, profile: Path) -> str:
    """Run headless chromium on `url` after its scripts had 6 s (virtual time) to poll the API."""
    result = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={profile}", "--virtual-time-budget=6000", *args, url],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_public_config_redacts_url_secrets() -> None:
    config = parse_config({
        "device_id": "porch", "camera": {"source": "rtsp://admin:hunter2@192.168.1.20/stream1"},
        "endpoint": {"url": "https://abc.lambda-url.eu-west-1.on.aws/"},
        "responses": {"queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/answers"},
        "outputs": {"webhook": {"url": f"https://hooks.example/abc?token={SECRET}"}},
    }, environ={})
    shown = public_config(config)
    assert shown["camera"]["source"] == "rtsp://192.168.1.20"
    assert shown["outputs"]["webhook"]["url"] == "https://hooks.example"
    assert shown["endpoint"]["url"] == "https://abc.lambda-url.eu-west-1.on.aws"
    assert "hunter2" not in str(shown) and SECRET not in str(shown)


@pytest.fixture
def running_daemon(local_stack: Any, reply_queue: str, tmp_path: Path) -> Iterator[tuple[Daemon, str]]:
    video = tmp_path / "demo.avi"
    write_pan_clip([packaged(name) for name in FILMED], video)
    port = free_port()
    config = make_config(
        tmp_path,
        camera={"source": str(video), "loop": True, "fps": None},  # the clip at its own 10 frames/s
        throttle={"max_fps": 2},
        endpoint={"url": local_stack.function_url, "auth": "aws_iam", "region": local_stack.region},
        responses={"queue_url": reply_queue, "endpoint_url": local_stack.endpoint_url,
                   "reply_to": reply_queue.rsplit("/", 1)[-1], "wait_s": 1},
        outputs={"webhook": {"url": f"http://127.0.0.1:{free_port()}/hook?token={SECRET}"}},
        metrics={"listen": f"127.0.0.1:{port}"},
    )
    daemon = Daemon(config)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        yield daemon, f"http://127.0.0.1:{port}"
    finally:
        daemon.request_stop()
        thread.join(timeout=30)


@needs_chromium
def test_status_page_in_a_headless_browser(running_daemon: tuple[Daemon, str], tmp_path: Path) -> None:
    daemon, base = running_daemon

    def ended_event() -> bool:
        try:
            return any(e["type"] == "end" for e in requests.get(f"{base}/api/events", timeout=5).json())
        except requests.ConnectionError:  # the daemon is still starting
            return False

    wait_until(ended_event, 60, "a passage that ended")
    events = requests.get(f"{base}/api/events", timeout=5).json()
    obama = next(e for e in events if e["name"] == "barack_obama")  # obama2.jpg, enrolled with obama.jpg
    assert obama["picture"]
    picture = requests.get(f"{base}/api/events/{obama['event_id']}.jpg", timeout=5)
    assert picture.headers["Content-Type"] == "image/jpeg" and picture.content[:2] == b"\xff\xd8"
    frame = requests.get(f"{base}/api/frame.jpg", timeout=5)
    assert frame.status_code == 200 and frame.content[:2] == b"\xff\xd8"
    status = requests.get(f"{base}/api/status", timeout=5).json()
    assert SECRET not in str(status) and status["config"]["outputs"]["webhook"]["url"].startswith("http://127.0.0.1:")
    person = next(p for p in status["presence"]["people"] if p["name"] == "barack_obama")  # presence, no MQTT
    assert person["home"] and person["camera"] == daemon.config.device_id and person["picture"]
    portrait = requests.get(f"{base}/api/people/{person['id']}.jpg", timeout=5)
    assert portrait.headers["Content-Type"] == "image/jpeg" and portrait.content[:2] == b"\xff\xd8"

    dom = chromium(f"{base}/", "--dump-dom", profile=tmp_path / "profile")
    assert re.search(r'<td class="name">barack_obama</td>', dom), dom[-3000:]
    assert re.search(r'<img src="/api/events/[0-9a-f]+\.jpg" alt="barack_obama">', dom)
    assert SECRET not in dom and re.search(r'id="updated">updated ', dom)  # the polls succeeded
    assert re.search(r'<tr id="person-barack_obama">.*?<img src="/api/people/barack_obama\.jpg\?at=[0-9.]+" '
                     r'alt="barack_obama">.*?<td class="ok presence">home</td>', dom), dom[-3000:]
    shown = {name: int(value) for name, value in re.findall(r'<td class="num" id="count-(\w+)">(\d+)</td>', dom)}
    assert {"captured", "gated", "sent", "answered", "unanswered", "spooled"} <= set(shown)
    assert shown["captured"] > 0 and shown["answered"] > 0
    # the page's counters are the ones /metrics has (read after the page: counters only grow)
    metrics = {s.name: s.value for f in text_string_to_metric_families(requests.get(f"{base}/metrics", timeout=5).text)
               for s in f.samples}
    assert shown["captured"] <= metrics["facepipe_edge_frames_captured_total"]
    assert shown["answered"] <= metrics["facepipe_edge_frames_answered_total"]
    assert shown["captured"] >= status["counts"]["captured"]

    screenshot = tmp_path / "status-page.png"
    chromium(f"{base}/", f"--screenshot={screenshot}", "--window-size=1280,1100", profile=tmp_path / "profile")
    image = cv2.imread(str(screenshot))
    assert image is not None and image.shape[:2] == (1100, 1280) and float(image.std()) > 10
    print(f"\nstatus page screenshot: {screenshot}")


def test_status_page_is_off_the_network_by_default(tmp_path: Path) -> None:
    assert make_config(tmp_path, metrics={"listen": "127.0.0.1:9108"}).metrics.listen == "127.0.0.1:9108"
    default = parse_config({"device_id": "x", "camera": {"source": 0}, "endpoint": {"url": "https://a.example/"},
                            "responses": {"queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q"}}, environ={})
    assert default.metrics.listen == "127.0.0.1:9108"
