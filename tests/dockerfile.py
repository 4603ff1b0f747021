"""Dockerfile.lambda read as instructions (no Docker engine needed): for the image and template tests."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from tests.photos import REPO

DOCKERFILE = (REPO / "Dockerfile.lambda").read_text()


def _lines() -> list[tuple[str, str]]:
    """(keyword, arguments) of every instruction, continuation lines joined, comments left out."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    result = []
    for line in joined.splitlines():
        parts = line.split(None, 1)
        if parts and not parts[0].startswith("#"):
            result.append((parts[0], parts[1] if len(parts) > 1 else ""))
    return result


def instructions(keyword: str) -> list[str]:
    """Arguments of every `keyword` instruction in the whole file."""
    return [args for key, args in _lines() if key == keyword]


@dataclass
class Stage:
    base: str
    name: str | None
    body: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [args for key, args in self.body if key == keyword]

    def expand(self, text: str) -> str:
        """`text` with ${NAME} replaced by the stage's ARG defaults (what a build without --build-arg uses)."""
        defaults = dict(arg.split("=", 1) for arg in self.args("ARG") if "=" in arg)
        return re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), text)


def stages() -> list[Stage]:
    """The build stages in order; the last one is the image."""
    found: list[Stage] = []
    for key, args in _lines():
        if key == "FROM":
            base, _, name = args.partition(" AS ")
            found.append(Stage(base.strip(), name.strip() or None))
        elif found:
            found[-1].body.append((key, args))
    return found


def stage(name: str) -> Stage:
    return next(s for s in stages() if s.name == name)


def dockerfile_env() -> dict[str, str]:
    """Every variable the image (the last stage) sets with ENV."""
    env: dict[str, str] = {}
    for line in stages()[-1].args("ENV"):
        for pair in shlex.split(line):
            key, _, value = pair.partition("=")
            env[key] = value
    return env
