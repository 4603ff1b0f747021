"""The edge install stays small: no torch, no facenet-pytorch, and edge_client never imports them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN_DISTRIBUTIONS = {"torch", "torchvision", "facenet-pytorch", "facenet_pytorch"}
FORBIDDEN_MODULES = ("torch", "torchvision", "facenet_pytorch", "cloud.functions.detection",
                     "cloud.functions.recognition", "cloud.emulator", "cloud.functions.settings")


def test_pip_install_edge_extra_pulls_no_torch(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), f"{REPO}[edge]"],
        check=True, capture_output=True, text=True, timeout=300,
    )
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"facepipe", "opencv-python-headless", "requests", "pyyaml", "prometheus-client", "boto3", "paho-mqtt"} <= {
        n.replace("_", "-") for n in names}
    assert not names & FORBIDDEN_DISTRIBUTIONS
    assert not [n for n in names if n.startswith(("nvidia-", "triton"))]


def test_edge_client_imports_no_cloud_side_module() -> None:
    modules = sorted(p.stem for p in (REPO / "edge_client").glob("*.py") if p.stem != "__main__")
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module('edge_client.' + name)\n"
        f"bad = [m for m in sys.modules if m.startswith({FORBIDDEN_MODULES!r})]\n"
        "print(bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                            check=True)
    assert result.stdout.strip() == "[]", result.stdout
