"""Dockerfile.lambda and .dockerignore, read without a Docker engine: base image, CPU torch pinned like the
Makefile, weights baked where the settings look, and a build context that holds what the image copies."""

from __future__ import annotations

import configparser
import fnmatch
import json
import re
import shlex

from tests.dockerfile import DOCKERFILE, dockerfile_env, instructions
from tests.photos import REPO

HANDLERS = {"DetectionFunction": "cloud.detection.handler.handler",
            "RecognitionFunction": "cloud.recognition.handler.handler"}


def _makefile_torch_spec() -> dict[str, str]:
    makefile = (REPO / "Makefile").read_text()
    spec = re.search(r"^TORCH_SPEC \?= (.+)$", makefile, re.MULTILINE)
    assert spec, "TORCH_SPEC not in the Makefile"
    return dict(item.split("==") for item in spec.group(1).split())


def test_dockerfile_base_image_and_handler() -> None:
    assert "ARG BASE_IMAGE=public.ecr.aws/lambda/python:3.12" in DOCKERFILE
    assert instructions("FROM")[0] == "${BASE_IMAGE} AS runtime"
    assert json.loads(instructions("CMD")[-1]) == [HANDLERS["DetectionFunction"]]


def test_dockerfile_uses_cpu_torch_pinned_like_the_makefile() -> None:
    args = dict(arg.split("=", 1) for arg in instructions("ARG") if "=" in arg)
    assert {"torch": args["TORCH_VERSION"], "torchvision": args["TORCHVISION_VERSION"]} == _makefile_torch_spec()
    installs = [run for run in instructions("RUN") if "torch==" in run]
    assert installs and "--index-url https://download.pytorch.org/whl/cpu" in installs[0]
    # the package install is constrained to that torch, so pip cannot swap in a CUDA build
    assert any("--constraint" in run and "[cloud]" in run for run in instructions("RUN"))


def test_dockerfile_weights_path_is_where_prepare_writes() -> None:
    prepare = next(run for run in instructions("RUN") if "models prepare" in run)
    out = shlex.split(prepare)[shlex.split(prepare).index("--out") + 1]
    assert dockerfile_env()["FACEPIPE_WEIGHTS_PATH"] == out
    copied = next(c for c in instructions("COPY") if c.startswith("--from=weights"))
    assert out.startswith(shlex.split(copied)[-1])


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(c, pattern) or fnmatch.fnmatchcase(c, pattern.removeprefix("**/"))
               for c in candidates):
            ignored = not negate
    return ignored


def test_build_context_has_what_the_dockerfile_copies() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    sources = [src for copy_args in instructions("COPY") if not copy_args.startswith("--from")
               for src in shlex.split(copy_args)[:-1]]
    # setup.cfg reads README.md (long_description = file: ...): it must be copied too
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    needed = cfg["metadata"]["long_description"].removeprefix("file:").strip()
    assert needed in sources
    for source in sources:
        files = [source] if not source.endswith("/") else [
            str(p.relative_to(REPO)) for p in (REPO / source).rglob("*.py") if "__pycache__" not in p.parts]
        assert files, source
        for file in files:
            assert not _dockerignored(file, patterns), f"{file} is copied but excluded by .dockerignore"
    for private in (".venv/bin/python", ".cache/models/facenet-casia-webface.pt", ".git/HEAD", "tests/photos.py",
                    "cloud/__pycache__/settings.cpython-312.pyc"):
        assert _dockerignored(private, patterns), private
