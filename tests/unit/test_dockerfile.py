"""Dockerfile.lambda and .dockerignore, read without a Docker engine: base image, CPU torch pinned like the
Makefile (export stage only), the build arguments that pick the weights (the export stage's shell run with a stub
`facepipe`, its command lines parsed by the real CLI), caches under /tmp, compiled packages, a final stage that
takes only the packages and the ONNX networks, and a build context that holds what the image copies."""

from __future__ import annotations

import argparse
import ast
import configparser
import fnmatch
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from importlib.metadata import requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from cloud.operator import cli
from cloud.operator.models import fetch
from tests.dockerfile import (
    DOCKERFILE,
    RUNTIME_ROOTS,
    UnsupportedShell,
    dockerfile_env,
    instructions,
    run_commands,
    stage,
    stages,
)
from tests.photos import REPO

HANDLERS = {"DetectionFunction": "cloud.functions.detection.handler.handler",
            "RecognitionFunction": "cloud.functions.recognition.handler.handler"}
SHA = "0123456789abcdef" * 4


def _makefile_torch_spec() -> dict[str, str]:
    makefile = (REPO / "Makefile").read_text()
    spec = re.search(r"^TORCH_SPEC \?= (.+)$", makefile, re.MULTILINE)
    assert spec, "TORCH_SPEC not in the Makefile"
    return dict(item.split("==") for item in spec.group(1).split())


def test_dockerfile_base_image_and_handler() -> None:
    assert "ARG BASE_IMAGE=public.ecr.aws/lambda/python:3.12" in DOCKERFILE
    assert [(s.base, s.name) for s in stages()] == [
        ("${BASE_IMAGE}", "build"), ("build", "export"), ("${BASE_IMAGE}", None)]
    assert json.loads(stages()[-1].args("CMD")[-1]) == [HANDLERS["DetectionFunction"]]


def test_dockerfile_uses_cpu_torch_pinned_like_the_makefile() -> None:
    args = dict(arg.split("=", 1) for arg in instructions("ARG") if "=" in arg)
    assert {"torch": args["TORCH_VERSION"], "torchvision": args["TORCHVISION_VERSION"]} == _makefile_torch_spec()
    [torch] = [words for words in _pip_installs() if any(word.startswith('"torch==') for word in words)]
    assert torch[torch.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    # in the export stage only: the build stage, whose packages the image takes, installs no torch
    assert [words for words in _pip_installs(stage("build").args("RUN")) if "--index-url" in words] == []
    assert {"TORCH_VERSION=" + args["TORCH_VERSION"], "TORCHVISION_VERSION=" + args["TORCHVISION_VERSION"]} <= set(
        stage("export").args("ARG"))
    # every other install takes only what it names, so none can swap in another (CUDA) torch from PyPI
    assert all("--no-deps" in words for words in _pip_installs())
    assert _index_installs_without_no_deps(_pip_installs()) == []


LOCK = REPO / "requirements" / "lambda.txt"
EXPORT_LOCK = REPO / "requirements" / "export.txt"


def _pip_installs(runs: list[str] | None = None) -> list[list[str]]:
    """Every `python -m pip install ...` of the RUN steps, split into words (quotes kept)."""
    found = []
    for run in instructions("RUN") if runs is None else runs:
        for command in run.split("&&"):
            words = command.split()
            if words[:4] == ["python", "-m", "pip", "install"]:
                found.append(words[4:])
    return found


def _index_installs_without_no_deps(installs: list[list[str]]) -> list[list[str]]:
    # --index-url makes that index the only source of the named packages' dependencies too
    return [words for words in installs if "--index-url" in words and "--no-deps" not in words]


def test_the_checker_flags_the_old_torch_install() -> None:
    old = ('python -m pip install --no-cache-dir --no-compile --index-url https://download.pytorch.org/whl/cpu '
           '"torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"')
    assert _index_installs_without_no_deps(_pip_installs([old])) == [_pip_installs([old])[0]]


def _locked(lock: Path = LOCK) -> dict[str, tuple[str, list[str]]]:
    """A hash-pinned lock (requirements/lambda.txt by default): name -> (pinned version, sha256 hashes)."""
    text = lock.read_text().replace("\\\n", " ")
    locked = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line.split(" --hash", 1)[0])
            [pin] = requirement.specifier
            assert pin.operator == "==", line
            locked[requirement.name.lower()] = (pin.version, re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return locked


@pytest.mark.parametrize(("name", "lock"), [("build", "lambda"), ("export", "export")])
def test_the_pypi_packages_are_installed_from_a_hash_pinned_lock(name: str, lock: str) -> None:
    [install] = [words for words in _pip_installs(stage(name).args("RUN")) if "--require-hashes" in words]
    assert install[install.index("-r") + 1] == f"/tmp/requirements-{lock}.txt" and "--no-deps" in install
    assert any(copy.split() == [f"requirements/{lock}.txt", f"/tmp/requirements-{lock}.txt"]
               for copy in stage(name).args("COPY"))
    locked = _locked(REPO / "requirements" / f"{lock}.txt")
    assert locked and all(hashes for _, hashes in locked.values())
    assert not {"torch", "torchvision"} & set(locked)  # from the CPU index, not PyPI
    assert any("python -m pip check" in run for run in stage(name).args("RUN"))


def test_facepipe_is_installed_without_deps_after_the_runtime_lock() -> None:
    assert any(words[-1] == "/tmp/facepipe-src" for words in _pip_installs(stage("build").args("RUN")))


def test_the_export_lock_keeps_the_runtime_locks_versions() -> None:
    # the export stage installs on top of the build stage's packages: one version of each
    exported = _locked(EXPORT_LOCK)
    assert {name: version for name, (version, _) in _locked().items()} == {
        name: exported[name][0] for name in _locked()}
    assert {"facenet-pytorch", "onnx", "sympy"} <= set(exported) and not {"facenet-pytorch", "onnx", "sympy"} & set(
        _locked())


def test_torchs_own_dependencies_come_from_pypi() -> None:
    """The dependencies torch's and torchvision's metadata name without a marker (the CUDA libraries have
    one: the CPU wheels do not ask for them) are in the export stage's PyPI lock, at versions they accept."""
    locked = _locked(EXPORT_LOCK)
    plain = [Requirement(line) for dist in ("torch", "torchvision") for line in requires(dist) or []]
    plain = [r for r in plain if r.marker is None and r.name.lower() not in ("torch", "torchvision")]
    assert {r.name.lower() for r in plain} >= {"sympy", "networkx", "jinja2", "filelock", "fsspec",
                                                "typing-extensions", "setuptools"}
    for requirement in plain:
        assert requirement.name.lower() in locked, requirement
        assert requirement.specifier.contains(locked[requirement.name.lower()][0]), requirement
    listed = (REPO / "requirements" / "export-torch-deps.in").read_text()
    assert {Requirement(line).name.lower() for line in listed.splitlines() if line and not line.startswith("#")} == {
        r.name.lower() for r in plain}


def _base_image_check(**env: str) -> subprocess.CompletedProcess[str]:
    """The build stage's first check, run by bash with these build arguments."""
    [check] = [run for run in stage("build").args("RUN") if "ALLOW_UNPINNED_BASE" in run]
    return subprocess.run(["bash", "-c", check], env={"PATH": os.environ["PATH"], **env}, capture_output=True,
                          text=True, check=False)


@pytest.mark.parametrize(("base", "allow", "refused"), [
    ("public.ecr.aws/lambda/python:3.12", "", True),  # a tag AWS moves with every rebuild
    ("public.ecr.aws/lambda/python:3.12", "1", False),  # the explicit opt-out
    ("public.ecr.aws/lambda/python:3.12@sha256:" + "ab" * 32, "", False),
    ("public.ecr.aws/lambda/python@sha256:" + "ab" * 32, "", False),
])
def test_the_build_refuses_a_base_image_not_pinned_by_digest(base: str, allow: str, refused: bool) -> None:
    assert {"BASE_IMAGE", "ALLOW_UNPINNED_BASE="} <= set(stage("build").args("ARG"))  # empty: refused
    result = _base_image_check(BASE_IMAGE=base, ALLOW_UNPINNED_BASE=allow)
    assert (result.returncode != 0) == refused, result.stderr
    assert ("not pinned by digest" in result.stderr) == refused


def test_pin_base_image_sets_both_functions_build_argument(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text((REPO / "template.yaml").read_text())
    pinned = "public.ecr.aws/lambda/python:3.12@sha256:" + "0f" * 32
    tool = [sys.executable, str(REPO / "tools" / "pin_base_image.py"), "--template", str(template)]
    assert subprocess.run([*tool, "public.ecr.aws/lambda/python:3.12"], capture_output=True).returncode != 0
    subprocess.run([*tool, pinned], check=True, capture_output=True)
    from cloud.emulator.template import load_template

    resources = load_template(template)["Resources"]
    assert {resources[name]["Metadata"]["DockerBuildArgs"]["BASE_IMAGE"] for name in HANDLERS} == {pinned}
    assert _base_image_check(BASE_IMAGE=pinned).returncode == 0


# --- the weights: WEIGHTS_URL / WEIGHTS_SHA256 ----------------------------------------------------------


def _run_weights_stage(tmp_path: Path, **build_args: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """The export stage's weights RUN in a POSIX shell, as `docker build --build-arg ...` runs it, with `facepipe`
    and `python` replaced by functions that record their arguments: returns the result and the facepipe calls."""
    weights = stage("export")
    declared = dict(arg.split("=", 1) for arg in weights.args("ARG"))
    assert set(build_args) <= set(declared), "only declared build args reach RUN"
    [script] = [run for run in weights.args("RUN") if "WEIGHTS_URL" in run]
    calls = tmp_path / "calls"
    stubs = ('facepipe() { for a in "$@"; do printf "%s\\n" "$a"; done >> "$CALLS"; echo "<end>" >> "$CALLS"; }\n'
             "python() { :; }\n")
    env = {"PATH": os.environ["PATH"], "CALLS": str(calls), **declared, **build_args}
    result = subprocess.run(["sh", "-c", stubs + script], env=env, capture_output=True, text=True, timeout=30)
    recorded = calls.read_text().split("<end>\n")[:-1] if calls.exists() else []
    return result, [call.splitlines() for call in recorded]


def _parse(argv: list[str]) -> argparse.Namespace:
    """The command line as the export stage's `facepipe` parses it."""
    return cli.parser_for(argv).parse_args(argv)


def test_weights_build_args_are_declared_empty_in_the_export_stage() -> None:
    assert {"WEIGHTS_URL=", "WEIGHTS_SHA256="} <= set(stage("export").args("ARG"))
    # the final stage never sees them (an ARG's value shows in the image's history)
    assert not [arg for arg in stages()[-1].args("ARG") if arg.startswith("WEIGHTS_")]


def test_without_build_args_the_default_weights_are_prepared(tmp_path: Path) -> None:
    result, calls = _run_weights_stage(tmp_path)
    assert result.returncode == 0, result.stderr
    [call] = calls
    args = _parse(call)
    assert call[:2] == ["models", "prepare"] and args._run.__module__ == "cloud.operator.models.prepare"
    # the ONNX files go where the image reads them; the .pt stays outside what the image copies
    assert str(args.models_dir) == dockerfile_env()["FACEPIPE_MODELS_DIR"]
    assert str(args.out).startswith("/tmp/") and str(args.verify_photos).startswith("/tmp/")


def test_weights_url_and_sha256_fetch_instead(tmp_path: Path) -> None:
    url = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt"
    result, calls = _run_weights_stage(tmp_path, WEIGHTS_URL=url, WEIGHTS_SHA256=SHA)
    assert result.returncode == 0, result.stderr
    [call, export_call] = calls
    args, exported = _parse(call), _parse(export_call)
    assert call[:2] == ["models", "fetch"] and args._run is fetch.run
    assert (args.url, args.sha256) == (url, SHA)
    # ... and the fetched weights are exported to ONNX like the default ones
    assert export_call[:2] == ["models", "export"] and exported._run.__module__ == "cloud.operator.models.export"
    assert exported.weights == args.out and str(args.out).startswith("/tmp/")
    assert str(exported.models_dir) == dockerfile_env()["FACEPIPE_MODELS_DIR"]


def test_a_url_without_sha256_fails_in_fetch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result, calls = _run_weights_stage(tmp_path, WEIGHTS_URL="https://example.invalid/w.pt")
    call = calls[0]  # the stub succeeds, so export follows it here; the real fetch fails first and stops the RUN
    args = _parse(call)
    assert args.sha256 == ""
    assert fetch.run(args) == 1  # before any download
    assert "--sha256 must be 64 hex digits" in capsys.readouterr().err


def test_a_sha256_without_url_fails_the_build(tmp_path: Path) -> None:
    result, calls = _run_weights_stage(tmp_path, WEIGHTS_SHA256=SHA)
    assert result.returncode != 0 and calls == []
    assert "WEIGHTS_URL is empty" in result.stderr


# --- the final stage ---------------------------------------------------------------------------------


def _copies(from_stage: str) -> list[tuple[str, ...]]:
    """(source, ..., destination) of each COPY --from=`from_stage` of the final stage."""
    image = stages()[-1]
    result = []
    for copy in image.args("COPY"):
        words = shlex.split(image.expand(copy))
        if words[0] == f"--from={from_stage}":
            result.append(tuple(words[1:]))
    return result


def test_final_stage_takes_only_the_onnx_networks_from_the_export_stage() -> None:
    env = dockerfile_env()
    assert env["FACEPIPE_ENGINE"] == "onnx"
    models = env["FACEPIPE_MODELS_DIR"]
    # the .onnx files and their sidecars: no .pt, no photos, no torch
    assert _copies("export") == [(f"{models}/*.onnx", f"{models}/*.onnx.json", f"{models}/")]
    assert not [key for key in env if "WEIGHTS" in key or "TORCH" in key]


def test_final_stage_takes_compiled_packages_and_nothing_else() -> None:
    image, build = stages()[-1], stage("build")
    site = build.expand("${SITE}")
    assert site.endswith("/site-packages")
    assert _copies("build") == [(site + "/", site + "/")]  # no console script: the image runs python -m
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
    assert env["XDG_CACHE_HOME"].startswith("/tmp/")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    # every other path the image names is the read-only folder of networks
    paths = {key: value for key, value in env.items() if value.startswith("/")}
    assert {key for key, value in paths.items() if not value.startswith("/tmp/")} == {"FACEPIPE_MODELS_DIR"}
    assert env.get("HOME", "/tmp/").startswith("/tmp/")


def _trim_module():
    spec = importlib.util.spec_from_file_location("trim_lambda_packages", REPO / "tools" / "trim_lambda_packages.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trim_step_runs_the_script_then_imports_both_handlers_and_no_offline_part() -> None:
    build = stage("build")
    trim = next(build.expand(run) for run in build.args("RUN") if "trim_lambda_packages.py" in run)
    commands = [" ".join(command.split()) for command in trim.split("&&")]
    assert commands[0] == 'python /tmp/tools/trim_lambda_packages.py "/var/lang/lib/python3.12/site-packages"'
    # then both handlers and onnxruntime import from what is left, so a wrong deletion fails the build, with
    # no torch (nor facenet-pytorch, nor the exporter's onnx) installed ...
    assert commands[2].startswith("python -c") and all(handler.rsplit(".", 1)[0] in commands[2]
                                                       for handler in HANDLERS.values())
    assert "import onnxruntime" in commands[2] and all(
        f"'{module}'" in commands[2] for module in ("torch", "torchvision", "facenet_pytorch", "onnx"))
    # ... and the offline-only parts are absent, or the build fails
    assert commands[3].startswith("python -c") and all(
        f"'{module}'" in commands[3] for module in ("edge_client", "cloud.operator", "cloud.emulator", "cloud.bench"))


def test_trim_script_deletes_only_the_listed_files(tmp_path: Path) -> None:
    # GIVEN a site-packages tree with what the trim targets and what must stay next to it
    keep = ["onnxruntime/__init__.py", "onnxruntime/capi/libonnxruntime.so.1.32.0", "onnxruntime/backend/backend.py",
            "onnxruntime/capi/onnxruntime_inference_collection.py", "numpy/_core/multiarray.py",
            "numpy/testing/__init__.py", "cv2/tests_data.txt", "botocore/data/sqs/endpoint-rule-set-1.json.gz"]
    drop = ["onnxruntime/transformers/optimizer.py", "onnxruntime/quantization/quantize.py",
            "onnxruntime/tools/symbolic_shape_infer.py", "numpy/tests/test_ctypeslib.py",
            "numpy/_core/tests/test_umath.py", "numpy/_core/tests/data/tests/x.txt"]
    for relative in keep + drop:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("x")
    # WHEN the script runs on it
    _trim_module().trim(tmp_path)
    # THEN exactly the listed files are gone
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == sorted(keep)


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
        files = _context_files(source)
        assert files, source
        for file in files:
            assert not _dockerignored(file, patterns), f"{file} is copied but excluded by .dockerignore"
    for private in (".venv/bin/python", ".cache/models/facenet-casia-webface.pt", ".git/HEAD", "tests/photos.py",
                    "cloud/__pycache__/settings.cpython-312.pyc", "build/lib/cloud/functions/settings.py"):
        assert _dockerignored(private, patterns), private


def _context_files(source: str) -> list[str]:
    """The build-context files a COPY source names: a folder's files (recursively), a glob's matches, a file."""
    if source.endswith("/"):
        return sorted(str(p.relative_to(REPO)) for p in (REPO / source).rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    return sorted(str(p.relative_to(REPO)) for p in REPO.glob(source) if p.is_file())


# --- every command a RUN step invokes exists in its stage -----------------------------------------------

_RPM_QA = ("`rpm -qa` of public.ecr.aws/lambda/python:3.12, quoted in "
           "https://github.com/amazonlinux/amazon-linux-2023/issues/585")
_COREUTILS = f"coreutils-single is installed: {_RPM_QA}"
# Docker runs RUN with `/bin/sh -c`; in this image that shell is bash (the bash package is the only shell in
# the same package list), so its builtins are there whatever packages are.
_BASH_BUILTIN = f"bash builtin; bash is the image's /bin/sh: {_RPM_QA}"

# Commands of the base image public.ecr.aws/lambda/python:3.12, each with where that is stated. `find` is not
# one of them: the image is AL2023 minimal without findutils (https://github.com/aws/aws-lambda-base-images/issues/196).
LAMBDA_PYTHON_312: dict[str, str] = {
    **{builtin: _BASH_BUILTIN for builtin in
       ("cd", "test", "[", "printf", "echo", "exit", "set", "true", "false", ":", "export", "unset", "command")},
    "python": "the runtime in /var/lang/bin (on PATH): AWS base images for Python are 'preloaded with a "
              "language runtime' (https://docs.aws.amazon.com/lambda/latest/dg/python-image.html); pip runs as "
              "`python -m pip`",
    **{tool: _COREUTILS for tool in ("rm", "mkdir", "cp", "mv", "ln", "cat", "ls", "chmod", "dirname", "basename")},
    "grep": f"grep is installed: {_RPM_QA}",
    "gawk": f"gawk is installed: {_RPM_QA}",
    "dnf": "AWS's answer for tools AL2023-minimal images lack: 'you can use dnf to install packages' "
           "(https://github.com/aws/aws-lambda-base-images/issues/173)",
}
# Commands a stage installs itself, for the stages built on it.
INSTALLED_BY_STAGE: dict[str, dict[str, str]] = {
    "build": {"facepipe": "console script of setup.cfg [options.entry_points], installed by the build stage's "
                          "`pip install --no-deps /tmp/facepipe-src`"},
}


def available_commands(name: str | None) -> dict[str, str]:
    """What a stage's RUN steps can call: its base image's commands plus what the stages below it installed."""
    current = next(s for s in stages() if s.name == name)
    if current.base == "${BASE_IMAGE}":
        assert "ARG BASE_IMAGE=public.ecr.aws/lambda/python:3.12" in DOCKERFILE
        return dict(LAMBDA_PYTHON_312)
    return {**available_commands(current.base), **INSTALLED_BY_STAGE.get(current.base, {})}


def unavailable_commands(name: str | None, script: str) -> list[str]:
    available = available_commands(name)
    return [command for command in run_commands(script) if command not in available]


def test_every_run_step_calls_only_commands_its_stage_has() -> None:
    checked = 0
    for current in stages():
        for script in current.args("RUN"):
            assert unavailable_commands(current.name, script) == [], f"stage {current.name}: {script}"
            checked += len(run_commands(script))
    assert checked >= 10  # the RUN steps were parsed, not skipped


def test_the_checker_flags_find_as_the_old_trim_step_used_it() -> None:
    # The trim step as it was before: it would stop `sam build` with "find: command not found".
    old_trim = (
        'cd "${SITE}" && rm -rf torch/include torch/share torch/test '
        '&& find torch/bin -mindepth 1 ! -name torch_shm_manager -delete '
        "&& find . -depth -type d -name tests \\( -path './numpy/*' -o -path './sympy/*' -o -path './networkx/*' \\) "
        "-exec rm -rf {} + && python -c \"import torch\""
    )
    assert run_commands(old_trim) == ["cd", "rm", "find", "find", "python"]
    assert unavailable_commands("build", old_trim) == ["find", "find"]
    # and `dnf install -y findutils` is what a stage would need first (a command of a package it installs
    # itself is not known to the checker: it would have to be added to INSTALLED_BY_STAGE with its source)
    assert unavailable_commands("build", "dnf install -y findutils") == []


def test_run_commands_reads_shell_syntax() -> None:
    script = ('set -e; X=1 Y=2 make -j2 2>&1 | tee log >/dev/null; if [ -n "$A" ]; then echo a >&2; exit 1; fi; '
              'for f in a b; do rm "$f"; done; test "$(dirname "$(which x)")" = / && (cd x && ls) || { true; }; '
              "! grep -q x y \\\n && python -c 'print(1); import os'")
    assert sorted(run_commands(script)) == sorted(
        ["which", "dirname", "set", "make", "tee", "[", "echo", "exit", "rm", "test", "cd", "ls", "true", "grep",
         "python"])
    with pytest.raises(UnsupportedShell):
        run_commands('case "$A" in a) find . ;; esac')


# --- what the image holds: only what the functions import ----------------------------------------------

IMAGE_FOLDER = "cloud/functions/"


def _module_name(relative: str) -> str:
    return relative.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def _first_party_imports(module: str, root: Path = REPO) -> set[str]:
    """Every facepipe module `module` imports anywhere in its source (top level, functions, TYPE_CHECKING)."""
    path = root / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = root / module.replace(".", "/") / "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] in ("cloud", "edge_client") and (
                    (root / (name.replace(".", "/") + ".py")).exists() or (root / name.replace(".", "/")).is_dir()):
                parts = name.split(".")
                found.update(".".join(parts[: i + 1]) for i in range(len(parts)))  # with its packages
    return found


def _import_closure(roots: tuple[str, ...], root: Path = REPO) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += _first_party_imports(module, root)
    return seen


def _folder_mismatch(shipped: set[str], needed: set[str]) -> tuple[list[str], list[str]]:
    """(in the image's folder but imported by nothing the image runs, imported by what it runs but outside it)."""
    return sorted(shipped - needed), sorted(needed - shipped)


def _shipped_modules() -> set[str]:
    """facepipe's modules in the final image: what the build stage copies into the source tree it installs
    (the final stage takes the build stage's site-packages)."""
    build = stage("build")
    modules = set()
    for copy in build.args("COPY"):
        *sources, destination = shlex.split(copy)
        if not destination.startswith("/tmp/facepipe-src/"):
            continue
        for source in sources:
            modules.update(_module_name(f) for f in _context_files(source) if f.endswith(".py"))
    return modules


def test_the_build_copies_one_folder_of_the_source() -> None:
    sources = [source for copy in stage("build").args("COPY") for source in shlex.split(copy)[:-1]
               if source.startswith(("cloud", "edge_client"))]
    assert sources == ["cloud/__init__.py", IMAGE_FOLDER]


def test_the_image_folder_is_exactly_what_the_image_runs_imports() -> None:
    shipped, needed = _shipped_modules(), _import_closure((*RUNTIME_ROOTS, "cloud.functions.__main__"))
    assert "cloud.functions.detection.handler" in shipped and "cloud.functions.recognition.gallery" in shipped
    unused, outside = _folder_mismatch(shipped, needed)
    assert unused == [], "in the image's folder but imported by nothing the image runs"
    assert outside == [], "imported by what the image runs but outside its folder"
    folder = IMAGE_FOLDER.rstrip("/").replace("/", ".")
    assert sorted(m for m in shipped if m != "cloud" and not m.startswith(folder)) == []


def test_the_closure_check_sees_a_module_outside_the_folder_and_one_nothing_imports(tmp_path: Path) -> None:
    # GIVEN a tree where a function imports an operator tool lazily (as the detection handler took device_of_arn
    # from the `facepipe device` module before device_identity.py), and the folder holds a module nothing imports
    sources = {"cloud/__init__.py": "", "cloud/functions/__init__.py": "", "cloud/operator/__init__.py": "",
               "cloud/functions/handler.py": "from cloud.functions import contracts\n\n\ndef handler():\n"
                                             "    from cloud.operator.devices import device_of_arn\n",
               "cloud/functions/contracts.py": "", "cloud/functions/unused.py": "",
               "cloud/operator/devices.py": "def device_of_arn(): ...\n"}
    for relative, text in sources.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    shipped = {_module_name(f) for f in sources if f.startswith(("cloud/__init__", IMAGE_FOLDER))}
    # THEN the check names both
    needed = _import_closure(("cloud.functions.handler",), tmp_path)
    assert _folder_mismatch(shipped, needed) == (["cloud.functions.unused"],
                                                 ["cloud.operator", "cloud.operator.devices"])


def test_only_the_export_stage_adds_the_weights_tools() -> None:
    # The build stage (whose site-packages the image takes) copies nothing into site-packages itself ...
    site = stage("build").expand("${SITE}")
    assert [copy for copy in stage("build").args("COPY") if site in stage("build").expand(copy)] == []
    # ... the export stage adds the operator's folder for `facepipe models fetch/prepare/export`, and the image
    # takes only the ONNX files from that stage
    weights = stage("export")
    assert [weights.expand(copy) for copy in weights.args("COPY") if "cloud/" in copy] == [
        f"cloud/operator/ {site}/cloud/operator/"]
    roots = ("cloud.operator.cli", "cloud.operator.models.prepare", "cloud.operator.models.fetch",
             "cloud.operator.models.export")
    assert [m for m in _import_closure(roots) if not m.startswith(("cloud.operator", "cloud.functions"))] == ["cloud"]


def test_image_installs_only_the_cloud_extra_and_it_holds_no_edge_or_local_tool() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    extras = cfg["options.extras_require"]

    def names(text: str) -> set[str]:
        return {re.split(r"[<>=!\[ ]", line.strip())[0].lower() for line in text.splitlines()
                if line.strip() and not line.strip().startswith("#")}

    # what only the edge daemon or the local stack needs (the functions need opencv and requests too)
    offline_only = (names(extras["edge"]) | names(extras["local"])) - {"opencv-python-headless", "requests"}
    assert offline_only >= {"moto", "aws-sam-translator", "prometheus-client", "pyyaml"}
    assert names(extras["cloud"]) & offline_only == set()
    # the lock holds the package's requirements and the cloud extra's, no offline tool and nothing of the
    # models extra (torch, facenet-pytorch, onnx: the export stage's)
    locked = set(_locked())
    wanted = names(cfg["options"]["install_requires"]) | names(extras["cloud"])
    assert wanted <= locked and locked & offline_only == set()
    assert names(extras["models"]) >= {"torch", "facenet-pytorch", "onnx"} and names(extras["models"]) & locked == set()


IMAGE_COMMAND_LINE = textwrap.dedent("""
    import json, runpy, sys
    sys.argv = ["cloud.functions", *sys.argv[1:]]
    try:
        runpy.run_module("cloud.functions", run_name="__main__")
    except SystemExit:
        pass
    print(json.dumps(sorted(m for m in sys.modules if m.startswith(("cloud", "edge_client")))))
""")


@pytest.mark.parametrize("argv", [["--help"], ["enroll", "--help"], ["gallery", "list", "--help"]])
def test_the_images_command_line_runs_from_its_folder_alone(argv: list[str]) -> None:
    result = subprocess.run([sys.executable, "-c", IMAGE_COMMAND_LINE, *argv], cwd=REPO, capture_output=True,
                            text=True, timeout=120, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    *printed, modules = result.stdout.strip().splitlines()
    assert "usage: python -m cloud.functions" in "\n".join(printed)
    assert [m for m in json.loads(modules) if m != "cloud" and not m.startswith("cloud.functions")] == []
    if argv == ["--help"]:
        assert "{enroll,gallery}" in result.stdout
