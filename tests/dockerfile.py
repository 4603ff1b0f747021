"""Dockerfile.lambda read as instructions (no Docker engine needed): for the image and template tests."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from cloud.functions.commands import IMAGE_COMMANDS
from tests.photos import REPO

DOCKERFILE = (REPO / "Dockerfile.lambda").read_text()
# What the image runs: both handlers, and its own command line with each command's module (enroll, gallery).
RUNTIME_ROOTS = ("cloud.functions.detection.handler", "cloud.functions.recognition.handler",
                 "cloud.functions.commands", *dict.fromkeys(command.module for command in IMAGE_COMMANDS))


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


# --- the commands a RUN step invokes ---------------------------------------------------------------------

_SEPARATORS = {"&&", "||", ";", "|", "&", ";;", "|&"}  # a new command follows
_OPENERS = {"if", "then", "else", "elif", "while", "until", "do", "!", "{", "time"}  # ... and after these
_CLOSERS = {"fi", "done", "}"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_REDIRECTION = re.compile(r"^[0-9]*(>>?|<<?|>&|<&|&>)")


class UnsupportedShell(ValueError):
    """A construct run_commands does not parse: better to fail than to miss a command."""


def _take_substitutions(script: str) -> tuple[str, list[str]]:
    """`script` with every top-level $(...) replaced by a placeholder word, and the inner scripts."""
    inner: list[str] = []
    out, index = [], 0
    while (start := script.find("$(", index)) != -1:
        depth, end = 1, start + 2
        while end < len(script) and depth:
            depth += {"(": 1, ")": -1}.get(script[end], 0)
            end += 1
        if depth:
            raise UnsupportedShell(f"unbalanced $( in {script!r}")
        inner.append(script[start + 2 : end - 1])
        out.append(script[index:start] + "SUBSTITUTION")
        index = end
    out.append(script[index:])
    return "".join(out), inner


def run_commands(script: str) -> list[str]:
    """Every command name a shell script (one RUN step) invokes: the first word of each simple command,
    after &&, ||, ;, |, &, a subshell's (, reserved words such as if/then/do, and inside $(...) command
    substitutions. Variable assignments and redirections before a command are skipped; backslash-newline
    continuations are joined. A `case` or an unbalanced $( raises UnsupportedShell instead of guessing."""
    flat, substituted = _take_substitutions(script.replace("\\\n", " "))
    commands = [command for inner in substituted for command in run_commands(inner)]
    lexer = shlex.shlex(flat, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    expect_command, subshells, in_for_header = True, 0, False
    for token in lexer:
        if in_for_header:  # for NAME in WORDS; do: the words are not commands
            if token == "do":
                in_for_header, expect_command = False, True
            continue
        if token in _SEPARATORS:
            expect_command = True
        elif token == "(" and expect_command:
            subshells += 1
        elif token == ")" and subshells:
            subshells -= 1
            expect_command = False
        elif not expect_command:
            if token in _CLOSERS:
                expect_command = False
        elif token in _OPENERS:
            pass
        elif token in _CLOSERS:
            expect_command = False
        elif token == "for":
            in_for_header = True
        elif token == "case":
            raise UnsupportedShell("case ... esac is not parsed")
        elif _ASSIGNMENT.match(token) or _REDIRECTION.match(token):
            continue  # FOO=bar cmd / >file cmd: the command is still to come
        else:
            commands.append(token)
            expect_command = False
    return commands
