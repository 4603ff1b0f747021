"""What SAM CLI 1.164 does with samconfig.toml and `--parameter-overrides`, offline, from its source:

- samcli/lib/config/samconfig.py `SamConfig.get_all`: a command reads `[env.<command>.parameters]` over
  `[env.global.parameters]`, key by key (a command's `parameter_overrides` replaces the global one whole);
- samcli/cli/cli_config_file.py: the file's values are click defaults, so an option given on the command
  line replaces the file's value whole; `--save-params` writes the command line's options into
  `[env.<command>.parameters]`;
- samcli/cli/types.py `CfnParameterOverridesType`: `Key=value` pairs, quoted values, a later pair wins;
- samcli/commands/deploy/guided_config.py: `--guided` saves every template parameter (the prompt's
  default is the configured value or the template's Default) as `Key="value"` into the deploy table;
- samcli/commands/deploy/deploy_context.py `merge_parameters`: a parameter not in the overrides is sent
  as UsePreviousValue, so CloudFormation keeps the stack's value (a new stack takes the Default).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# samcli/cli/types.py: PARAM_AND_METADATA_KEY_REGEX and _generate_match_regex(".", delim=" ")
_KEY = r"""([A-Za-z0-9\"']+)"""
_VALUE = r"""(\"(?:\\.|[^\"\\]+)*\"|'(?:\\.|[^'\\]+)*'|(?:\\.|[^ \"\\]+)+)"""
_PATTERNS = (rf"(?:ParameterKey={_KEY},ParameterValue={_VALUE})", rf"(?:(?: ){_KEY}={_VALUE})")


def _unquote(value: str) -> str:
    if value and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return value.replace("\\ ", " ").replace('\\"', '"').replace("\\'", "'")


def parse_overrides(values: Any) -> dict[str, str]:
    """CfnParameterOverridesType.convert for strings, lists of strings and tables."""
    if values in ("", None, (), []):
        return {}
    parameters: dict[str, str] = {}
    for value in values if isinstance(values, list | tuple) else [values]:
        if isinstance(value, dict):
            parameters.update({str(k): "" if v is None else str(v) for k, v in value.items()})
            continue
        normalized = " " + value.strip()
        for pattern in _PATTERNS:
            groups = re.findall(pattern, normalized)
            if groups:
                parameters.update(groups)
                break
        else:
            raise ValueError(f"{value} is not a valid parameter_overrides format")
    return {_unquote(key): _unquote(val) for key, val in parameters.items()}


def _options(words: list[str]) -> dict[str, list[str] | bool]:
    """`--name value...` (OptionNargs: every word up to the next option) or a bare flag."""
    options: dict[str, list[str] | bool] = {}
    index = 0
    while index < len(words):
        if words[index].startswith("--"):
            name, values = words[index][2:].replace("-", "_"), []
            index += 1
            while index < len(words) and not words[index].startswith("--"):
                values.append(words[index])
                index += 1
            options[name] = values or True
        else:
            index += 1
    return options


@dataclass
class Project:
    """A checkout with its samconfig.toml, the image `sam build` last made and the deployed stack."""

    directory: Path
    template_parameters: dict[str, dict[str, Any]]
    built_architecture: str | None = None
    stack: dict[str, str] | None = None
    deploys: list[dict[str, str]] = field(default_factory=list)

    @property
    def samconfig(self) -> Path:
        return self.directory / "samconfig.toml"

    def _config(self, command: str) -> dict[str, Any]:
        if not self.samconfig.exists():
            return {}
        env = tomllib.loads(self.samconfig.read_text()).get("default", {})
        return {**env.get("global", {}).get("parameters", {}), **env.get(command, {}).get("parameters", {})}

    def _overrides(self, command: str, options: dict[str, list[str] | bool]) -> dict[str, str]:
        given = options.get("parameter_overrides")
        return parse_overrides(given if isinstance(given, list) else self._config(command).get("parameter_overrides"))

    def sam(self, words: list[str]) -> None:
        """Run `sam build` or `sam deploy` (other sam commands do not touch parameters)."""
        options = _options(words[2:])
        if words[1] == "build":
            overrides = self._overrides("build", options)
            self.built_architecture = overrides.get("Architecture",
                                                    str(self.template_parameters["Architecture"]["Default"]))
        elif words[1] == "deploy":
            overrides = self._overrides("deploy", options)
            if options.get("guided"):
                overrides = self._guided(overrides)
            elif options.get("save_params") and isinstance(options.get("parameter_overrides"), list):
                self._put_deploy_overrides(overrides)
            self._deploy(overrides)

    def _guided(self, configured: dict[str, str]) -> dict[str, str]:
        """Enter at every prompt: the configured value (when not empty) or the template's Default, all saved."""
        answers = {name: configured.get(name) or str(spec.get("Default", ""))
                   for name, spec in self.template_parameters.items()}
        self._put_deploy_overrides(answers)
        return answers

    def _put_deploy_overrides(self, overrides: dict[str, str]) -> None:
        """`parameter_overrides` in the deploy table replaced whole; the table's other keys stay."""
        line = "parameter_overrides = \"" + _escape(" ".join(f'{k}="{v}"' for k, v in overrides.items())) + "\""
        text = self.samconfig.read_text() if self.samconfig.exists() else "version = 0.1\n"
        header = re.search(r"^\[default\.deploy\.parameters\][ \t]*$", text, re.MULTILINE)
        if header is None:
            text += f"\n[default.deploy.parameters]\n{line}\n"
        else:
            end = re.search(r"^\[", text[header.end():], re.MULTILINE)
            stop = header.end() + end.start() if end else len(text)
            body = re.sub(r"^parameter_overrides\s*=.*\n?", "", text[header.end():stop], flags=re.MULTILINE)
            text = text[:header.end()] + "\n" + line + body + text[stop:]
        self.samconfig.write_text(text)

    def _deploy(self, overrides: dict[str, str]) -> None:
        previous = self.stack or {name: str(spec.get("Default", "")) for name, spec in self.template_parameters.items()}
        self.stack = {name: overrides.get(name, previous[name]) for name in self.template_parameters}
        self.deploys.append({**self.stack, "_image": self.built_architecture or ""})


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
