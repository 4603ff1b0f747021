"""Dockerfile.lambda read as instructions (no Docker engine needed): for the image and template tests."""

from __future__ import annotations

import re
import shlex

from tests.photos import REPO

DOCKERFILE = (REPO / "Dockerfile.lambda").read_text()


def instructions(keyword: str) -> list[str]:
    """Arguments of every `keyword` instruction (continuation lines joined)."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.split(None, 1)[:1] == [keyword]]


def dockerfile_env() -> dict[str, str]:
    """Every variable the image sets with ENV."""
    env: dict[str, str] = {}
    for line in instructions("ENV"):
        for pair in shlex.split(line):
            key, _, value = pair.partition("=")
            env[key] = value
    return env
