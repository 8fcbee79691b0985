"""The built wheel works outside the clone: its ``dreamgym`` command trains a controller in the shipped dream and
collects a game of the working folder's own, and it installs no generic top-level module (``training``, ...)."""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("dreamgym", "training", "agents", "recipes", "pyproject.toml", "setup.py", "README.md")


def build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of the sources (the build writes its scratch folders there, not into the clone)."""
    src = tmp / "src"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp / "dist"), str(src)], check=True)  # fmt: skip
    return next((tmp / "dist").glob("dreamgym-*.whl"))


def fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A new venv holding the wheel; the dependencies come from this interpreter's site-packages (a .pth line)."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    parents = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    (Path(purelib) / "dependencies.pth").write_text("\n".join(dict.fromkeys(parents)) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True)  # fmt: skip
    return venv


@pytest.mark.slow
def test_wheel_command_outside_the_clone(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"dreamgym", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    venv = fresh_venv(tmp_path, wheel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*argv: str) -> str:
        proc = subprocess.run(argv, cwd=elsewhere, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    probe = ("import importlib.util as u, dreamgym; print(dreamgym.__file__); "
             "print([n for n in ('training', 'agents', 'recipes', 'benchmarks') if u.find_spec(n)])")  # fmt: skip
    where, tops_importable = run(str(venv / "bin" / "python"), "-c", probe).splitlines()
    assert Path(where).is_relative_to(venv) and tops_importable == "[]"
    listing = run(str(venv / "bin" / "dreamgym"), "--help")
    assert all(f"  {name} " in listing for name in ("pipeline", "collect", "cmaes", "evaluate", "dagger", "play"))
    assert "usage: dreamgym evaluate" in run(str(venv / "bin" / "dreamgym"), "evaluate", "--help")
    run(str(venv / "bin" / "dreamgym"), "cmaes", "--env", "dreamgym/TakeCoverDream-v0", "--generations", "1",
        "--popsize", "2", "--episodes", "1", "--eval-every", "0", "--threads", "1", "--out", "controller")
    assert (elsewhere / "controller" / "mean").is_dir()
    shutil.copy2(REPO / "tests" / "tiny_game.py", elsewhere)  # a user's own game, in the working folder
    run(str(venv / "bin" / "dreamgym"), "collect", "--game", "tiny_game:TINY", "--episodes", "2", "--workers", "1",
        "--out", "episodes")
    assert len(list((elsewhere / "episodes").glob("episode_*.npz"))) == 2
