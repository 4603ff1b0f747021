"""URLs shown in logs and `check` output: scheme, host and port only (a webhook's path is often its secret)."""

from __future__ import annotations

import pytest

from edge_client.redact import REDACTED, redact_url, scrub


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://admin:S3cretPass@192.168.1.20:554/Streaming/101", "rtsp://192.168.1.20:554"),
        ("https://hooks.example.com/services/x?token=T0kenValue#frag", "https://hooks.example.com"),
        ("https://hooks.slack.com/services/T0001/B0002/XXXXSECRET", "https://hooks.slack.com"),
        ("http://homeassistant.local:8123/api/webhook/facepipe-S3cretId", "http://homeassistant.local:8123"),
        ("http://user@[fe80::1]:8080/cam", "http://[fe80::1]:8080"),
        ("rtsp://u:p%40ss@cam.local/live", "rtsp://cam.local"),
        ("file://user:S3cretPass@localhost/videos/a.mp4", "file://localhost/videos/a.mp4"),
        ("http://cam.local/mjpeg", "http://cam.local"),
        ("0", "0"),
        (0, "0"),
        ("/dev/video0", "/dev/video0"),
        ("/srv/clips/front door.mp4", "/srv/clips/front door.mp4"),
    ],
)
def test_redact_url_keeps_scheme_host_port(url: object, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_removes_the_secrets_of_the_given_urls_wherever_they_appear() -> None:
    webhook = "http://127.0.0.1:1/hook?token=T0kenValue"
    camera = "rtsp://user:S3cret%21@10.0.0.5/x"
    # as requests words a refused connection: the path and query without the host
    message = ("HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: /hook?token=T0kenValue "
               f"(Caused by ...); camera {camera}; decoded S3cret!; other rtsp://bob:hunter2@cam/y")
    scrubbed = scrub(message, webhook, camera, None)
    for secret in ("T0kenValue", "S3cret", "hunter2", "bob:", "/hook"):
        assert secret not in scrubbed
    assert f"url: {REDACTED}?{REDACTED}" in scrubbed
    assert "camera rtsp://10.0.0.5;" in scrubbed and "other rtsp://cam/y" in scrubbed


def test_scrub_removes_a_secret_path_as_written_and_decoded() -> None:
    slack = "https://hooks.slack.com/services/T0001/B0002/XX%2FSECRET"
    message = ("Max retries exceeded with url: /services/T0001/B0002/XX%2FSECRET; "
               "decoded /services/T0001/B0002/XX/SECRET")
    scrubbed = scrub(message, slack)
    assert "SECRET" not in scrubbed and "T0001" not in scrubbed
