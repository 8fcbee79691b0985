"""The README's Python examples run as written, against a tiny random world model instead of a trained one."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S)
# Only sizes change: a trained bundle path becomes the tiny bundle, long trainings become a few steps.
SHRINK = {
    'PPO("MlpPolicy", venv)': 'PPO("MlpPolicy", venv, n_steps=16, batch_size=64, n_epochs=1)',
    "learn(200_000)": "learn(256)",
    "range(100)": "range(2)",
}


def test_readme_has_the_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, tiny_bundle, tmp_path: Path, script_env: dict[str, str]) -> None:
    code = BLOCKS[index].replace("runs/takecover-quick/world_model", str(tiny_bundle("takecover")))
    for long, short in SHRINK.items():
        code = code.replace(long, short)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=script_env | {"OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, f"README example {index} failed:\n{code}\n{proc.stderr[-3000:]}"
