"""Dockerfile.lambda and .dockerignore, read without a Docker engine: base image, CPU torch pinned like the
Makefile, the build arguments that pick the weights (the weights stage's shell run with a stub `facepipe`,
its command lines parsed by the real CLI), caches under /tmp, compiled packages, a final stage that takes only
the packages and the weights, and a build context that holds what the image copies."""

from __future__ import annotations

import argparse
import configparser
import fnmatch
import json
import os
import posixpath
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from cloud import cli
from cloud.models import fetch
from tests.dockerfile import DOCKERFILE, dockerfile_env, instructions, stage, stages
from tests.photos import REPO

HANDLERS = {"DetectionFunction": "cloud.detection.handler.handler",
            "RecognitionFunction": "cloud.recognition.handler.handler"}
SHA = "0123456789abcdef" * 4


def _makefile_torch_spec() -> dict[str, str]:
    makefile = (REPO / "Makefile").read_text()
    spec = re.search(r"^TORCH_SPEC \?= (.+)$", makefile, re.MULTILINE)
    assert spec, "TORCH_SPEC not in the Makefile"
    return dict(item.split("==") for item in spec.group(1).split())


def test_dockerfile_base_image_and_handler() -> None:
    assert "ARG BASE_IMAGE=public.ecr.aws/lambda/python:3.12" in DOCKERFILE
    assert [(s.base, s.name) for s in stages()] == [
        ("${BASE_IMAGE}", "build"), ("build", "weights"), ("${BASE_IMAGE}", None)]
    assert json.loads(stages()[-1].args("CMD")[-1]) == [HANDLERS["DetectionFunction"]]


def test_dockerfile_uses_cpu_torch_pinned_like_the_makefile() -> None:
    args = dict(arg.split("=", 1) for arg in instructions("ARG") if "=" in arg)
    assert {"torch": args["TORCH_VERSION"], "torchvision": args["TORCHVISION_VERSION"]} == _makefile_torch_spec()
    installs = [run for run in instructions("RUN") if "torch==" in run]
    assert installs and "--index-url https://download.pytorch.org/whl/cpu" in installs[0]
    # the package install is constrained to that torch, so pip cannot swap in a CUDA build
    assert any("--constraint" in run and "[cloud]" in run for run in instructions("RUN"))


# --- the weights: WEIGHTS_URL / WEIGHTS_SHA256 ----------------------------------------------------------


def _run_weights_stage(tmp_path: Path, **build_args: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """The weights stage's RUN in a POSIX shell, as `docker build --build-arg ...` runs it, with `facepipe`
    and `python` replaced by functions that record their arguments: returns the result and the facepipe calls."""
    weights = stage("weights")
    declared = dict(arg.split("=", 1) for arg in weights.args("ARG"))
    assert set(build_args) <= set(declared), "only declared build args reach RUN"
    [script] = [run for run in weights.args("RUN")]
    calls = tmp_path / "calls"
    stubs = ('facepipe() { for a in "$@"; do printf "%s\\n" "$a"; done >> "$CALLS"; echo "<end>" >> "$CALLS"; }\n'
             "python() { :; }\n")
    env = {"PATH": os.environ["PATH"], "CALLS": str(calls), **declared, **build_args}
    result = subprocess.run(["sh", "-c", stubs + script], env=env, capture_output=True, text=True, timeout=30)
    recorded = calls.read_text().split("<end>\n")[:-1] if calls.exists() else []
    return result, [call.splitlines() for call in recorded]


def _parse(argv: list[str]) -> argparse.Namespace:
    """The command line as the image's `facepipe` parses it."""
    return cli.build_parser(argv).parse_args(argv)


def test_weights_build_args_are_declared_empty_in_the_weights_stage() -> None:
    assert {"WEIGHTS_URL=", "WEIGHTS_SHA256="} <= set(stage("weights").args("ARG"))
    # the final stage never sees them (an ARG's value shows in the image's history)
    assert not [arg for arg in stages()[-1].args("ARG") if arg.startswith("WEIGHTS_")]


def test_without_build_args_the_default_weights_are_prepared(tmp_path: Path) -> None:
    result, calls = _run_weights_stage(tmp_path)
    assert result.returncode == 0, result.stderr
    [call] = calls
    args = _parse(call)
    assert call[:2] == ["models", "prepare"] and args._run.__module__ == "cloud.models.prepare"
    assert str(args.out) == dockerfile_env()["FACEPIPE_WEIGHTS_PATH"]


def test_weights_url_and_sha256_fetch_instead(tmp_path: Path) -> None:
    url = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt"
    result, calls = _run_weights_stage(tmp_path, WEIGHTS_URL=url, WEIGHTS_SHA256=SHA)
    assert result.returncode == 0, result.stderr
    [call] = calls
    args = _parse(call)
    assert call[:2] == ["models", "fetch"] and args._run is fetch.run
    assert (args.url, args.sha256) == (url, SHA)
    assert str(args.out) == dockerfile_env()["FACEPIPE_WEIGHTS_PATH"]


def test_a_url_without_sha256_fails_in_fetch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result, calls = _run_weights_stage(tmp_path, WEIGHTS_URL="https://example.invalid/w.pt")
    [call] = calls
    args = _parse(call)
    assert args.sha256 == ""
    assert fetch.run(args) == 1  # before any download
    assert "--sha256 must be 64 hex digits" in capsys.readouterr().err


def test_a_sha256_without_url_fails_the_build(tmp_path: Path) -> None:
    result, calls = _run_weights_stage(tmp_path, WEIGHTS_SHA256=SHA)
    assert result.returncode != 0 and calls == []
    assert "WEIGHTS_URL is empty" in result.stderr


# --- the final stage ---------------------------------------------------------------------------------


def _copies(from_stage: str) -> list[tuple[str, str]]:
    image = stages()[-1]
    result = []
    for copy in image.args("COPY"):
        words = shlex.split(image.expand(copy))
        if words[0] == f"--from={from_stage}":
            result.append((words[1], words[2]))
    return result


def test_final_stage_takes_only_the_weights_from_the_weights_stage() -> None:
    weights_dir = posixpath.dirname(dockerfile_env()["FACEPIPE_WEIGHTS_PATH"]) + "/"
    assert _copies("weights") == [(weights_dir, weights_dir)]


def test_final_stage_takes_compiled_packages_and_nothing_else() -> None:
    image, build = stages()[-1], stage("build")
    site = build.expand("${SITE}")
    assert site.endswith("/site-packages")
    assert sorted(_copies("build")) == sorted([(site + "/", site + "/"), ("/var/lang/bin/facepipe",) * 2])
    # no RUN (so no pip, compilers or caches) and no file from the build context (sources, photos)
    assert image.args("RUN") == []
    assert [copy for copy in image.args("COPY") if not copy.startswith("--from=")] == []
    # the packages are compiled where the final stage copies them from, after every install and trim
    runs = [build.expand(run) for run in build.args("RUN")]
    compile_at = next(i for i, run in enumerate(runs) if "compileall" in run)
    words = shlex.split(runs[compile_at])
    assert words[:3] == ["python", "-m", "compileall"] and words[-1] == site
    assert "-f" in words and words[words.index("--invalidation-mode") + 1] == "unchecked-hash"
    assert all("pip install" not in run and "rm -rf" not in run for run in runs[compile_at + 1:])
    assert all("--no-compile" in run for run in runs if "pip install" in run)


def test_image_writes_caches_under_tmp_only() -> None:
    env = dockerfile_env()
    assert env["TORCH_HOME"].startswith("/tmp/") and env["XDG_CACHE_HOME"].startswith("/tmp/")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    # every other path the image names is the read-only weights file
    paths = {key: value for key, value in env.items() if value.startswith("/")}
    assert {key for key, value in paths.items() if not value.startswith("/tmp/")} == {"FACEPIPE_WEIGHTS_PATH"}
    assert env.get("HOME", "/tmp/").startswith("/tmp/")


def test_trim_deletes_only_listed_files_then_imports_both_handlers() -> None:
    # What the trim deletes was checked against what the handlers load (see the RUN's comment): a new
    # target must be checked too, and added here.
    build = stage("build")
    trim = next(build.expand(run) for run in build.args("RUN") if "torch/include" in run)
    commands = [" ".join(command.split()) for command in trim.split("&&")]
    deleting = [command for command in commands if "rm " in command or "-delete" in command]
    assert deleting == [
        "rm -rf torch/include torch/share torch/test",
        "find torch/bin -mindepth 1 ! -name torch_shm_manager -delete",
        "find . -depth -type d -name tests \\( -path './numpy/*' -o -path './sympy/*' -o -path './networkx/*' \\) "
        "-exec rm -rf {} +",
    ]
    # the last command imports both handlers from what is left, so a wrong deletion fails the build
    assert commands[-1].startswith("python -c") and all(handler.rsplit(".", 1)[0] in commands[-1]
                                                         for handler in HANDLERS.values())


# --- the build context -------------------------------------------------------------------------------


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
                    "cloud/__pycache__/settings.cpython-312.pyc", "build/lib/cloud/settings.py"):
        assert _dockerignored(private, patterns), private
