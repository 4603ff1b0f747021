"""Who the status server answers, over real HTTP: DNS rebinding (a foreign `Host`) gets 421 on every path, and off
loopback a token is required (bearer header for scrapers, a cookie a browser gets from `/?token=`); the daemon refuses
to start with a non-loopback `listen` and no token."""

from __future__ import annotations

import http.client
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import yaml

from edge_client.config import ConfigError, parse_config
from edge_client.daemon import Daemon
from edge_client.server import MetricsServer
from tests.browser import CHROMIUM, needs_chromium
from tests.edge.conftest import free_port, make_config, wait_until
from tests.photos import REPO, packaged

TOKEN = "Status-Token_0123456789abcdef"
PATHS = ["/", "/api/status", "/api/events", "/api/frame.jpg", "/api/events/0123abcd.jpg", "/metrics", "/healthz"]
Serve = Callable[..., str]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """A daemon's real status server (its status source, metrics and health) on a free loopback port."""
    started: list[MetricsServer] = []

    def start(allowed_hosts: tuple[str, ...] = (), token: str | None = None) -> str:
        daemon = Daemon(make_config(tmp_path))
        server = MetricsServer(daemon.metrics, "127.0.0.1:0", daemon.health, daemon.status_source(),
                               allowed_hosts, token)
        started.append(server)
        return f"http://127.0.0.1:{server.address[1]}"

    yield start
    for server in started:
        server.shutdown()


def _get(url: str, host: str | None = None, headers: dict[str, str] | None = None,
         cookies: dict[str, str] | None = None) -> requests.Response:
    headers = {**(headers or {}), **({"Host": host} if host else {})}
    return requests.get(url, headers=headers, cookies=cookies, timeout=5, allow_redirects=False)


@pytest.mark.parametrize("path", PATHS)
def test_a_rebound_domain_gets_421_on_every_path(serve: Serve, path: str) -> None:
    base = serve()
    port = base.rsplit(":", 1)[1]
    # a page of attacker.example rebound to 127.0.0.1: its requests name attacker.example
    for host in ("attacker.example", f"attacker.example:{port}", f"localhost:{int(port) + 1}", "localhost",
                 f"localhost.attacker.example:{port}", "a b"):
        response = _get(base + path, host)
        assert response.status_code == 421, (host, response.status_code)
        assert b"misdirected" in response.content
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
        assert _get(base + path, host).status_code in (200, 404, 503), host  # answered (a picture may be absent)
    no_host = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
    no_host.putrequest("GET", path, skip_host=True)
    no_host.endheaders()
    assert no_host.getresponse().status == 421
    no_host.close()


def test_configured_hosts_are_answered(serve: Serve) -> None:
    base = serve(allowed_hosts=("camera.lan", "proxy.example:443"))
    port = base.rsplit(":", 1)[1]
    assert _get(base + "/api/status", f"camera.lan:{port}").status_code == 200
    assert _get(base + "/api/status", "camera.lan").status_code == 200  # any port when the entry has none
    assert _get(base + "/api/status", "proxy.example:443").status_code == 200
    assert _get(base + "/api/status", f"proxy.example:{port}").status_code == 421
    assert _get(base + "/api/status", f"camera.lan.evil.example:{port}").status_code == 421


@pytest.mark.parametrize("path", PATHS)
def test_with_a_token_every_path_needs_it(serve: Serve, path: str) -> None:
    base = serve(token=TOKEN)
    assert _get(base + path).status_code == 401
    assert _get(base + path, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    assert _get(base + path, cookies={"other": TOKEN}).status_code == 401
    assert _get(base + path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code in (200, 404, 503)


def test_a_browser_opens_the_page_once_with_the_token(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    base = serve(token=TOKEN)
    port = base.rsplit(":", 1)[1]
    assert _get(f"{base}/?token=wrong-token-0123456789").status_code == 401
    with caplog.at_level(logging.DEBUG, logger="edge_client"):
        opened = _get(f"{base}/?token={TOKEN}")
    # a cookie only this server's page sends (HttpOnly, Lax), and a redirect that takes the token out of the URL
    assert opened.status_code == 303 and opened.headers["Location"] == "/"
    cookie = opened.headers["Set-Cookie"]
    assert cookie.startswith(f"facepipe_status_{port}={TOKEN};") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    with requests.Session() as browser:
        assert browser.get(f"{base}/?token={TOKEN}", timeout=5).url == f"{base}/"
        for path in ("/", "/api/status", "/api/events", "/metrics"):
            assert browser.get(base + path, timeout=5).status_code == 200, path
    assert TOKEN not in caplog.text  # the request log drops the query


def test_metrics_are_scraped_with_a_bearer_token(serve: Serve) -> None:
    base = serve(token=TOKEN)
    scraped = _get(base + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert scraped.status_code == 200 and "facepipe_edge_frames_captured_total" in scraped.text
    refused = _get(base + "/metrics")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")


def _base(**metrics: object) -> dict[str, object]:
    return {"device_id": "x", "camera": {"source": 0}, "endpoint": {"url": "https://a.example/", "region": "eu-west-1"},
            "responses": {"queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q"}, "metrics": metrics}


@pytest.mark.parametrize("listen", ["0.0.0.0:9108", ":9108", "[::]:9108", "192.168.1.20:9108", "camera.lan:9108"])
def test_a_listen_off_loopback_needs_a_token(listen: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'metrics.listen' .* is not loopback: .* needs a token"):
        parse_config(_base(listen=listen), environ={})
    assert parse_config(_base(listen=listen, token=TOKEN), environ={}).metrics.status_token() == TOKEN
    from_env = parse_config(_base(listen=listen), environ={"FACEPIPE_EDGE__METRICS__TOKEN": TOKEN})
    assert from_env.metrics.status_token() == TOKEN
    (tmp_path / "token").write_text(TOKEN + "\n")
    from_file = parse_config(_base(listen=listen, token_file=str(tmp_path / "token")), environ={})
    assert from_file.metrics.status_token() == TOKEN


@pytest.mark.parametrize("listen", ["127.0.0.1:9108", "localhost:9108", "[::1]:9108", "127.0.0.2:9108", None])
def test_loopback_needs_no_token(listen: str | None) -> None:
    assert parse_config(_base(listen=listen), environ={}).metrics.status_token() is None


def test_token_errors_never_quote_it(tmp_path: Path) -> None:
    short = "tooshort"
    with pytest.raises(ConfigError, match=r"'metrics.token': must be 16-256 characters") as caught:
        parse_config(_base(token=short), environ={})
    assert short not in str(caught.value)
    with pytest.raises(ConfigError, match="set one, not both"):
        parse_config(_base(token=TOKEN, token_file=str(tmp_path / "t")), environ={})
    with pytest.raises(ConfigError, match="'metrics.token_file': cannot read"):
        parse_config(_base(listen="0.0.0.0:9108", token_file=str(tmp_path / "missing")), environ={})
    with pytest.raises(ConfigError, match="'metrics.allowed_hosts'"):
        parse_config(_base(allowed_hosts=["http://camera.lan/"]), environ={})
    shown = parse_config(_base(token=TOKEN), environ={})
    assert TOKEN not in repr(shown) and "token" not in shown.model_dump(mode="json")["metrics"]


def test_check_refuses_a_listen_off_loopback_without_a_token(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump(_base(listen="0.0.0.0:9108")))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "edge_client", "check", "--config", str(config)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78, result.stderr
    assert "'metrics.listen' (0.0.0.0:9108) is not loopback" in result.stderr and "needs a token" in result.stderr


@pytest.fixture
def daemon_on_all_interfaces(tmp_path: Path) -> Iterator[int]:
    """The daemon as it runs, listening on every interface with a token (a folder camera, an endpoint that is down)."""
    folder = tmp_path / "camera"
    folder.mkdir()
    (folder / "a.jpg").symlink_to(packaged("face_recognition/obama2.jpg"))
    port = free_port()
    config = make_config(tmp_path, camera={"source": str(folder), "loop": True, "fps": 1},
                         metrics={"listen": f"0.0.0.0:{port}", "token": TOKEN, "allowed_hosts": ["camera.lan"]})
    daemon = Daemon(config)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        daemon.request_stop()
        thread.join(timeout=30)


def test_the_running_daemon_checks_host_and_token(daemon_on_all_interfaces: int) -> None:
    base = f"http://127.0.0.1:{daemon_on_all_interfaces}"

    def serving() -> bool:
        try:
            return _get(base + "/healthz").status_code == 401
        except requests.ConnectionError:
            return False

    wait_until(serving, 20, "the status server")
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert _get(base + "/api/status", "attacker.example", headers=bearer).status_code == 421
    assert _get(base + "/api/status", headers=bearer).status_code == 200
    assert _get(base + "/api/status", "camera.lan", headers=bearer).status_code == 200


@needs_chromium
def test_the_page_in_a_browser_opened_with_the_token(serve: Serve, tmp_path: Path) -> None:
    base = serve(token=TOKEN)
    result = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=4000", "--dump-dom",
         f"{base}/?token={TOKEN}"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # the page loaded and its polls of /api/status and /api/events were answered (with the cookie)
    assert 'id="updated">updated ' in result.stdout, result.stdout[-3000:]
    assert TOKEN not in result.stdout
