"""The deployment commands in docs/deploy.md and README.md, read as the shell and the SAM CLI would: one
`Function=URI` per `--image-repositories` flag, every image function of template.yaml given a repository,
an ECR repository SAM can push to again (MUTABLE), and the documented flows replayed in order against SAM
CLI's handling of samconfig.toml and parameters (tests/sam_cli.py): every parameter the operator set keeps
its value through every later documented command, and every deploy runs the image `sam build` made for the
stack's Architecture."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cloud.emulator.template import load_template
from tests.photos import REPO
from tests.sam_cli import Project, parse_overrides

DOCS = ("docs/deploy.md", "README.md")


def _shell_commands(markdown: str) -> list[list[str]]:
    """Every command of the ```bash blocks, continuation lines joined, split into words."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(shlex.split(line))
    return commands


def _image_functions() -> set[str]:
    template = (REPO / "template.yaml").read_text()
    functions = set(re.findall(r"^  (\w+):\n    Type: AWS::Serverless::Function", template, re.MULTILINE))
    assert functions and all(f"  {name}:\n" in template for name in functions)
    return functions


def _repository_mapping(words: list[str]) -> tuple[list[str], list[str]]:
    """(functions given a repository, stray words): `--image-repositories` is a click option with
    multiple=True, so each flag takes exactly one Function=URI; words after that value up to the next
    option belong to no flag."""
    mapped, stray = [], []
    for index, word in enumerate(words):
        if word == "--image-repositories":
            mapped.append(words[index + 1].split("=", 1)[0])
            following = index + 2
            while following < len(words) and not words[following].startswith("--"):
                stray.append(words[following])
                following += 1
    return mapped, stray


def _mutability(words: list[str]) -> str:
    return words[words.index("--image-tag-mutability") + 1] if "--image-tag-mutability" in words else "MUTABLE"


@pytest.mark.parametrize("doc", DOCS)
def test_sam_deploy_names_one_repository_per_flag_for_every_image_function(doc: str) -> None:
    markdown = (REPO / doc).read_text()
    deploys = [words for words in _shell_commands(markdown) if words[:2] == ["sam", "deploy"]
               and "--image-repositories" in words]
    for words in deploys:
        mapped, stray = _repository_mapping(words)
        assert stray == [] and sorted(mapped) == sorted(_image_functions()), words
    # samconfig.toml's image_repositories: SAM CLI's saved form, one Function=URI per list entry
    configs = [tomllib.loads(_expand(body)) for _, body in _heredocs(markdown)]
    assert deploys or configs, f"{doc} names no image repositories"
    for config in configs:
        entries = config["default"]["deploy"]["parameters"]["image_repositories"]
        assert all(entry.count("=") == 1 and " " not in entry for entry in entries), entries
        assert sorted(entry.split("=")[0] for entry in entries) == sorted(_image_functions())


@pytest.mark.parametrize("doc", DOCS)
def test_the_ecr_repository_is_mutable(doc: str) -> None:
    # SAM pushes the same tag again on every deploy: an IMMUTABLE repository would refuse it.
    # (MUTABLE is the default when the option is left out.)
    creates = [words for words in _shell_commands((REPO / doc).read_text())
               if "create-repository" in words and "ecr" in words]
    assert creates
    assert [_mutability(words) for words in creates] == ["MUTABLE"] * len(creates)


def test_the_checks_catch_the_old_commands() -> None:
    old = ("```bash\naws ecr create-repository --repository-name facepipe --image-tag-mutability IMMUTABLE\n"
           'sam deploy --guided --image-repositories DetectionFunction="$REPO" RecognitionFunction="$REPO" \\\n'
           "    --capabilities CAPABILITY_IAM\n```\n")
    [create, deploy] = _shell_commands(old)
    assert _mutability(create) == "IMMUTABLE"
    assert _repository_mapping(deploy) == (["DetectionFunction"], ["RecognitionFunction=$REPO"])


# --- the documented flows replayed ----------------------------------------------------------------

# What the docs' step 0 exports (the heredoc expands them as the shell would).
VARIABLES = {"AWS_REGION": "eu-west-1", "STACK": "facepipe", "ALARM_EMAIL": "ops@example.com",
             "ACCOUNT": "123456789012",
             "REPO": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/facepipe"}
HEREDOC = re.compile(r"^cat > (\S+) <<EOF\n(.*?)^EOF$", re.DOTALL | re.MULTILINE)
TOOL = ["python3", "tools/deploy_parameters.py"]


def _expand(text: str) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: VARIABLES.get(m.group(1), m.group(0)), text)


def _heredocs(markdown: str) -> list[tuple[str, str]]:
    return [(name, body) for block in re.findall(r"```bash\n(.*?)```", markdown, re.DOTALL)
            for name, body in HEREDOC.findall(block)]


def _steps(markdown: str) -> list[tuple[str, list[str] | str]]:
    """The bash blocks' commands in order: ("write", samconfig text) for a heredoc into samconfig.toml,
    ("run", words) for each command of a `&&` chain."""
    steps: list[tuple[str, list[str] | str]] = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.DOTALL):
        position = 0
        for heredoc in [*HEREDOC.finditer(block), None]:
            text = block[position:heredoc.start() if heredoc else len(block)]
            for line in text.replace("\\\n", " ").splitlines():
                line = line.split(" #", 1)[0].strip()
                if line and not line.startswith("#"):
                    steps += [("run", shlex.split(part)) for part in line.split("&&")]
            if heredoc:
                if heredoc.group(1) == "samconfig.toml":
                    steps.append(("write", _expand(heredoc.group(2))))
                position = heredoc.end()
    return steps


def _replay(markdown: str, directory: Path) -> tuple[Project, list[str]]:
    """Run the flow's samconfig writes, parameter tool and sam commands in order; returns the project and
    every broken promise: a chosen parameter not what a deploy sent, or an image of the wrong architecture."""
    project = Project(directory, load_template()["Parameters"])
    chosen: dict[str, str] = {}
    broken: list[str] = []
    for kind, step in _steps(markdown):
        if kind == "write":
            assert isinstance(step, str)
            project.samconfig.write_text(step)
            overrides = tomllib.loads(step)["default"]["global"]["parameters"]["parameter_overrides"]
            chosen.update(parse_overrides(overrides))
            continue
        words = step
        if words[:2] == TOOL:
            subprocess.run([sys.executable, str(REPO / TOOL[1]), *words[2:]], cwd=directory, check=True,
                           capture_output=True)
            chosen.update(word.split("=", 1) for word in words[2:])
        elif words[:1] == ["sam"]:
            if words[1:2] == ["build"] or words[1:2] == ["deploy"]:
                chosen.update(parse_overrides(_options_values(words, "--parameter-overrides")))
            project.sam(list(words))
            if words[1:2] == ["deploy"]:
                assert project.stack is not None
                for name, value in chosen.items():
                    if project.stack[name] != value:
                        broken.append(f"{' '.join(words)}: {name}={project.stack[name]!r}, chosen {value!r}")
                if project.stack["Architecture"] != project.built_architecture:
                    broken.append(f"{' '.join(words)}: {project.stack['Architecture']} stack, "
                                  f"{project.built_architecture} image")
    return project, broken


def _options_values(words: list[str], option: str) -> list[str]:
    if option not in words:
        return []
    values = []
    for word in words[words.index(option) + 1:]:
        if word.startswith("--"):
            break
        values.append(word)
    return values


@pytest.mark.parametrize("doc", DOCS)
def test_every_documented_deploy_sends_what_the_operator_chose(doc: str, tmp_path: Path) -> None:
    project, broken = _replay((REPO / doc).read_text(), tmp_path)
    assert project.deploys, f"{doc} deploys nothing"
    assert broken == []


def test_the_deploy_guide_walks_a_device_prefix_an_update_and_an_architecture_change(tmp_path: Path) -> None:
    markdown = (REPO / "docs/deploy.md").read_text()
    runs = [" ".join(step) for kind, step in _steps(markdown) if kind == "run"]
    assert any("ReplyToPrefix=facepipe_answers-" in run for run in runs)
    assert "git pull" in runs and runs[runs.index("git pull") + 1:runs.index("git pull") + 3] == ["sam build",
                                                                                                 "sam deploy"]
    project, _ = _replay(markdown, tmp_path)
    assert project.stack is not None
    assert project.stack["ReplyToPrefix"] == "facepipe_answers-" and project.stack["Architecture"] == "arm64"
    assert project.stack["AlarmEmail"] == VARIABLES["ALARM_EMAIL"]
    assert {deploy["_image"] for deploy in project.deploys} == {"x86_64", "arm64"}


OLD_FLOW = """```bash
sam build --parameter-overrides Architecture=arm64
sam deploy --guided --stack-name "$STACK" --capabilities CAPABILITY_IAM
sam deploy --parameter-overrides ReplyToPrefix=facepipe_answers-
git pull && sam build && sam deploy
```
"""


def test_the_replay_catches_the_old_flow(tmp_path: Path) -> None:
    # The guided run saves Architecture="x86_64" (its prompt's default) for an arm64 image; the update
    # resends the saved ReplyToPrefix="" (the CLI's override lasted one run) and builds x86_64.
    _, broken = _replay(OLD_FLOW, tmp_path)
    assert any("sam deploy --guided" in b and "Architecture='x86_64', chosen 'arm64'" in b for b in broken), broken
    assert any(b.startswith("sam deploy: ReplyToPrefix='', chosen 'facepipe_answers-'") for b in broken), broken


def test_the_parameter_tool_keeps_the_other_parameters(tmp_path: Path) -> None:
    config = tmp_path / "samconfig.toml"
    config.write_text('version = 0.1\n\n[default.global.parameters]\nregion = "eu-west-1"\n'
                      'parameter_overrides = "Architecture=x86_64 AlarmEmail=\\"a@b.c\\""\n\n'
                      '[default.deploy.parameters]\nconfirm_changeset = true\n')
    subprocess.run([sys.executable, str(REPO / TOOL[1]), "ReplyToPrefix=p_", 'MatchThreshold=0.9"x'],
                   cwd=tmp_path, check=True, capture_output=True)
    saved = tomllib.loads(config.read_text())["default"]
    assert parse_overrides(saved["global"]["parameters"]["parameter_overrides"]) == {
        "Architecture": "x86_64", "AlarmEmail": "a@b.c", "ReplyToPrefix": "p_", "MatchThreshold": '0.9"x'}
    assert saved["global"]["parameters"]["region"] == "eu-west-1" and saved["deploy"]["parameters"] == {
        "confirm_changeset": True}


@pytest.mark.parametrize("doc", DOCS)
def test_the_base_image_is_pinned_before_the_first_build(doc: str) -> None:
    runs = [step for kind, step in _steps((REPO / doc).read_text()) if kind == "run"]
    first_build = next(index for index, words in enumerate(runs) if words[:2] == ["sam", "build"])
    pins = [index for index, words in enumerate(runs) if words[:2] == ["python3", "tools/pin_base_image.py"]]
    assert pins and pins[0] < first_build
    assert runs[pins[0]][2] == "public.ecr.aws/lambda/python:3.12@$DIGEST"
    looked_up = " ".join(runs[pins[0] - 1])
    assert looked_up.startswith("DIGEST=$(docker buildx imagetools inspect public.ecr.aws/lambda/python:3.12 ")
