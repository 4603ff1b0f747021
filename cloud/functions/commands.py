"""The command-line machinery both command lines share, and the commands the Lambda image itself runs.

The image runs `enroll` and `gallery list|remove` (`python -m cloud.functions ...`): enrolling with the image's
own networks gives the gallery the model tag its recognizer accepts. `facepipe` (cloud/operator/cli.py) offers the
same commands beside the operator's own. Each command lives in the module that does the work, which exposes an
`add_arguments(parser)`-style and a `run(args) -> int`-style function; only the module of the command being run is
imported, so `--help` stays fast and needs no model runtime.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]  # e.g. ("gallery", "list")
    module: str
    add_arguments: str  # names of the module's functions
    run: str
    help: str


IMAGE_COMMANDS = [
    Command(("enroll",), "cloud.functions.enrollment", "add_arguments", "run",
            "detect, embed and add people's faces to the gallery"),
    Command(("gallery", "list"), "cloud.functions.gallery_cli", "add_list_arguments", "run_list",
            "list enrolled names"),
    Command(("gallery", "remove"), "cloud.functions.gallery_cli", "add_remove_arguments", "run_remove",
            "remove a name from the gallery"),
]
IMAGE_GROUPS = {"gallery": "inspect and edit the enrolled gallery"}


def build_parser(prog: str, description: str, commands: list[Command], groups: dict[str, str],
                 argv: list[str]) -> argparse.ArgumentParser:
    """Only the module of the command named in `argv` is imported: the others stay unloaded."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    root = parser.add_subparsers(dest="command", required=True)
    subparsers: dict[tuple[str, ...], argparse._SubParsersAction] = {(): root}
    for command in commands:
        path = command.path
        for depth in range(1, len(path)):
            prefix = path[:depth]
            if prefix not in subparsers:
                group_parser = subparsers[prefix[:-1]].add_parser(prefix[-1], help=groups[prefix[-1]])
                subparsers[prefix] = group_parser.add_subparsers(dest=f"command_{depth}", required=True)
        sub = subparsers[path[:-1]].add_parser(path[-1], help=command.help, description=command.help)
        if argv[: len(path)] == list(path):
            module = importlib.import_module(command.module)
            getattr(module, command.add_arguments)(sub)
            sub.set_defaults(_run=getattr(module, command.run))
    return parser


def run_command_line(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: each command's own clean-up (with, finally) has run on the way out
        print(f"{parser.prog} {' '.join(argv[:1])}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser("python -m cloud.functions", "the Lambda image's own commands: enroll with its networks, "
                          "inspect the gallery", IMAGE_COMMANDS, IMAGE_GROUPS, argv)
    return run_command_line(parser, argv)
