"""recipes.dagger: rounds of expert-labelled rollouts and refits, resumable, on a tiny bundle and short games."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dreamgym.checkpoint import load_json
from dreamgym.controller import Controller
from dreamgym.data import list_episodes, load_arrays, load_episode
from dreamgym.locks import FolderBusyError, folder_lock
from recipes.dagger import DaggerArgs, DaggerRun, main, share_of


def tiny_args(bundle: Path, out: Path, **overrides) -> DaggerArgs:
    args = DaggerArgs(game="carracing", out=str(out), world_model=str(bundle), demos=2, rounds=1,
                      episodes_per_round=2, eval_episodes=2, max_steps=40, expert_share=0.5, threads=1)  # fmt: skip
    return dataclasses.replace(args, **overrides)


@pytest.mark.slow
def test_rounds_play_label_refit_and_resume(tiny_bundle: Callable[..., Path], tmp_path: Path) -> None:
    bundle, out = tiny_bundle("carracing"), tmp_path / "run"
    state = DaggerRun(tiny_args(bundle, out, expert='{"gas": 0.2}')).run()
    assert [r["round"] for r in state["rounds"]] == [0, 1]
    assert [r["episodes_total"] for r in state["rounds"]] == [2, 4]
    episodes = [load_episode(p) for p in list_episodes(out / "episodes")]
    assert len(episodes) == 4 and all(e.expert_actions is not None for e in episodes)
    assert all(np.array_equal(e.actions.shape, e.expert_actions.shape) for e in episodes)
    gas = np.concatenate([e.expert_actions[:, 1] for e in episodes])
    assert np.float32(0.2) in gas and set(np.unique(gas)) <= {0.0, np.float32(0.2)}  # --expert reached the workers
    by_expert = np.concatenate([np.all(e.actions == e.expert_actions, axis=1) for e in episodes[2:]])
    assert 0 < by_expert.mean() < 1  # round 1: the clone and the expert share the steps
    assert all("expert_actions" in load_arrays(p, ("mu",), optional=("expert_actions",))
               for p in list_episodes(out / "latents"))  # fmt: skip
    first, second = (Controller.load(out / f"round_0{k}") for k in (0, 1))
    assert not np.allclose(first.params, second.params)  # refit on the demos and the labelled rollouts
    for r in state["rounds"]:
        report = load_json(out / f"round_0{r['round']}" / "evaluation_selection.json")
        assert report["mean"] == r["eval_mean"] and report["seeds"] == [3_000_000, 3_000_001]
        assert all(n <= 40 for n in report["lengths"])
    best = state["rounds"][state["best"]]
    assert best["eval_mean"] == max(r["eval_mean"] for r in state["rounds"])
    np.testing.assert_array_equal(Controller.load(out / "best").params,
                                  Controller.load(out / f"round_0{best['round']}").params)  # fmt: skip
    assert (out / "dagger.png").stat().st_size > 0 and any((out / "tb").iterdir())

    stamp = (out / "round_01" / "controller.safetensors").stat().st_mtime_ns
    DaggerRun(tiny_args(bundle, out, expert='{"gas": 0.2}')).run()  # a finished run: nothing is redone
    assert (out / "round_01" / "controller.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="other settings .*ridge"):
        DaggerRun(tiny_args(bundle, out, expert='{"gas": 0.2}', ridge=1.0))
    main(["--game", "carracing", "--out", str(out), "--world-model", str(bundle), "--demos", "2", "--rounds", "2",
          "--episodes-per-round", "2", "--eval-episodes", "2", "--max-steps", "40", "--expert-share", "0.5",
          "--threads", "1", "--expert", '{"gas": 0.2}'])  # fmt: skip
    assert len(list_episodes(out / "episodes")) == 6
    assert [r["round"] for r in load_json(out / "dagger.json")["rounds"]] == [0, 1, 2]


def test_settings_that_cannot_work_fail_before_any_episode(tmp_path: Path) -> None:
    for bad, message in (
        (DaggerArgs(game="takecover"), "has no scripted expert"),
        (DaggerArgs(demos=0), "needs --init"),
        (DaggerArgs(expert_share=1.5), "--expert-share must be in"),
        (DaggerArgs(init=str(tmp_path / "nowhere")), "no controller.json"),
        (DaggerArgs(player="worst"), "--player must be latest or best"),
        (DaggerArgs(expert='{"speed": 1}'), "TrackExpert has no setting 'speed'"),
    ):
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            DaggerRun(dataclasses.replace(bad, out=str(tmp_path / "bad")))
    assert not (tmp_path / "bad").exists()


def test_expert_share_decays_per_round() -> None:
    args = DaggerArgs(expert_share=0.4, share_decay=0.5)
    assert [share_of(args, k) for k in range(4)] == [0.0, 0.4, 0.2, 0.1]


def test_player_is_the_previous_round_or_the_best_so_far(tmp_path: Path) -> None:
    scores = [{"round": 0, "eval_mean": 5.0}, {"round": 1, "eval_mean": 3.0}, {"round": 2, "eval_mean": 7.0}]
    for player, expected in (("latest", [0, 1, 2]), ("best", [0, 0, 2])):
        run = DaggerRun(DaggerArgs(out=str(tmp_path / player), player=player))
        run.state["rounds"] = scores
        assert [run.player(k) for k in (1, 2, 3)] == expected


def test_a_second_run_on_a_locked_out_fails_before_any_round(tiny_bundle: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = DaggerRun(tiny_args(tiny_bundle("carracing"), out))
    with folder_lock(out), pytest.raises(FolderBusyError, match=f"in use by PID {os.getpid()} "):
        run.run()
    assert not (out / "episodes").exists()
