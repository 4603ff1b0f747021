"""What the Lambda image's site-packages hold, read from Dockerfile.lambda itself: the stage whose site-packages the
final stage copies, the locks and packages that stage pip-installs and the trim script it runs. Those are installed
for the image's platform (Lambda's x86_64 Linux, Python 3.12) from PyPI into a fresh folder, as the build does, then
checked: no torch, torchvision, triton or CUDA library anywhere in their dependency closure, the lock exactly that
closure of what setup.cfg declares for the image, and the trimmed size under a bound. Bytecode is not counted:
the build compiles for 3.12 afterwards, which this machine's Python cannot. Also: what the image runs imports
with torch and the other packages the image lacks made unimportable (the build's own check, without Docker)."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import Distribution, distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.dockerfile import RUNTIME_ROOTS, Stage, stage, stages
from tests.photos import REPO

MAX_SIZE_MB = 400
# Lambda's x86_64 runtime for the base image's Python 3.12; the platform tags the locked wheels carry.
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
MARKER_ENV = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython"}
FORBIDDEN = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")


def forbidden(names: set[str]) -> list[str]:
    return sorted(name for name in names if FORBIDDEN.match(canonicalize_name(name)))


def test_forbidden_names_torch_and_the_cuda_libraries() -> None:
    names = {"torch", "TorchVision", "triton", "nvidia-cublas-cu12", "nvidia_cudnn_cu13", "cuda-toolkit", "numpy",
             "onnxruntime", "torchaudio-free"}
    assert forbidden(names) == ["TorchVision", "cuda-toolkit", "nvidia-cublas-cu12", "nvidia_cudnn_cu13", "torch",
                                "triton"]


# --- what the Dockerfile installs where the image takes its packages from ---------------------------------


def _site_stage() -> Stage:
    """The stage whose site-packages folder the final stage copies."""
    image = stages()[-1]
    site = image.expand("${SITE}")
    [source] = [words[0].removeprefix("--from=") for copy in image.args("COPY")
                if (words := shlex.split(image.expand(copy)))[0].startswith("--from=") and words[1] == f"{site}/"]
    return stage(source)


def _context_source(current: Stage, destination: str) -> Path:
    """The build-context file a stage's COPY put at `destination`."""
    for copy in current.args("COPY"):
        *sources, target = shlex.split(current.expand(copy))
        for source in sources:
            if target == destination or (target.endswith("/") and target + Path(source).name == destination):
                return REPO / source
    raise AssertionError(f"nothing copied to {destination}")


def _installs(current: Stage) -> tuple[list[Path], list[str]]:
    """The lock files (-r) and the named packages of the stage's pip installs; facepipe's own source aside."""
    locks, named = [], []
    for run in current.args("RUN"):
        for command in current.expand(run).split("&&"):
            words = shlex.split(command)
            if words[:4] != ["python", "-m", "pip", "install"]:
                continue
            args = iter(words[4:])
            for word in args:
                if word in ("-r", "--requirement"):
                    locks.append(_context_source(current, next(args)))
                elif word in ("--index-url", "--extra-index-url", "-i", "-c", "--constraint"):
                    next(args)
                elif not word.startswith("-") and word != "/tmp/facepipe-src":
                    named.append(word)
    return locks, named


def _trim_script(current: Stage) -> Path:
    [run] = [current.expand(run) for run in current.args("RUN") if "trim_lambda_packages.py" in run]
    path = shlex.split(run.split("&&")[0])[1]
    return _context_source(current, path)


def test_the_image_packages_come_from_the_runtime_lock_alone() -> None:
    locks, named = _installs(_site_stage())
    assert locks == [REPO / "requirements" / "lambda.txt"] and named == []


# What the image runs (RUNTIME_ROOTS) must import with no package outside the install set: here those packages
# are made unimportable, as they are absent in the image.
BLOCKED_IMPORT = textwrap.dedent("""
    import importlib.abc, json, sys
    blocked = set(sys.argv[1].split(","))
    class Absent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                raise ModuleNotFoundError(f"No module named {name!r} (not in the image)")
    sys.meta_path.insert(0, Absent())
    for module in sys.argv[2].split(","):
        __import__(module)
    print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
""")


def _import_blocking(blocked: tuple[str, ...], roots: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKED_IMPORT, ",".join(blocked), ",".join(roots)], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), "FACEPIPE_ENGINE": "onnx"},
                          capture_output=True, text=True, timeout=120, check=False)


NOT_INSTALLED = ("torch", "torchvision", "facenet_pytorch", "onnx", "sympy", "networkx", "requests", "yaml")


def test_what_the_image_runs_imports_without_torch() -> None:
    result = _import_blocking(NOT_INSTALLED, RUNTIME_ROOTS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cloud" in json.loads(result.stdout)


def test_the_import_check_fails_on_a_module_that_needs_torch() -> None:
    result = _import_blocking(NOT_INSTALLED, ("cloud.functions.recognition.torch_network",))
    assert result.returncode != 0 and "No module named 'torch' (not in the image)" in result.stderr


# --- the install set, installed for Lambda's platform -----------------------------------------------------


@pytest.fixture(scope="module")
def install_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The site stage's packages pip-installed for Lambda's platform (pip's cache makes a second run quick),
    then trimmed by the script the stage runs."""
    current = _site_stage()
    locks, named = _installs(current)
    assert forbidden({Requirement(spec.strip('"')).name for spec in named}) == []  # before any download
    target = tmp_path_factory.mktemp("site-packages")
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--require-hashes", "--no-compile",
               "--target", str(target), "--python-version", "3.12", "--only-binary=:all:", *platforms,
               *[arg for lock in locks for arg in ("-r", str(lock))], *named]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    subprocess.run([sys.executable, str(_trim_script(current)), str(target)], check=True, capture_output=True)
    yield target


def _installed(target: Path) -> dict[str, Distribution]:
    return {canonicalize_name(dist.metadata["Name"]): dist for dist in distributions(path=[str(target)])}


def _applies(requirement: Requirement, extras: set[str]) -> bool:
    marker = requirement.marker
    return marker is None or any(marker.evaluate({**MARKER_ENV, "extra": extra}) for extra in extras | {""})


def _image_requirements() -> list[Requirement]:
    """What setup.cfg declares for the image: install_requires and the extra requirements/lambda.txt locks."""
    header = (REPO / "requirements" / "lambda.txt").read_text()
    [extra] = re.findall(r"uv pip compile setup\.cfg --extra (\w+)", header)  # the lock's own command
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    text = cfg["options"]["install_requires"] + "\n" + cfg["options.extras_require"][extra]
    return [Requirement(line.strip()) for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def _closure(target: Path) -> tuple[set[str], list[str]]:
    """The names in the dependency closure of the image's requirements (missing ones included), and every
    requirement along the way that the installed version does not satisfy."""
    installed = _installed(target)
    seen: set[str] = set()
    unmet: list[str] = []
    todo = [(requirement, "facepipe") for requirement in _image_requirements() if _applies(requirement, set())]
    while todo:
        requirement, by = todo.pop()
        name = canonicalize_name(requirement.name)
        dist = installed.get(name)
        if dist is not None and not requirement.specifier.contains(dist.version, prereleases=True):
            unmet.append(f"{by} needs {requirement}, {dist.version} installed")
        if name in seen:
            continue
        seen.add(name)
        dependencies = [Requirement(line) for line in (dist.requires or [])] if dist else []
        todo += [(dependency, name) for dependency in dependencies if _applies(dependency, set(requirement.extras))]
    return seen, unmet


@pytest.mark.slow
def test_the_install_set_holds_no_torch_nor_cuda(install_set: Path) -> None:
    closure, _ = _closure(install_set)
    assert {"numpy", "onnxruntime", "opencv-python-headless"} <= closure
    assert forbidden(closure | set(_installed(install_set))) == []


@pytest.mark.slow
def test_the_lock_is_exactly_the_closure_of_what_setup_cfg_declares(install_set: Path) -> None:
    closure, unmet = _closure(install_set)
    installed = set(_installed(install_set))
    assert sorted(closure - installed) == [], "needed by the image but not in requirements/lambda.txt"
    assert sorted(installed - closure) == [], "in requirements/lambda.txt but needed by nothing the image runs"
    assert unmet == []


@pytest.mark.slow
def test_the_install_set_is_under_its_size_bound(install_set: Path) -> None:
    du = subprocess.run(["du", "-sm", str(install_set)], capture_output=True, text=True, check=True)
    size_mb = int(du.stdout.split()[0])
    assert 100 < size_mb <= MAX_SIZE_MB, f"{size_mb} MB"  # the lower bound: the install did happen
