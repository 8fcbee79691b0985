"""The ``dreamgym`` command (recipes/commands.py): every subcommand is a module's ``main(argv)``."""

from __future__ import annotations

import importlib

import pytest

from recipes import commands


def test_every_command_runs_a_module_main() -> None:
    assert {"pipeline", "collect", "vae", "encode", "mdnrnn", "bundle", "ship", "cmaes", "evaluate", "imitate",
            "dagger", "play", "record", "fidelity"} <= set(commands.COMMANDS)  # fmt: skip
    for module in commands.COMMANDS.values():
        assert callable(importlib.import_module(module).main), module


def test_help_lists_the_commands_and_a_command_gets_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.main(["--help"]) == 0
    listing = capsys.readouterr().out
    assert all(f"  {name} " in listing for name in commands.COMMANDS)
    with pytest.raises(SystemExit) as info:
        commands.main(["ensemble", "--help"])
    assert info.value.code == 0 and "--controllers" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["no-such-command"]])
def test_no_or_an_unknown_command_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.main(argv) == 2
    assert "usage: dreamgym <command>" in capsys.readouterr().err
