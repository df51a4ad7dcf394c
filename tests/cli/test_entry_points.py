"""One entry point: `keras-ft <command>` / `python -m keras_ft <command>`, the
`python -m keras_ft.run` and `python -m keras_ft.convert` aliases, Config flags
generated from Config everywhere, and no command-line library in the library."""

from __future__ import annotations

import ast
import dataclasses
import runpy
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import click
import pytest

import keras_ft
from keras_ft import cli
from keras_ft.cli.flags import _option_for
from keras_ft.config import Config, field_docs, field_types

COMMANDS = ("run", "evaluate", "generate", "compare", "data", "convert", "export")
PACKAGE = Path(keras_ft.__file__).parent

# Run in a fresh interpreter: who imports click or argparse, seen by an import hook.
IMPORT_CHECK = textwrap.dedent("""
    import sys

    importers = []

    class Watch:
        def find_spec(self, name, path=None, target=None):
            if name in ("click", "argparse"):
                frame = sys._getframe(1)
                while frame.f_code.co_filename.startswith("<frozen importlib"):
                    frame = frame.f_back
                importers.append((name, frame.f_globals.get("__name__")))
            return None

    sys.meta_path.insert(0, Watch())
    from keras_ft import Config, finetune
    print([(n, who) for n, who in importers if str(who).startswith("keras_ft")])
    print("click" in sys.modules)
""")


def test_importing_the_library_imports_no_command_line_library():
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert done.stdout.split("\n")[:2] == ["[]", "False"], done.stdout + done.stderr


def test_no_library_module_imports_click_or_argparse():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "cli") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [
                f"{path.relative_to(PACKAGE)}:{node.lineno} {n}"
                for n in names
                if n.split(".")[0] in ("click", "argparse")
            ]
    assert not found


def test_the_console_script_is_one_group_of_the_commands():
    assert isinstance(cli.main, click.Group)
    assert set(COMMANDS) <= set(cli.main.commands)
    assert isinstance(cli.main.commands["data"], click.Group)
    assert "stats" in cli.main.commands["data"].commands
    setup = (PACKAGE.parent / "setup.cfg").read_text()
    assert "keras-ft = keras_ft.cli:main" in setup


def _run_module(name: str, argv: list[str], monkeypatch, capsys) -> str:
    """`python -m name ARGV` in this process; returns stdout, checks exit 0."""
    monkeypatch.setattr(sys, "argv", [name, *argv])
    with pytest.raises(SystemExit) as info:
        runpy.run_module(name, run_name="__main__", alter_sys=False)
    out = capsys.readouterr().out
    assert info.value.code in (0, None), out
    return out


def test_python_m_keras_ft_lists_the_commands(monkeypatch, capsys):
    out = _run_module("keras_ft", ["--help"], monkeypatch, capsys)
    listed = {line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()}
    assert set(COMMANDS) <= listed


@pytest.mark.parametrize(
    "module, argv, says",
    [
        ("keras_ft.run", ["--help"], "--lora-rank"),
        ("keras_ft.convert", ["gguf", "--help"], "GGUF_PATH"),
        ("keras_ft", ["data", "stats", "--help"], "--no-tokens"),
    ],
)
def test_the_aliases_and_subcommands_answer_help(module, argv, says, monkeypatch, capsys):
    assert says in _run_module(module, argv, monkeypatch, capsys)


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, path + (name,))


def test_a_flag_named_as_a_config_field_is_that_field_in_every_command():
    """`--num-examples` is Config.num_examples wherever it appears (type, help,
    bool form); a command's own flags take names no Config field has."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    types, docs = field_types(), field_docs()
    wrong = []
    for path, command in _commands(cli.main):
        for param in command.params:
            for flag in getattr(param, "opts", []) + getattr(param, "secondary_opts", []):
                name = flag.lstrip("-").removeprefix("no-").replace("-", "_")
                if name not in fields:
                    continue
                declarations, attributes = _option_for(
                    fields[name], types[name], docs.get(name, "")
                )
                expected = click.Option(declarations, **attributes)
                same = (
                    param.name == name
                    and param.type.name == expected.type.name
                    and param.multiple == expected.multiple
                    and param.is_flag == expected.is_flag
                    and (param.help or "").startswith(docs.get(name, ""))
                )
                if not same:
                    wrong.append(f"keras-ft {' '.join(path)} {flag}")
    assert not wrong
    assert typing.get_origin(types["data"]) is tuple  # the data flag is repeatable
