"""Every `rlkit ...` command line in README.md and docs/*.md runs as written.

Commands are extracted, not listed: the lines of fenced code blocks (continuations joined, shell variables
such as `B="rlkit bench ..."` expanded, `torchrun ... -m rlkit` and `$ rlkit` prefixes dropped) and the
inline code spans that start with `rlkit `. A span with placeholders (`CONFIG`, `[--merge-lora]`, `...`) is
usage syntax, not a command, and is left out. Each command must parse (click accepts its options) and
resolve (a command that reads a config builds it: `train`, `sft`, `validate`, `config ...`, `bench`'s
pairings); the short CPU ones (`config`, `validate`, `list`, `data gsm8k`) are run. Paths are read from the
repository root; what a run command writes (`--output`) goes to a temporary folder instead, so the checkout
stays as it was.
"""

from __future__ import annotations

import re
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from helpers import REPO
from rlkit.cli.main import cli

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUN_THEM = (("config",), ("validate",), ("list",), ("data", "gsm8k"))  # short, CPU only: run, not just resolved
OUTPUT_OPTIONS = ("--output",)
_FENCE = re.compile(r"^```.*?$(.*?)^```", re.MULTILINE | re.DOTALL)
_ASSIGNMENT = re.compile(r"^([A-Z_][A-Z0-9_]*)=(.*)$", re.DOTALL)
_PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]+(\.\w+)?$|^\[|[<>]|\.\.\.")  # CONFIG, RECIPE.yaml, [--flag], <path>, ...
_ENVIRONMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")  # OMP_NUM_THREADS=1 before a command


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    args: tuple[str, ...]  # after `rlkit`

    def __str__(self) -> str:
        return f"{self.where}: rlkit {' '.join(self.args)}"


def rlkit_args(tokens: list[str]) -> list[str] | None:
    """The arguments after the `rlkit` program token (`rlkit`, `-m rlkit`, `--module rlkit`), or None."""
    for index, token in enumerate(tokens):
        if token == "rlkit" and (index == 0 or tokens[index - 1] in ("-m", "--module", "$")
                                 or _ENVIRONMENT.match(tokens[index - 1])):
            return tokens[index + 1:]
    return None


def rlkit_commands(tokens: list[str]) -> list[list[str]]:
    """The arguments of every `rlkit` command of a shell line (commands joined by &&, ||, ; or |)."""
    commands, segment = [], []
    for token in [*tokens, "&&"]:
        if token in ("&&", "||", ";", "|"):
            args = rlkit_args(segment)
            if args is not None:
                commands.append(args)
            segment = []
        else:
            segment.append(token)
    return commands


def fenced_commands(path: Path, text: str) -> list[Command]:
    commands = []
    for block in _FENCE.finditer(text):
        first_line = text.count("\n", 0, block.start(1)) + 1
        variables: dict[str, str] = {}
        logical, start = "", None
        for offset, line in enumerate(block.group(1).split("\n")):
            start = first_line + offset if start is None else start
            if line.rstrip().endswith("\\"):
                logical += line.rstrip()[:-1] + " "
                continue
            logical += line
            command_line, line_number, logical, start = logical, start, "", None
            for name, value in variables.items():
                command_line = command_line.replace(f"${name}", value)
            try:
                tokens = shlex.split(command_line, comments=True)
            except ValueError:
                continue
            assignment = _ASSIGNMENT.match(tokens[0]) if len(tokens) == 1 else None
            if assignment:  # B="rlkit bench ...": a command template used as $B below
                variables[assignment.group(1)] = assignment.group(2)
                if assignment.group(2).startswith("rlkit "):
                    tokens = shlex.split(assignment.group(2))
                else:
                    continue
            for args in rlkit_commands(tokens):
                if not any("$" in arg or _PLACEHOLDER.search(arg) for arg in args):
                    commands.append(Command(f"{path.name}:{line_number}", tuple(args)))
    return commands


def inline_commands(path: Path, text: str) -> list[Command]:
    prose = _FENCE.sub(lambda block: "\n" * block.group(0).count("\n"), text)
    commands = []
    for span in re.finditer(r"`([^`]+)`", prose):
        try:
            tokens = shlex.split(span.group(1))
        except ValueError:
            continue
        args = rlkit_args(tokens)
        if args is None or any(_PLACEHOLDER.search(arg) for arg in args) or "|" in args or names_a_command(args):
            continue
        commands.append(Command(f"{path.name}:{prose.count(chr(10), 0, span.start()) + 1}", tuple(args)))
    return commands


def names_a_command(args: list[str]) -> bool:
    """True for prose that names a command taking required arguments without giving them (`rlkit export`,
    `rlkit export --merge-lora`): a reference to the command or its flag, not a command line."""
    command: click.Command = cli
    rest = list(args)
    while rest and isinstance(command, click.Group) and rest[0] in command.commands:
        command = command.commands[rest.pop(0)]
    if isinstance(command, click.Group):
        return not rest
    return all(arg.startswith("-") for arg in rest) and any(param.required for param in command.params)


def doc_commands() -> list[Command]:
    found = []
    for path in DOCS:
        text = path.read_text()
        found += fenced_commands(path, text) + inline_commands(path, text)
    return [command for command in found if command.args]


COMMANDS = doc_commands()


def parse(args: tuple[str, ...]) -> list[click.Context]:
    """Parse as the CLI would, down to the leaf command; the contexts from the root to the leaf."""
    contexts = [cli.make_context("rlkit", list(args), obj={})]
    while isinstance(contexts[-1].command, click.Group):
        group = contexts[-1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # click 9 keeps the subcommand in .args
            pending = [*getattr(group, "protected_args", ()), *group.args]
        name, command, rest = group.command.resolve_command(group, pending)
        contexts.append(command.make_context(name, rest, parent=group))
    return contexts


def resolve(contexts: list[click.Context]) -> None:
    """Build the config a config-reading command would run with (ConfigError on a bad one)."""
    from rlkit.cli.args import split_config_args
    from rlkit.config import RunConfig, build_config
    from rlkit.config.sft import SFTConfig

    path = tuple(context.info_name for context in contexts[1:])
    params = contexts[-1].params
    if path == ("train",):
        config_file, overrides = split_config_args(params["args"])
        build_config(RunConfig, config_file, overrides, {"engine.name": params["engine"], "rollout.name":
                     params["rollout"], "algorithm.adv_estimator": params["adv_estimator"]})
    elif path == ("sft",):
        config_file, overrides = split_config_args(params["args"])
        build_config(SFTConfig, config_file, overrides, {"engine.name": params["engine"]})
    elif path == ("bench",):
        resolve_bench(params)


def resolve_bench(params: dict) -> None:
    from rlkit.bench.runner import BenchRequest, pairing_config
    from rlkit.bench.workload import Workload
    from rlkit.cli.args import split_config_args
    from rlkit.cli.bench import _names

    _, overrides = split_config_args(params["overrides"])
    workload = Workload(num_prompts=params["prompts"], n=params["n"], prompt_len=params["prompt_len"],
                        response_len=params["response_len"], steps=params["steps"], warmup=params["warmup"])
    request = BenchRequest(engines=_names(params["engines"]), rollouts=_names(params["rollouts"]),
                           workload=workload, out=Path("bench_out"), shape=params["shape"] or "tiny",
                           overrides=tuple(overrides))
    for engine in request.engines:
        for rollout in request.rollouts:
            for placement in _names(params["placements"]):
                pairing_config(request, engine, rollout, Path("model"), Path("prompts.jsonl"), placement)


def test_the_docs_have_commands_to_check():
    names = {command.args[0] for command in COMMANDS}
    assert {"train", "sft", "config", "list", "bench", "data"} <= names, names
    assert any(command.args[:2] == ("config", "from-verl") for command in COMMANDS)
    assert any(command.args[:2] == ("data", "gsm8k") for command in COMMANDS)


def runs(args: tuple[str, ...]) -> bool:
    return any(args[:len(prefix)] == prefix for prefix in RUN_THEM)


def writing_into(folder: Path, args: tuple[str, ...]) -> tuple[list[str], list[Path]]:
    """The command with each `--output PATH` moved under `folder`, and the paths it will write."""
    moved, outputs = list(args), []
    for index, arg in enumerate(moved[:-1]):
        if arg in OUTPUT_OPTIONS:
            outputs.append(folder / moved[index + 1])
            moved[index + 1] = str(outputs[-1])
    return moved, outputs


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_documented_command_parses_resolves_and_short_ones_run(command, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)  # the docs' paths are the repository's
    contexts = parse(command.args)
    resolve(contexts)
    if runs(command.args):
        args, outputs = writing_into(tmp_path, command.args)
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, f"{command}\n{result.output}"
        assert all(output.exists() for output in outputs), f"{command} wrote nothing to {outputs}\n{result.output}"
