"""mypy runs clean on dreamgym/ with the ``[tool.mypy]`` settings of pyproject.toml (CI runs only pytest, so the
type check is a test). A cold run takes about a minute; later runs reuse ``.mypy_cache`` and take seconds."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO_ROOT


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-color-output"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, f"mypy found problems (exit {run.returncode}):\n{run.stdout}{run.stderr}"
