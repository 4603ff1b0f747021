"""Set the stack's parameters where both `sam build` and `sam deploy` read them: `parameter_overrides`
in samconfig.toml's `[default.global.parameters]` (docs/deploy.md, "Parameters live in samconfig.toml").

    python3 tools/deploy_parameters.py ReplyToPrefix=facepipe_answers- Architecture=arm64
    python3 tools/deploy_parameters.py            # prints them

Every other parameter keeps its value; the line is rewritten as `sam deploy --guided` writes it
(`Key="value"` pairs, `"` escaped). Standard library only, Python 3.11+ (tomllib).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

# One `Key=value` pair of a parameter_overrides string as SAM CLI reads it: a double- or single-quoted
# value (backslash escapes inside) or an unquoted one up to the next space.
_PAIR = re.compile(r"""(?:^|\s)([A-Za-z0-9]+)=("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[^\s"'\\]+)""")
_LINE = re.compile(r"^parameter_overrides\s*=.*$", re.MULTILINE)


def parse(overrides: str) -> dict[str, str]:
    """`Key="value" Key2=value2` -> {Key: value, ...}; a later pair of the same key wins, as in SAM CLI."""
    pairs: dict[str, str] = {}
    for key, raw in _PAIR.findall(overrides):
        value = raw[1:-1] if raw[:1] in "\"'" else raw
        pairs[key] = value.replace('\\"', '"').replace("\\'", "'").replace("\\ ", " ")
    return pairs


def render(parameters: dict[str, str]) -> str:
    return " ".join(f'{key}="{value.replace(chr(34), chr(92) + chr(34))}"' for key, value in parameters.items())


def _section(text: str, env: str) -> tuple[int, int]:
    """(start, end) offsets of the `[<env>.global.parameters]` table's body in the file."""
    header = re.search(rf"^\[{re.escape(env)}\.global\.parameters\][ \t]*$", text, re.MULTILINE)
    if header is None:
        raise SystemExit(f"no [{env}.global.parameters] table: write samconfig.toml as docs/deploy.md step 3 shows")
    following = re.search(r"^\[", text[header.end():], re.MULTILINE)
    return header.end(), header.end() + following.start() if following else len(text)


def update(path: Path, changes: dict[str, str], env: str = "default") -> dict[str, str]:
    """Merge `changes` into the global parameter_overrides of `path`; returns the parameters now there."""
    text = path.read_text()
    current = tomllib.loads(text).get(env, {}).get("global", {}).get("parameters", {}).get("parameter_overrides", "")
    if not isinstance(current, str):
        raise SystemExit("parameter_overrides is not a string: keep it as the Key=\"value\" list docs/deploy.md shows")
    parameters = {**parse(current), **changes}
    if not changes:
        return parameters
    start, end = _section(text, env)
    body = text[start:end]
    line = f"parameter_overrides = {json.dumps(render(parameters), ensure_ascii=False)}"
    body = _LINE.sub(lambda _: line, body, count=1) if _LINE.search(body) else f"\n{line}{body}"
    path.write_text(text[:start] + body + text[end:])
    return parameters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", nargs="*", metavar="KEY=VALUE", help="parameters to set (VALUE may be empty)")
    parser.add_argument("--config-file", type=Path, default=Path("samconfig.toml"))
    parser.add_argument("--config-env", default="default")
    args = parser.parse_args(argv)
    changes = {}
    for pair in args.pairs:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9]+", key):
            parser.error(f"{pair!r} is not KEY=VALUE")
        changes[key] = value
    for key, value in update(args.config_file, changes, args.config_env).items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
