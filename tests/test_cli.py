"""parse_args: one typed flag per field of a frozen Args dataclass."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

from dreamgym.cli_args import Count, HeldOut, NonNegative, Positive, Probability, parse_args


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


@dataclass(frozen=True)
class Bounded:
    episodes: Count = 3
    seed: NonNegative = 0
    sigma0: Positive = 0.1
    share: Probability = 0.5
    holdout: HeldOut = 0.0
    hidden_size: Count | None = None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--episodes", "0"], "argument --episodes: must be >= 1, got 0"),
        (["--seed", "-1"], "argument --seed: must be >= 0, got -1"),
        (["--sigma0", "-1"], "argument --sigma0: must be > 0, got -1.0"),
        (["--sigma0", "0"], "argument --sigma0: must be > 0, got 0.0"),
        (["--sigma0", "nan"], "argument --sigma0: must be > 0, got nan"),
        (["--share", "1.5"], "argument --share: must be in [0, 1], got 1.5"),
        (["--holdout", "1"], "argument --holdout: must be in [0, 1), got 1.0"),
        (["--hidden-size", "0"], "argument --hidden-size: must be >= 1, got 0"),
        (["--episodes", "two"], "argument --episodes: invalid int value: 'two'"),
    ],
)
def test_values_outside_a_fields_bound_exit_2_naming_the_flag(capsys, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(Bounded, argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_values_on_a_bound_are_accepted() -> None:
    argv = "--episodes 1 --seed 0 --sigma0 1e-9 --share 1 --holdout 0 --hidden-size none".split()
    assert parse_args(Bounded, argv) == Bounded(episodes=1, seed=0, sigma0=1e-9, share=1.0, holdout=0.0)
    assert parse_args(Bounded, ["--hidden-size", "5"]).hidden_size == 5


@pytest.mark.parametrize(
    ("module", "argv", "message"),
    [
        ("agents.cmaes", ["--env", "CartPole-v1", "--sigma0", "-1"], "argument --sigma0: must be > 0, got -1.0"),
        ("agents.cmaes", ["--env", "CartPole-v1", "--popsize", "0"], "argument --popsize: must be >= 1, got 0"),
        ("training.vae", ["--z-size", "0"], "argument --z-size: must be >= 1, got 0"),
        ("training.vae", ["--lr", "0"], "argument --lr: must be > 0, got 0.0"),
        ("training.collect", ["--episodes", "-1"], "argument --episodes: must be >= 1, got -1"),
        ("training.encode", ["--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
        ("training.mdnrnn", ["--hidden-size", "0"], "argument --hidden-size: must be >= 1, got 0"),
        ("training.bundle", ["--num-initial", "0"], "argument --num-initial: must be >= 1, got 0"),
        ("training.relabel", ["--workers", "0"], "argument --workers: must be >= 1, got 0"),
        ("recipes.pipeline", ["--seed", "-1"], "argument --seed: must be >= 0, got -1"),
        ("agents.evaluate", ["--episodes", "0"], "argument --episodes: must be >= 1, got 0"),
        ("agents.imitate", ["--clip", "1"], "argument --clip: must be in (0, 1), got 1.0"),
        ("recipes.dagger", ["--expert-share", "1.5"], "argument --expert-share: must be in [0, 1], got 1.5"),
        ("agents.sb3_ppo", ["--temperature", "0"], "argument --temperature: must be > 0, got 0.0"),
        ("recipes.temperature_sweep", ["--generations", "0"], "argument --generations: must be >= 1, got 0"),
    ],
)
def test_every_stage_refuses_bad_values_before_writing(
    tmp_path: Path, capsys, module: str, argv: list[str], message: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        importlib.import_module(module).main([*argv, "--out", str(out)])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_bad_value_exits_2_from_the_command_line(tmp_path: Path, script_env: dict[str, str]) -> None:
    out = tmp_path / "vae"
    argv = [sys.executable, "-m", "training.vae", "--z-size", "0", "--out", str(out)]
    proc = subprocess.run(argv, cwd=tmp_path, env=script_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith("error: argument --z-size: must be >= 1, got 0")
    assert "Traceback" not in proc.stderr and not out.exists()


def test_an_unwritable_out_is_one_line_naming_the_path(tmp_path: Path, script_env: dict[str, str]) -> None:
    """--out under a file (or on a full disk, or read-only): the OSError is one line with the path, exit 1."""
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" / "episodes"
    argv = [sys.executable, "-m", "training.collect", "--game", "takecover", "--episodes", "1", "--out", str(out)]
    proc = subprocess.run(argv, cwd=tmp_path, env=script_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"collect.py: error: {out}: Not a directory"]
    assert (tmp_path / "a_file").read_text() == "x"
