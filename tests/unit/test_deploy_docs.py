"""The deployment commands in docs/deploy.md and README.md, read as the shell and the SAM CLI would: one
`Function=URI` per `--image-repositories` flag, every image function of template.yaml given a repository,
and an ECR repository SAM can push to again (MUTABLE)."""

from __future__ import annotations

import re
import shlex

import pytest

from tests.photos import REPO

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
    deploys = [words for words in _shell_commands((REPO / doc).read_text()) if words[:2] == ["sam", "deploy"]
               and "--image-repositories" in words]
    assert deploys, f"{doc} has no sam deploy with --image-repositories"
    for words in deploys:
        mapped, stray = _repository_mapping(words)
        assert stray == [] and sorted(mapped) == sorted(_image_functions()), words


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
