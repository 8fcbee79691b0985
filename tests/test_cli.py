"""parse_args: one typed flag per field of a frozen Args dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from training.cli import parse_args


@dataclass(frozen=True)
class Args:
    game: str = "takecover"
    """game name"""
    episodes: int = 100
    lr: float = 1e-3
    resume: bool = True
    max_steps: int | None = None
    temperature: Optional[float] = 1.15  # noqa: UP045  (the older spelling must work too)
    preset: Literal["quick", "paper"] = "quick"
    run_name: str = field(default_factory=lambda: "run-default")
    """made when parsed, e.g. from the time"""


def test_defaults_when_no_flags() -> None:
    assert parse_args(Args, []) == Args()
    assert parse_args(Args, []).run_name == "run-default"


def test_flags_are_converted_to_field_types() -> None:
    argv = "--game carracing --episodes 7 --lr 3e-4 --resume no --max-steps 60 --temperature none --preset paper"
    args = parse_args(Args, argv.split())
    assert isinstance(args, Args)
    assert args == Args(
        game="carracing", episodes=7, lr=3e-4, resume=False, max_steps=60, temperature=None, preset="paper"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        args.episodes = 1  # type: ignore[misc]


@pytest.mark.parametrize(("text", "value"), [("true", True), ("1", True), ("Yes", True), ("off", False), ("0", False)])
def test_bool_flags(text: str, value: bool) -> None:
    assert parse_args(Args, ["--resume", text]).resume is value


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--episodes", "ten"], "--episodes: invalid int value: 'ten'"),
        (["--resume", "maybe"], "expected true/false, got 'maybe'"),
        (["--preset", "huge"], "--preset: invalid choice: 'huge'"),
        (["--epochs", "3"], "unrecognized arguments: --epochs 3"),
    ],
)
def test_bad_values_exit_with_a_message_naming_the_flag(capsys, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(Args, argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_field_without_default_is_a_required_flag(capsys) -> None:
    @dataclass(frozen=True)
    class Needs:
        out: str
        steps: int = 1

    assert parse_args(Needs, ["--out", "x"]) == Needs(out="x")
    with pytest.raises(SystemExit):
        parse_args(Needs, [])
    assert "the following arguments are required: --out" in capsys.readouterr().err


def test_help_shows_the_description_and_every_flag(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(Args, ["--help"], "Collects things.\n\n    python -m training.x --episodes 3")
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "Collects things.\n\n    python -m training.x --episodes 3" in out  # the docstring's layout is kept
    flags = ["--game STR", "--episodes INT", "--lr FLOAT", "--resume BOOL", "--max-steps INT", "--preset {quick,paper}"]
    assert all(flag in out for flag in flags), out
