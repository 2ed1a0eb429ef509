"""Every `mesh` command, and every sub-command of one, answers --help with exit 0 and a usage."""

from __future__ import annotations

import argparse

import pytest

from mesh_runner import cli


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*path, name))
                found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(cli.build_parser())


def test_the_commands_are_found() -> None:
    assert {("up",), ("down",), ("ps",), ("logs",), ("load",), ("dlq", "ls")} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*command, "--help"])
    assert exited.value.code == 0
    assert f"usage: mesh {' '.join(command)}" in capsys.readouterr().out


def test_mesh_load_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["load", "--help"])
    out = capsys.readouterr().out
    for words in ("--rate", "--duration", "--concurrency", "--sku", "--json", "examples:"):
        assert words in out
