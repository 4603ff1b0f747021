"""config/facepipe-edge.service: required directives, agreement with the daemon's config, systemd-analyze."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_client.config import EX_CONFIG, EdgeConfig, SpoolConfig
from tests.photos import REPO

UNIT = REPO / "config" / "facepipe-edge.service"
EXEC_START = "/opt/facepipe/venv/bin/facepipe-edge run --config /etc/facepipe/edge.yaml"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's INI dialect: repeated keys accumulate (configparser would reject them)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"directive outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def _one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section].get(key, [])
    assert len(values) == 1, f"[{section}] {key}= appears {len(values)} times"
    return values[0]


def test_required_directives(unit: dict[str, dict[str, list[str]]]) -> None:
    expected = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30", "Restart": "on-failure",
        "User": "facepipe", "SupplementaryGroups": "video", "StateDirectory": "facepipe", "ExecStart": EXEC_START,
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes", "DevicePolicy": "closed",
    }
    for key, value in expected.items():
        assert _one(unit, "Service", key) == value, key
    assert set(_one(unit, "Service", "RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "char-video4linux rw" in unit["Service"]["DeviceAllow"]  # every /dev/videoN
    assert "PrivateDevices" not in unit["Service"]  # would hide the cameras
    assert _one(unit, "Install", "WantedBy") == "multi-user.target"


def test_no_credentials_in_the_unit(unit: dict[str, dict[str, list[str]]]) -> None:
    for value in unit["Service"].get("Environment", []):
        assert not value.startswith(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")), value


def test_agrees_with_the_daemon_config(unit: dict[str, dict[str, list[str]]]) -> None:
    # Bad config exits EX_CONFIG: systemd must not restart-loop on it.
    assert _one(unit, "Service", "RestartPreventExitStatus") == str(EX_CONFIG)
    # The default spool lies inside a writable path (everything else is read-only under ProtectSystem=strict).
    writable = [Path(p.lstrip("-")) for value in unit["Service"]["ReadWritePaths"] for p in value.split()]
    spool = SpoolConfig().directory
    assert any(spool.is_relative_to(path) for path in writable), (spool, writable)
    # systemd's stop timeout leaves room for the daemon's own drain deadline.
    stop_timeout = EdgeConfig.model_fields["stop_timeout_s"].default
    assert float(_one(unit, "Service", "TimeoutStopSec")) > stop_timeout


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze missing in CI: install the systemd package")
        pytest.skip("systemd-analyze not installed (the directive checks above still ran)")
    return tool


def _runnable_copy(tmp_path: Path, text: str) -> Path:
    """The unit verbatim except ExecStart's program, pointed at a stub: verify insists that it exists."""
    stub = tmp_path / "facepipe-edge"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    copy = tmp_path / "facepipe-edge.service"
    copy.write_text(text.replace("ExecStart=/opt/facepipe/venv/bin/facepipe-edge ", f"ExecStart={stub} "))
    return copy


def _verify(tool: str, unit_file: Path) -> tuple[int, list[str]]:
    result = subprocess.run([tool, "verify", "--man=no", str(unit_file)], capture_output=True, text=True,
                            timeout=60)
    # Only complaints about our file count (a host may have its own broken units).
    ours = [line for line in (result.stdout + result.stderr).splitlines() if unit_file.name in line]
    return result.returncode, ours


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    returncode, complaints = _verify(tool, _runnable_copy(tmp_path, UNIT.read_text()))
    assert returncode == 0 and complaints == [], complaints


def test_documented_credential_lines_are_valid(tmp_path: Path) -> None:
    # The commented-out credential options (drop-in material, docs/raspberry-pi.md) verify too.
    tool = _systemd_analyze()
    text = UNIT.read_text()
    enabled = re.sub(r"^#((?:LoadCredential|Environment)=)", r"\1", text, flags=re.MULTILINE)
    assert enabled.count("LoadCredential=") == 1 and "AWS_SHARED_CREDENTIALS_FILE=%d/" in enabled
    returncode, complaints = _verify(tool, _runnable_copy(tmp_path, enabled))
    assert returncode == 0 and complaints == [], complaints


def test_systemd_analyze_verify_catches_a_bad_directive(tmp_path: Path) -> None:
    # The check above can fail: a typo in a value is reported.
    tool = _systemd_analyze()
    broken = UNIT.read_text().replace("Type=notify", "Type=notfy")
    _, complaints = _verify(tool, _runnable_copy(tmp_path, broken))
    assert any("notfy" in line for line in complaints), complaints


def test_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    copy = _runnable_copy(tmp_path, UNIT.read_text())
    # Exposure 0.0 (locked down) .. 10.0 (unprotected); the unit scores 1.7 with systemd 252.
    result = subprocess.run([tool, "security", "--offline=yes", "--threshold=25", "--no-pager", str(copy)],
                            capture_output=True, text=True, timeout=60)
    summary = [line for line in result.stdout.splitlines() if "Overall exposure level" in line]
    print(*summary)
    assert result.returncode == 0, summary or result.stderr
