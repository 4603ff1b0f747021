"""The daemon's whole output (stdout and stderr of `run` and `check`, as real processes) never shows the
camera's password or the webhook's token, while the lines about the camera and the webhook are there."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from edge_client.daemon import Daemon
from edge_client.server import MetricsServer
from tests.edge.conftest import free_port, make_config, wait_until
from tests.edge.test_tracker import recorded, replay
from tests.http_server import QuietHandler, serving
from tests.photos import REPO, packaged

PASSWORD, TOKEN = "S3cretPass", "T0kenValue"
CAMERA = f"rtsp://user:{PASSWORD}@127.0.0.1:1/x"  # nothing listens on port 1: connection refused
FILE_CAMERA = f"file://user:{PASSWORD}@localhost/nonexistent/clip.mp4"


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEPIPE_EDGE__", "AWS_"))}
    env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", **(extra or {})})
    return env


def _config(tmp_path: Path, webhook: str, **sections: Any) -> dict[str, Any]:
    unused = free_port()
    config: dict[str, Any] = {
        "device_id": "redaction-test",
        "camera": {"source": CAMERA, "reconnect": {"initial_s": 0.1, "max_s": 0.4}},
        "endpoint": {"url": f"http://127.0.0.1:{unused}/", "auth": "none", "region": "us-east-1",
                     "retries": {"max_attempts": 1}},
        "responses": {"queue_url": f"http://127.0.0.1:{unused}/000000000000/none", "wait_s": 1},
        "spool": {"directory": str(tmp_path / "spool")},
        "outputs": {"webhook": {"url": webhook}},
        "metrics": {"listen": None},
        "stop_timeout_s": 2,
        "log_level": "DEBUG",
    }
    config.update(sections)
    return config


def _write(tmp_path: Path, config: dict[str, Any], name: str = "edge.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def _run_for(path: Path, seconds: float, env: dict[str, str]) -> str:
    process = subprocess.Popen([sys.executable, "-m", "edge_client", "run", "--config", str(path)], cwd=REPO,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    return out + err


def _check(path: Path, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-m", "edge_client", "check", "--config", str(path)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=60)
    return result.stdout + result.stderr


def assert_no_secret(output: str) -> None:
    assert PASSWORD not in output and TOKEN not in output, output
    assert "user:" not in output, output


def test_a_camera_that_reconnects_logs_its_url_without_the_password(tmp_path: Path) -> None:
    # GIVEN a daemon with an RTSP camera with a password that never opens, and a webhook with a token
    webhook = f"http://127.0.0.1:{free_port()}/hook?token={TOKEN}"
    path = _write(tmp_path, _config(tmp_path, webhook))
    # WHEN it runs (start-up line, reconnect warnings, shutdown, summary) and when `check` tries it
    output = _run_for(path, 4, _env()) + _check(path, _env())
    # THEN the camera is named by scheme, host, port and path, and the password appears nowhere
    assert_no_secret(output)
    assert "running (camera 'rtsp://127.0.0.1:1'" in output
    assert "cannot open camera source 'rtsp://127.0.0.1:1'; retrying" in output
    assert "camera: FAILED: cannot open camera source 'rtsp://127.0.0.1:1'" in output
    assert "frames: captured 0" in output  # the run summary is part of the output checked


def test_a_file_source_in_url_form_and_a_bad_webhook_in_the_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path, _config(tmp_path, f"http://127.0.0.1:1/hook?token={TOKEN}",
                                    camera={"source": FILE_CAMERA}))
    output = _check(path, _env())
    assert_no_secret(output)
    assert "camera: FAILED: no such video file: file://localhost/nonexistent/clip.mp4" in output
    # a webhook URL the config refuses (not http/https) is quoted without its token
    bad = _write(tmp_path, _config(tmp_path, f"ftp://user:{PASSWORD}@127.0.0.1/hook?token={TOKEN}"), "bad.yaml")
    output = _check(bad, _env())
    assert_no_secret(output)
    assert "'outputs.webhook.url': must be an http:// or https:// URL (got 'ftp://127.0.0.1')" in output


class _Refuses(QuietHandler):
    """A webhook receiver that answers every post 500."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_webhook_failures_are_logged_without_the_token(local_stack: Any, reply_queue: str, tmp_path: Path) -> None:
    # GIVEN a daemon at DEBUG level against the local stack whose webhook, with its secret in the path and a
    # token in the query, answers 500
    folder = tmp_path / "camera"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (folder / name).symlink_to(packaged("face_recognition/obama2.jpg"))
    with serving(_Refuses) as host:
        webhook = f"{host}/services/T0001/B0002/{TOKEN}?token={TOKEN}"
        config = _config(
            tmp_path, webhook,
            camera={"source": str(folder), "loop": False, "fps": 0},
            throttle={"max_fps": 20, "motion": {"enabled": False}},
            endpoint={"url": local_stack.function_url, "region": local_stack.region},
            responses={"queue_url": reply_queue, "endpoint_url": local_stack.endpoint_url,
                       "reply_to": reply_queue.rsplit("/", 1)[-1], "wait_s": 1},
            outputs={"webhook": {"url": webhook, "on": "frames"}},
        )
        env = _env({k: v for k, v in local_stack.client_env().items() if k.startswith("AWS_")})
        # WHEN it delivers the folder and posts each answer to the webhook, which fails
        output = _run_for(_write(tmp_path, config), 120, env)
    # THEN each failure names the webhook by scheme, host and port, and its path and token appear nowhere
    # (not in urllib3's debug lines either)
    assert "answered 2" in output, output
    assert output.count(f"webhook {host} answered 500") == 2, output
    assert_no_secret(output)
    assert "T0001" not in output, output


@pytest.mark.parametrize("receiver", ["answers 500", "refuses connections"])
def test_a_webhook_whose_path_is_the_secret_shows_nowhere(tmp_path: Path, receiver: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a webhook URL whose path is its secret (as Slack's and Home Assistant's are), failing
    with serving(_Refuses) as base:
        host = base if receiver == "answers 500" else f"http://127.0.0.1:{free_port()}"
        webhook = f"{host}/services/T0001/B0002/{TOKEN}"
        daemon = Daemon(make_config(tmp_path, outputs={"webhook": {"url": webhook}}))
        server = MetricsServer(daemon.metrics, "127.0.0.1:0", daemon.health, daemon.status_source())
        status_page = f"http://127.0.0.1:{server.address[1]}"
        try:
            # WHEN a passage's events are posted to it, and the status page and metrics are read
            with caplog.at_level(logging.DEBUG, logger="edge_client"):
                for event in replay(recorded("one")):
                    daemon.parts.outputs.event(event, None)
                wait_until(lambda: "kind=" in _webhook_errors(status_page), 20, "the failures counted")
            status = requests.get(f"{status_page}/api/status", timeout=5).text
            metrics = requests.get(f"{status_page}/metrics", timeout=5).text
        finally:
            server.shutdown()
            daemon.parts.outputs.close()
    # THEN the failures are logged, named by scheme, host and port, and the path appears nowhere
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert f"webhook {host} " in logged
    for output in (logged, status, metrics):
        assert TOKEN not in output and "T0001" not in output and "/services" not in output, output
    assert f'"url": "{host}"' in status


def _webhook_errors(base: str) -> str:
    text = requests.get(f"{base}/metrics", timeout=5).text
    return "\n".join(line for line in text.splitlines() if line.startswith('facepipe_edge_output_errors_total{'))
