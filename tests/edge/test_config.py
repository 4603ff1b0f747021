"""Configuration: the example documents every key, env overrides, and bad files -> one line per problem, exit 78."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from edge_client.config import EX_CONFIG, ConfigError, EdgeConfig, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "edge.example.yaml"

GOOD = """\
device_id: porch
camera: {source: /dev/video0}
endpoint: {url: "https://abc.lambda-url.eu-west-1.on.aws/"}
responses: {queue_url: "https://sqs.eu-west-1.amazonaws.com/123456789012/answers"}
"""

# (file name, YAML text, a fragment one line of the message must contain)
BAD_FILES = [
    ("typo_top.yaml", GOOD + "devic_id: x\n", "unknown key 'devic_id'"),
    ("typo_nested.yaml", GOOD.replace("{source:", "{sourse: 0, source:"), "unknown key 'camera.sourse'"),
    ("secret.yaml", GOOD.replace('on.aws/"}', 'on.aws/", aws_secret_access_key: abc}'),
     "unknown key 'endpoint.aws_secret_access_key'; credentials never go in the config"),
    ("wrong_type.yaml", GOOD + "throttle: {max_fps: fast}\n", "'throttle.max_fps': Input should be a valid number"),
    ("out_of_range.yaml", GOOD + "throttle: {jpeg_quality: 150}\n", "'throttle.jpeg_quality'"),
    ("missing_url.yaml", GOOD.replace('url: "https://abc.lambda-url.eu-west-1.on.aws/"', "auth: none"),
     "missing required key 'endpoint.url'"),
    ("missing_section.yaml", "device_id: porch\ncamera: {source: 0}\n", "missing required key 'endpoint'"),
    ("empty.yaml", "", "missing required key 'device_id'"),
    ("not_mapping.yaml", "- device_id: porch\n", "the top level must be a mapping"),
    ("syntax.yaml", "device_id: porch\ncamera: [unclosed\n", "invalid YAML"),
    ("bad_device.yaml", GOOD.replace("porch", '"front door!"'), "'device_id': String should match pattern"),
    ("bad_url.yaml", GOOD.replace('"https://abc.lambda-url.eu-west-1.on.aws/"', "ftp://x"),
     "'endpoint.url': must be an http:// or https:// URL"),
    ("bad_source.yaml", GOOD.replace("/dev/video0", "[1, 2]"), "'camera.source': must be a USB index"),
    ("bad_auth.yaml", GOOD.replace('on.aws/"}', 'on.aws/", auth: password}'), "'endpoint.auth'"),
    ("bad_backoff.yaml", GOOD.replace("/dev/video0}", "/dev/video0, reconnect: {initial_s: 5, max_s: 1}}"),
     "'camera.reconnect': max_s must be >= initial_s"),
    ("bad_size.yaml", GOOD + "spool: {max_bytes: lots}\n", "'spool.max_bytes'"),
    ("bad_listen.yaml", GOOD + "metrics: {listen: localhost}\n", "'metrics.listen': must be host:port"),
    ("bad_reply_to.yaml", GOOD.replace('answers"}', 'answers", reply_to: other}'), "reply_to must name the queue"),
    ("short_poll.yaml", GOOD.replace('answers"}', 'answers", wait_s: 0}'), "'responses.wait_s'"),
    ("late_keepalive.yaml", GOOD + "throttle: {motion: {keepalive_s: 5}}\nevents: {max_gap_s: 4}\n",
     "throttle.motion.keepalive_s (5) must be below events.max_gap_s (4)"),
    ("bad_ramp.yaml", GOOD + "events: {full_support_distance: 1.2, no_support_distance: 1.1}\n",
     "events.no_support_distance must be above events.full_support_distance"),
    ("bad_ramp_widths.yaml", GOOD + "events: {support_narrow_px: 60, support_wide_px: 48}\n",
     "events.support_narrow_px must be below events.support_wide_px"),
]


def _fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        names.append(prefix + name)
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += _fields(annotation, prefix + name + ".")
    return names


def _keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for raw, value in data.items():
        key = "on" if raw is True else raw  # YAML 1.1 reads a bare `on:` as true; the config accepts it
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= _keys(value, prefix + key + ".")
    return keys


def test_example_config_loads_and_documents_every_key() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.device_id == "front-door"
    assert config.signing_region() == "eu-west-1"  # from the Function URL
    documented = _keys(yaml.safe_load(EXAMPLE.read_text()))
    assert set(_fields(EdgeConfig)) == documented


def test_every_field_has_a_description() -> None:
    def walk(model: type[BaseModel]) -> list[str]:
        missing = [f"{model.__name__}.{n}" for n, info in model.model_fields.items() if not info.description]
        for info in model.model_fields.values():
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
                missing += walk(info.annotation)
        return missing

    assert walk(EdgeConfig) == []


def test_outputs_on_key_and_old_keys() -> None:
    data = yaml.safe_load(GOOD + "outputs:\n  jsonl: {path: /tmp/a.jsonl, on: events}\n  log: false\n")
    config = parse_config(data, environ={})
    assert config.outputs.jsonl.on == "events" and config.outputs.log.enabled is False
    assert config.outputs.webhook.on == "events" and config.outputs.snapshots.on == "events"
    old = yaml.safe_load(GOOD + "outputs: {webhook_url: 'https://hook.example/'}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'outputs.webhook_url'; it is now 'outputs.webhook.url'"):
        parse_config(old, environ={})
    secret = yaml.safe_load(GOOD + "outputs: {mqtt: {host: broker, password: hunter2}}\n")
    with pytest.raises(ConfigError, match="password comes only from FACEPIPE_MQTT_PASSWORD"):
        parse_config(secret, environ={})
    with pytest.raises(ConfigError, match="'outputs.jsonl.on'"):
        parse_config(yaml.safe_load(GOOD + "outputs: {jsonl: {on: tracks}}\n"), environ={})


def test_env_overrides_nested_keys_types_and_null(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(GOOD)
    config = load_config(path, environ={
        "FACEPIPE_EDGE__DEVICE_ID": "garage",
        "FACEPIPE_EDGE__THROTTLE__MOTION__ENABLED": "false",
        "FACEPIPE_EDGE__THROTTLE__MAX_FPS": "0.5",
        "FACEPIPE_EDGE__SPOOL__MAX_BYTES": "1MiB",
        "FACEPIPE_EDGE__METRICS__LISTEN": "null",
        "FACEPIPE_EDGE__CAMERA__SOURCE": "rtsp://cam/stream",
        "UNRELATED": "1",
    })
    assert config.device_id == "garage"
    assert config.throttle.motion.enabled is False
    assert config.throttle.max_fps == 0.5
    assert int(config.spool.max_bytes) == 1024 * 1024
    assert config.metrics.listen is None
    assert config.camera.source == "rtsp://cam/stream"
    assert config.endpoint.url.startswith("https://abc.")  # untouched keys keep the file's value


def test_env_override_errors_name_the_variable() -> None:
    data = yaml.safe_load(GOOD)
    with pytest.raises(ConfigError, match=r"'throttle.max_fps' \(from FACEPIPE_EDGE__THROTTLE__MAX_FPS\)"):
        parse_config(data, environ={"FACEPIPE_EDGE__THROTTLE__MAX_FPS": "abc"})
    with pytest.raises(ConfigError, match=r"unknown key 'camera.colour' \(from FACEPIPE_EDGE__CAMERA__COLOUR\)"):
        parse_config(data, environ={"FACEPIPE_EDGE__CAMERA__COLOUR": "red"})


def test_region_required_when_nothing_names_one() -> None:
    data = yaml.safe_load(GOOD)
    data["endpoint"]["url"] = "http://127.0.0.1:8000/"
    data["responses"]["queue_url"] = "http://127.0.0.1:5000/123456789012/answers"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_CONFIG_FILE"] = "/nonexistent"
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the AWS chain reads the process environment
    try:
        with pytest.raises(ConfigError, match="'endpoint.region' is required"):
            parse_config(data, environ={})
        data["endpoint"]["region"] = "eu-north-1"
        assert parse_config(data, environ={}).signing_region() == "eu-north-1"
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize(("name", "text", "fragment"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_config_message_names_the_key(tmp_path: Path, name: str, text: str, fragment: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    lines = str(caught.value).splitlines()
    assert lines == caught.value.lines
    assert any(fragment in line for line in lines)
    assert all(line.startswith(f"config error in {path}") for line in lines)


def test_every_problem_is_reported_unknown_keys_first(tmp_path: Path) -> None:
    """An unknown key and two missing sections: three lines, the misspelt key (the one to fix first) on top."""
    path = tmp_path / "edge.yaml"
    path.write_text("device_id: porch\ncamera: {source: 0, fsp: 5}\nthrottle: {max_fps: 0}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    problems = [line.removeprefix(f"config error in {path}: ") for line in caught.value.lines]
    assert problems == [
        "unknown key 'camera.fsp'",
        "'throttle.max_fps': Input should be greater than 0 (got 0)",
        "missing required key 'endpoint'",
        "missing required key 'responses'",
    ]


def test_bad_configs_exit_78_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    """The real entry point, as systemd runs it: `python -m edge_client run --config FILE`."""
    cases = [*BAD_FILES, ("missing.yaml", None, "file not found")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPIPE_EDGE__")}
    for name, text, fragment in cases:
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        command = "check" if name.startswith("typo") else "run"
        result = subprocess.run([sys.executable, "-m", "edge_client", command, "--config", str(path)],
                                capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
        assert result.returncode == EX_CONFIG, (name, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert lines and all(line.startswith("facepipe-edge: config error") for line in lines), (name, result.stderr)
        assert any(fragment in line for line in lines) and "Traceback" not in result.stderr
        assert result.stdout == ""


def test_check_prints_every_problem_one_line_each(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text("device_id: porch\ncamera: {source: 0}\nendpiont: {url: 'https://x.example/'}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPIPE_EDGE__")}
    result = subprocess.run([sys.executable, "-m", "edge_client", "check", "--config", str(path)],
                            capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert result.returncode == EX_CONFIG and "Traceback" not in result.stderr
    prefix = f"facepipe-edge: config error in {path}: "
    assert result.stderr.splitlines() == [prefix + "unknown key 'endpiont'", prefix + "missing required key 'endpoint'",
                                          prefix + "missing required key 'responses'"]


@pytest.mark.parametrize("region", [None, "eu-west-1"], ids=["region-from-profile", "region-in-config"])
def test_missing_aws_profile_exits_78_with_one_line(tmp_path: Path, region: str | None) -> None:
    """AWS_PROFILE naming no profile (a typo in the unit's Environment=) is bad config, not a crash to restart."""
    data = yaml.safe_load(GOOD)
    data["endpoint"] = {"url": "http://127.0.0.1:9/", "region": region}
    data["responses"]["queue_url"] = "http://127.0.0.1:9/123456789012/answers"
    data["spool"] = {"directory": str(tmp_path / "spool")}
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(data))
    (tmp_path / "aws-config").write_text("[profile other]\nregion = eu-west-1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEPIPE_EDGE__", "AWS_"))}
    env.update(AWS_PROFILE="facepipe-edeg", AWS_CONFIG_FILE=str(tmp_path / "aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "aws-config"))
    result = subprocess.run([sys.executable, "-m", "edge_client", "run", "--config", str(path)],
                            capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert result.returncode == EX_CONFIG, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "profile (facepipe-edeg) could not be found" in lines[0], result.stderr
