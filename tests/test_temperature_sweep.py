"""The temperature sweep: one command trains, scores in the dream and the real game, and writes the table/plot."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from recipes.temperature_sweep import SweepArgs, markdown, parse_taus, sweep


@pytest.mark.slow
def test_sweep_writes_table_plot_and_resumes(tiny_bundle: Callable[..., Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)  # ViZDoom writes _vizdoom.ini into the working folder
    args = SweepArgs(
        world_model=str(tiny_bundle("takecover")),
        taus="0.5,1.15",
        generations=1,
        popsize=2,
        episodes=1,
        dream_episodes=3,
        real_episodes=2,
        device="cpu",
        out=str(tmp_path / "sweep"),
    )
    rows = sweep(args)
    assert [r["tau"] for r in rows] == [0.5, 1.15]
    for r in rows:
        assert r["dream"]["episodes"] == 3 and r["real"]["episodes"] == 2
        assert len(r["real_lengths"]) == 2 and all(n > 0 for n in r["real_lengths"])
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "| 1.15 |" in table and "1092 ± 556" in table  # the paper's column sits beside ours
    assert (tmp_path / "sweep" / "sweep.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert saved["rows"][1]["real"] == rows[1]["real"]
    # a rerun finds every step done and gives the same table
    report = tmp_path / "sweep" / "tau0.5" / "mean" / "evaluation_real.json"
    stamp = report.stat().st_mtime_ns
    assert markdown(sweep(args), "takecover", args) == table
    assert report.stat().st_mtime_ns == stamp


def test_parse_taus_rejects_bad_temperatures() -> None:
    assert parse_taus("0.1, 1.15") == [0.1, 1.15]
    for bad in ("", "a", "0", "-1", "nan"):
        with pytest.raises(ValueError, match="--taus"):
            parse_taus(bad)
